"""The chain loop: every regime on every setting, determinism, and resume after an interruption."""

import json
import tempfile

import numpy as np
import pytest

from helpers import tiny_language_model, tiny_vae
from model_collapse.chain import run_chain
from model_collapse.errors import RunDirectoryError
from model_collapse.regimes import REGIMES, parse_regime
from model_collapse.rundir import ChainStore
from model_collapse.settings import SETTINGS

SMALL = {
    "linear-regression": {"dim": 2, "samples": 8},
    "gaussian": {"dim": 2, "samples": 8},
    "kde": {"samples": 8, "test_samples": 20},
    "discrete": {"samples": 8, "outcomes": 5},
    "vae": tiny_vae(samples=8),
    "language-model": tiny_language_model(tempfile.mkdtemp(prefix="tokenizers-"), sampling={"max_new_tokens": 16}),
}
REGIME_SPECS = [
    "replace",
    "accumulate",
    "accumulate-subsample",
    "replace-grown",
    "keep-real-fraction:0.25",
    "fresh-real:0.5",
    "mix:0.5",
]


def small_setting(name, seeds=(0, 1, 2)):
    cls = SETTINGS[name]
    return cls(cls.Config(**SMALL[name]), seeds[:1] if cls.one_seed_per_chain else seeds)


def expected_sizes(regime, iteration, T=8):
    """(train size, real fraction) each regime prescribes (docs/fidelity.md, "Regimes")."""
    if iteration == 1:
        return T, 1.0
    return {
        "replace": (T, 0.0),
        "accumulate": (iteration * T, 1 / iteration),
        "accumulate-subsample": (T, None),
        "replace-grown": (iteration * T, 0.0),
        "keep-real-fraction:0.25": (T, 0.25),
        "fresh-real:0.5": (T, 0.5),
        "mix:0.5": (T + 4, 8 / 12),
    }[regime]


def test_every_regime_is_covered():
    assert {parse_regime(s).name for s in REGIME_SPECS} == set(REGIMES)


@pytest.mark.parametrize("setting_name", list(SETTINGS))
@pytest.mark.parametrize("regime", REGIME_SPECS)
def test_every_regime_runs_on_every_setting(setting_name, regime):
    setting = small_setting(setting_name)
    records = run_chain(setting, parse_regime(regime), 4)
    assert [r.iteration for r in records] == [1, 2, 3, 4]
    for record in records:
        size, fraction = expected_sizes(regime, record.iteration)
        assert record.train_size == size
        if fraction is not None:
            np.testing.assert_allclose(record.real_fraction, fraction)
        assert set(record.metrics) == set(setting.metrics)
        for values in record.metrics.values():
            assert values.shape == (setting.seed_count,)
            assert not np.isnan(values).any()


@pytest.mark.parametrize("setting_name", list(SETTINGS))
def test_iteration_one_is_identical_in_every_regime_and_later_ones_differ(setting_name):
    runs = {
        spec: run_chain(small_setting(setting_name), parse_regime(spec), 3)
        for spec in ["replace", "accumulate", "mix:0.5"]
    }
    first = [run[0].metrics for run in runs.values()]
    for other in first[1:]:
        for name in other:
            np.testing.assert_array_equal(other[name], first[0][name])
    metric = next(iter(SETTINGS[setting_name].metrics))
    assert not np.array_equal(runs["replace"][2].metrics[metric], runs["accumulate"][2].metrics[metric])


def test_chains_are_deterministic_and_seeds_differ():
    a = run_chain(small_setting("gaussian"), parse_regime("accumulate-subsample"), 5)
    b = run_chain(small_setting("gaussian"), parse_regime("accumulate-subsample"), 5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.metrics["mean_sq_error"], y.metrics["mean_sq_error"])
        np.testing.assert_array_equal(x.real_fraction, y.real_fraction)
    assert len(set(a[-1].metrics["mean_sq_error"])) == 3


def test_replace_collapses_the_gaussian_and_accumulate_does_not():
    replace = run_chain(small_setting("gaussian", range(200)), parse_regime("replace"), 60)
    accumulate = run_chain(small_setting("gaussian", range(200)), parse_regime("accumulate"), 60)
    assert replace[-1].metrics["trace_ratio"].mean() < 0.05
    assert accumulate[-1].metrics["trace_ratio"].mean() > 0.6


def metrics_of(records):
    return [{k: v.tolist() for k, v in r.metrics.items()} | {"real": r.real_fraction.tolist()} for r in records]


@pytest.mark.parametrize("regime", REGIME_SPECS)
def test_resumed_chain_equals_uninterrupted_chain(tmp_path, regime):
    description = {"test": regime}
    straight = run_chain(small_setting("linear-regression"), parse_regime(regime), 6)

    store = ChainStore(tmp_path / "chain", description)
    run_chain(small_setting("linear-regression"), parse_regime(regime), 3, store)
    assert store.completed() == 3
    # a crash in the middle of iteration 4 leaves a partial directory behind; resume must ignore it
    (tmp_path / "chain" / "iter_0004.partial").mkdir()
    (tmp_path / "chain" / "iter_0004.partial" / "metrics.json").write_text("{garbage")
    resumed = run_chain(
        small_setting("linear-regression"), parse_regime(regime), 6, ChainStore(tmp_path / "chain", description)
    )
    assert metrics_of(resumed) == metrics_of(straight)
    assert not (tmp_path / "chain" / "iter_0004.partial").exists()


def test_resume_keeps_the_interrupted_fits_scratch_and_nothing_older(tmp_path):
    description = {"test": "scratch"}
    store = ChainStore(tmp_path / "chain", description)
    run_chain(small_setting("gaussian"), parse_regime("replace"), 2, store)
    for iteration in (2, 3, 4):  # 2: stale, left by a crash after its commit; 3: the fit interrupted; 4: stale
        (store.scratch_directory(iteration)).mkdir()
        (store.scratch_directory(iteration) / "state").write_text(str(iteration))
    assert ChainStore(tmp_path / "chain", description).open() == 2
    assert sorted(p.name for p in (tmp_path / "chain").glob("*.scratch")) == ["iter_0003.scratch"]
    seen = []
    setting = small_setting("gaussian")
    fit = setting.fit
    sample = setting.sample
    setting.fit = lambda parts, rng, scratch=None: (seen.append(("fit", scratch)), fit(parts, rng, scratch))[1]
    setting.sample = lambda model, size, rng, scratch=None: (
        seen.append(("sample", scratch)),
        sample(model, size, rng, scratch),
    )[1]
    run_chain(setting, parse_regime("replace"), 3, ChainStore(tmp_path / "chain", description))
    assert seen == [("sample", store.scratch_directory(3)), ("fit", store.scratch_directory(3))]
    assert not store.scratch_directory(3).exists()  # removed once iteration 3 is committed


def test_only_the_last_checkpoint_is_kept_unless_asked(tmp_path):
    for keep, expected in [(False, {5}), (True, {1, 2, 3, 4, 5})]:
        store = ChainStore(tmp_path / str(keep), {})
        run_chain(small_setting("gaussian"), parse_regime("accumulate"), 5, store, keep_models=keep)
        kept = {int(p.parent.name[5:]) for p in (tmp_path / str(keep)).glob("iter_*/model")}
        assert kept == expected
        # accumulate needs its synthetic history to resume
        assert {int(p.parent.name[5:]) for p in (tmp_path / str(keep)).glob("iter_*/synthetic")} == {2, 3, 4, 5}


def test_a_store_refuses_another_chains_directory_and_damaged_records(tmp_path):
    store = ChainStore(tmp_path, {"regime": "replace"})
    run_chain(small_setting("gaussian"), parse_regime("replace"), 2, store)
    with pytest.raises(RunDirectoryError, match="describes another chain"):
        run_chain(small_setting("gaussian"), parse_regime("replace"), 3, ChainStore(tmp_path, {"regime": "accumulate"}))
    (tmp_path / "iter_0002" / "metrics.json").write_text("{not json")
    with pytest.raises(RunDirectoryError, match="corrupted file .*iter_0002.*metrics.json"):
        run_chain(small_setting("gaussian"), parse_regime("replace"), 3, ChainStore(tmp_path, {"regime": "replace"}))
    (tmp_path / "progress.json").write_text(json.dumps({"completed": "two"}))
    with pytest.raises(RunDirectoryError, match="progress.json"):
        ChainStore(tmp_path, {"regime": "replace"}).completed()


@pytest.mark.parametrize("setting_name", ["linear-regression", "gaussian"])
def test_accumulate_cost_does_not_grow_with_the_pool(setting_name):
    """Each part is summarised once, and each iteration adds one summary to the previous total."""
    setting = small_setting(setting_name)
    total = setting._total
    calls = {"summarise": 0, "combine": 0}

    def counted(name, function):
        def wrapper(*args):
            calls[name] += 1
            return function(*args)

        return wrapper

    total.summarise = counted("summarise", total.summarise)
    total.combine = counted("combine", total.combine)
    run_chain(setting, parse_regime("accumulate"), 60)
    assert calls == {"summarise": 60, "combine": 59}
