"""The chain loop: every regime on every setting, determinism, and resume after an interruption."""

import json
from dataclasses import replace

import numpy as np
import pytest

from helpers import setting_params, tiny_settings
from model_collapse.chain import run_chain
from model_collapse.errors import RunDirectoryError, Terminated
from model_collapse.regimes import REGIMES, parse_regime
from model_collapse.rundir import ChainStore
from model_collapse.settings import SETTINGS
from model_collapse.testing import REGIMES as CHECKED_REGIMES

SMALL = tiny_settings()
REGIME_SPECS = list(CHECKED_REGIMES)  # every regime, with the parameters check_setting uses


def small_setting(name, seeds=(0, 1, 2)):
    cls = SETTINGS[name]
    return cls(cls.Config(**SMALL[name]), seeds[:1] if cls.capabilities.one_seed_per_chain else seeds)


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
        "real-synthetic:2+3": (5, 2 / 5),
    }[regime]


def test_every_regime_is_covered():
    assert {parse_regime(s).name for s in REGIME_SPECS} == set(REGIMES)


@pytest.mark.parametrize("setting_name", setting_params(SMALL))
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


@pytest.mark.parametrize("setting_name", setting_params(SMALL))
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


def costly(setting):
    """``setting`` resumed the way a costly one is: every iteration committed with its model and the
    synthetic batch the regime keeps, and read back on resume (instead of recomputed)."""
    cls = type(setting)
    setting.__class__ = type(f"Costly{cls.__name__}", (cls,), {"capabilities": replace(cls.capabilities, cheap=False)})
    return setting


@pytest.mark.parametrize("regime", REGIME_SPECS)
@pytest.mark.parametrize("how", ["recomputed", "recomputed, a commit per iteration", "restored"])
def test_resumed_chain_equals_uninterrupted_chain(tmp_path, regime, how):
    description = {"test": regime}
    straight = run_chain(small_setting("linear-regression"), parse_regime(regime), 6)

    def setting():
        return costly(small_setting("linear-regression")) if how == "restored" else small_setting("linear-regression")

    interval = 0.0 if how == "recomputed, a commit per iteration" else 1e9
    store = ChainStore(tmp_path / "chain", description)
    run_chain(setting(), parse_regime(regime), 3, store, commit_interval_s=interval)
    assert store.completed() == 3
    assert len(store.commits()) == (1 if interval and how != "restored" else 3)
    # a crash in the middle of iteration 4 leaves a partial directory behind; resume must ignore it
    (tmp_path / "chain" / "iter_0004.partial").mkdir()
    (tmp_path / "chain" / "iter_0004.partial" / "metrics.json").write_text("{garbage")
    resumed = run_chain(
        setting(), parse_regime(regime), 6, ChainStore(tmp_path / "chain", description), commit_interval_s=interval
    )
    assert metrics_of(resumed) == metrics_of(straight)
    assert metrics_of(ChainStore(tmp_path / "chain", description).records(3)) == metrics_of(straight)
    assert not (tmp_path / "chain" / "iter_0004.partial").exists()


def test_a_cheap_chain_commits_in_groups_and_keeps_no_data(tmp_path):
    store = ChainStore(tmp_path / "chain", {})
    run_chain(small_setting("gaussian"), parse_regime("accumulate"), 10, store, commit_interval_s=0.0)
    assert [(c.first, c.last) for c in store.commits()] == [(i, i) for i in range(1, 11)]
    store = ChainStore(tmp_path / "grouped", {})
    records = run_chain(small_setting("gaussian"), parse_regime("accumulate"), 200, store)
    commits = store.commits()
    assert commits[0].first == 1 and commits[-1].last == 200 and len(commits) < 10
    assert list((tmp_path / "grouped").glob("*/model")) == [commits[-1].path / "model"]  # checkpoints: last
    assert not list((tmp_path / "grouped").rglob("synthetic"))
    assert metrics_of(store.records(3)) == metrics_of(records)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, Terminated])
def test_a_stopped_cheap_chain_commits_what_it_computed(tmp_path, stop):
    straight = run_chain(small_setting("gaussian"), parse_regime("accumulate-subsample"), 12)

    def interrupt(record):
        if record.iteration == 7:
            raise stop()

    store = ChainStore(tmp_path / "chain", {})
    with pytest.raises(stop):
        run_chain(small_setting("gaussian"), parse_regime("accumulate-subsample"), 12, store, "last", interrupt, 1e9)
    assert store.completed() == 7 and len(store.commits()) == 1  # no commit was due: the stop made one
    resumed = run_chain(small_setting("gaussian"), parse_regime("accumulate-subsample"), 12, store)
    assert metrics_of(resumed) == metrics_of(straight)


def test_a_cheap_chain_refuses_to_resume_from_numbers_it_does_not_reproduce(tmp_path):
    store = ChainStore(tmp_path / "chain", {})
    run_chain(small_setting("gaussian"), parse_regime("accumulate"), 4, store)
    path = store.commits()[-1].path / "metrics.npz"
    with np.load(path) as archive:
        arrays = dict(archive)
    arrays["metric.trace_ratio"][-1, 1] += 1e-12  # what another machine's libraries might compute
    np.savez(path, **arrays)
    with pytest.raises(RunDirectoryError, match="recomputing its 4 committed iterations gives trace_ratio = .* seed 1"):
        run_chain(small_setting("gaussian"), parse_regime("accumulate"), 6, store)


def test_resume_keeps_the_interrupted_fits_scratch_and_nothing_older(tmp_path):
    description = {"test": "scratch"}
    store = ChainStore(tmp_path / "chain", description)
    run_chain(costly(small_setting("gaussian")), parse_regime("replace"), 2, store)
    for iteration in (2, 3, 4):  # 2: stale, left by a crash after its commit; 3: the fit interrupted; 4: stale
        (store.scratch_directory(iteration)).mkdir()
        (store.scratch_directory(iteration) / "state").write_text(str(iteration))
    reopened = ChainStore(tmp_path / "chain", description)
    reopened.prepare()
    assert reopened.completed() == 2
    assert sorted(p.name for p in (tmp_path / "chain").glob("*.scratch")) == ["iter_0003.scratch"]
    seen = []
    setting = costly(small_setting("gaussian"))
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


@pytest.mark.parametrize("kind", ["cheap", "costly"])
@pytest.mark.parametrize("checkpoints", ["none", "last", "all"])
def test_checkpoints_say_which_models_stay(tmp_path, kind, checkpoints):
    setting = small_setting("gaussian") if kind == "cheap" else costly(small_setting("gaussian"))
    run_chain(setting, parse_regime("accumulate"), 5, ChainStore(tmp_path, {}), checkpoints=checkpoints)
    kept = {c.last for c in ChainStore(tmp_path, {}).commits() if (c.path / "model").is_dir()}
    assert kept == {"none": set(), "last": {5}, "all": {1, 2, 3, 4, 5}}[checkpoints]
    synthetic = {int(p.parent.name[5:]) for p in tmp_path.glob("iter_*/synthetic")}
    # a costly chain resumes under accumulate from its synthetic history; a cheap one recomputes it
    assert synthetic == (set() if kind == "cheap" else {2, 3, 4, 5})


def test_an_unfinished_costly_chain_keeps_its_last_model_whatever_checkpoints_say(tmp_path):
    def interrupt(record):
        if record.iteration == 3:
            raise KeyboardInterrupt

    store = ChainStore(tmp_path, {})
    with pytest.raises(KeyboardInterrupt):
        run_chain(costly(small_setting("gaussian")), parse_regime("replace"), 5, store, "none", interrupt)
    assert {c.last for c in store.commits() if (c.path / "model").is_dir()} == {3}
    run_chain(costly(small_setting("gaussian")), parse_regime("replace"), 5, store, checkpoints="none")
    assert not list(tmp_path.glob("iter_*/model"))


def test_a_store_refuses_another_chains_directory_and_damaged_records(tmp_path):
    store = ChainStore(tmp_path, {"regime": "replace"})
    run_chain(small_setting("gaussian"), parse_regime("replace"), 2, store)
    with pytest.raises(RunDirectoryError, match="describes another chain"):
        run_chain(small_setting("gaussian"), parse_regime("replace"), 3, ChainStore(tmp_path, {"regime": "accumulate"}))
    (tmp_path / "iter_0001-0002" / "metrics.npz").write_text("{not npz")
    with pytest.raises(RunDirectoryError, match="corrupted file .*iter_0001-0002.*metrics.npz"):
        run_chain(small_setting("gaussian"), parse_regime("replace"), 3, ChainStore(tmp_path, {"regime": "replace"}))
    np.savez(tmp_path / "iter_0001-0002" / "metrics.npz", iteration=[1], train_size=[8], real_fraction=np.ones((1, 3)))
    with pytest.raises(RunDirectoryError, match="it records iterations \\[1\\], not 1-2"):
        ChainStore(tmp_path, {"regime": "replace"}).records(3)
    (tmp_path / "iter_0002-0003").mkdir()
    with pytest.raises(RunDirectoryError, match="iter_0002-0003 holds iterations that .*iter_0001-0002 holds too"):
        ChainStore(tmp_path, {"regime": "replace"}).completed()
    (tmp_path / "iter_0002-0003").rmdir()
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


def _with_warm_start(name):
    fields = SMALL[name]
    return {**fields, "training": {**fields.get("training", {}), "warm_start": True}}


@pytest.mark.parametrize(
    "setting_name", setting_params(["vae", "language-model", "conformer-diffusion", "fine-tuning"])
)
def test_a_warm_start_fit_continues_from_the_previous_model_and_leaves_it_as_it_was(setting_name):
    import torch

    cls = SETTINGS[setting_name]
    warm = cls(cls.Config(**_with_warm_start(setting_name)), [0])
    cold = small_setting(setting_name, seeds=(0,))
    assert warm.capabilities_of(warm.config).warm_start and not cold.capabilities_of(cold.config).warm_start
    first = warm.fit([warm.real_train], np.random.default_rng(0))
    first = getattr(first, "model", first)
    before = [p.detach().clone() for p in first.parameters()]
    continued = warm.fit([warm.real_train], np.random.default_rng(1), previous=first)
    afresh = warm.fit([warm.real_train], np.random.default_rng(1))
    continued, afresh = (getattr(fitted, "model", fitted) for fitted in (continued, afresh))
    assert all(torch.equal(p, q) for p, q in zip(before, first.parameters()))  # previous untouched
    assert continued is not first
    assert not all(torch.equal(p, q) for p, q in zip(continued.parameters(), afresh.parameters()))


@pytest.mark.parametrize("setting_name", setting_params(["vae", "fine-tuning"]))
def test_warm_started_chains_resume_exactly(setting_name):
    from model_collapse.testing import check_setting

    report = check_setting(
        SETTINGS[setting_name], _with_warm_start(setting_name), regimes=["replace", "accumulate"], checks=["resume"]
    )
    assert report.passed == ["resume [replace]", "resume [accumulate]"]


def test_the_regimes_of_a_costly_run_share_one_first_iteration(tmp_path):
    """Iteration 1 fits the real data alone in every regime: a run computes it once per sweep point
    (and seed) and commits it into every regime's chain, which then reads as if each had fitted its own."""
    import pandas as pd

    import model_collapse
    from helpers import tiny_vae

    regimes = ["replace", "accumulate", "real-synthetic:4+8"]
    config = {"setting": tiny_vae(), "regimes": regimes, "iterations": 2, "seeds": 1, "workers": 1}
    together = model_collapse.run(config, out=tmp_path / "together")
    alone = [model_collapse.run({**config, "regimes": [r]}, out=tmp_path / f"alone-{i}") for i, r in enumerate(regimes)]

    def rows(run):
        table = run.table()
        return table.drop(columns=[c for c in table.columns if "seconds" in c]).reset_index(drop=True)

    pd.testing.assert_frame_equal(rows(together), pd.concat([rows(run) for run in alone], ignore_index=True))
    chains = sorted((tmp_path / "together" / "chains").glob("*/*/seed-0"))
    assert len(chains) == 3
    files = [sorted(p for p in (chain / "iter_0001").rglob("*") if p.is_file()) for chain in chains]
    assert files[0] and all(len(f) == len(files[0]) for f in files)
    for same in zip(*files):  # one commit, hard-linked into every chain (checkpoints: last keeps no model 1)
        assert len({(p.stat().st_ino, p.read_bytes()) for p in same}) == 1, same
    assert not (tmp_path / "together" / "first-iterations").exists()  # removed once the run is complete


def test_a_chain_adopts_a_first_iteration_only_whole_and_only_before_its_own(tmp_path):
    setting = small_setting("vae")
    description = {"setting": "vae", "seeds": [0]}
    source = ChainStore(tmp_path / "first", description)
    run_chain(setting, parse_regime("replace"), 1, source)
    chain = ChainStore(tmp_path / "chain", {**description, "regime": "accumulate"})
    chain.prepare()
    assert chain.adopt_first_iteration(source) and chain.completed() == 1
    model_files = [p for p in (source.directory / "iter_0001" / "model").rglob("*") if p.is_file()]
    assert model_files and all(
        (chain.directory / p.relative_to(source.directory)).samefile(p) for p in model_files
    )  # hard links, not copies
    assert not chain.adopt_first_iteration(source)  # it has one of its own now
    resumed = run_chain(small_setting("vae"), parse_regime("accumulate"), 2, chain)
    straight = run_chain(small_setting("vae"), parse_regime("accumulate"), 2)
    for got, expected in zip(resumed, straight):
        for name in expected.metrics:
            np.testing.assert_array_equal(got.metrics[name], expected.metrics[name])

    no_model = ChainStore(tmp_path / "no-model", description)
    run_chain(setting, parse_regime("replace"), 1, no_model, checkpoints="none")
    damaged = ChainStore(tmp_path / "damaged", description)
    run_chain(setting, parse_regime("replace"), 1, damaged)
    (damaged.directory / "progress.json").write_text("{")
    for unusable in (no_model, damaged, ChainStore(tmp_path / "absent", description)):
        other = ChainStore(tmp_path / f"adopting-{unusable.directory.name}", description)
        other.prepare()
        assert not other.adopt_first_iteration(unusable) and other.completed() == 0


def test_a_model_that_writes_nothing_usable_gets_no_preview_but_stops_a_chain_that_trains_on_it(tmp_path, caplog):
    from model_collapse.errors import NoSamples

    class WritesNothing(SETTINGS["vae"]):
        def sample(self, model, size, rng, scratch=None):
            raise NoSamples("the model wrote 0 usable samples")

    config = SETTINGS["vae"].Config(**SMALL["vae"])
    store = ChainStore(tmp_path / "evaluated", {"chain": "evaluated only"})
    (record,) = run_chain(WritesNothing(config, (0,)), parse_regime("replace"), 1, store)
    assert set(record.metrics) == set(WritesNothing.metrics) and store.completed() == 1
    assert store.preview(1) is None and "no preview of iteration 1: the model wrote 0 usable samples" in caplog.text
    with pytest.raises(NoSamples):
        run_chain(WritesNothing(config, (0,)), parse_regime("replace"), 2, ChainStore(tmp_path / "trained", {}))


def test_a_damaged_shared_first_iteration_is_computed_again(tmp_path):
    from helpers import tiny_vae
    from model_collapse.config import build_experiment
    from model_collapse.runner import shared_first_iterations

    config = {"setting": tiny_vae(), "regimes": ["replace", "accumulate"], "iterations": 2, "seeds": 1}
    specs = build_experiment(config).chains()
    (shared,) = shared_first_iterations(tmp_path, specs, [0, 0], 2)
    assert shared.sharing == (specs[0].regime, specs[1].regime)
    assert shared.relative_directory.parts[0] == "first-iterations"
    damaged = tmp_path / shared.relative_directory
    damaged.mkdir(parents=True)
    (damaged / "progress.json").write_text('{"completed": 1}')  # a record of a commit that is not there
    assert shared_first_iterations(tmp_path, specs, [0, 0], 2) == [shared] and not damaged.exists()
    assert shared_first_iterations(tmp_path, specs, [1, 0], 2) == []  # one chain left to start: nothing to share
    assert shared_first_iterations(tmp_path, specs, [0, 0], 1) == []  # one iteration: nothing after it to share


def _definition(regime, iteration, T):
    """(train size, real fraction) of ``regime`` at ``iteration`` >= 2 by its definition in the README's
    regime table, an empty part simply absent (written out here, not asked of the regime)."""
    p = next((getattr(regime, name) for name in regime.parameters()), None)
    if regime.name == "replace":
        return T, 0.0
    if regime.name == "accumulate":
        return iteration * T, 1 / iteration
    if regime.name == "accumulate-subsample":
        return T, None
    if regime.name == "replace-grown":
        return iteration * T, 0.0
    if regime.name in ("keep-real-fraction", "fresh-real"):
        return T, round(p * T) / T
    if regime.name == "mix":
        return T + round(p * T), T / (T + round(p * T))
    real, synthetic = regime.real, regime.synthetic
    return real + synthetic, real / (real + synthetic)


def test_every_regime_runs_over_its_whole_parameter_range_and_small_sizes():
    """The baselines at the ends of a sweep (mix:0, keep-real-fraction:1, fresh-real:0 and 1, a share that
    rounds a batch to no sample for the run's T) run, training on what the regime's definition gives."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    share = st.one_of(st.sampled_from([0.0, 1.0, 0.001, 0.5]), st.floats(0, 1, allow_nan=False))
    regimes = st.one_of(
        st.sampled_from(["replace", "accumulate", "accumulate-subsample", "replace-grown"]),
        st.builds(lambda p: f"keep-real-fraction:{p!r}", share),
        st.builds(lambda p: f"fresh-real:{p!r}", share),
        st.builds(lambda p: f"mix:{p!r}", st.one_of(share, st.floats(0, 5, allow_nan=False))),
        st.builds(lambda r, s: f"real-synthetic:{r}+{s}", st.integers(0, 1), st.integers(0, 4)).filter(
            lambda label: label != "real-synthetic:0+0"
        ),
    )

    @settings(max_examples=120, deadline=None)
    @given(regimes, st.integers(1, 5), st.integers(1, 4))
    def check(label, T, iterations):
        regime = parse_regime(label)
        cls = SETTINGS["discrete"]
        setting = cls(cls.Config(outcomes=3, samples=T), (0, 1))
        for record in run_chain(setting, regime, iterations):
            if record.iteration == 1:
                assert record.train_size == T
                continue
            size, fraction = _definition(regime, record.iteration, T)
            assert record.train_size == size, label
            if fraction is not None:
                np.testing.assert_allclose(record.real_fraction, fraction)
            assert all(np.isfinite(values).all() for values in record.metrics.values())

    check()


def test_a_chain_spec_is_a_plain_value_that_asks_no_registry(monkeypatch):
    """What a Ray or Slurm worker is shipped: its names, directory and metrics need no setting registry."""
    import pickle

    from helpers import tiny_vae
    from model_collapse.config import build_experiment
    from model_collapse.settings.registry import Registry

    config = {
        "setting": {**tiny_vae(), "curation": {"candidates": 2, "score": "confidence"}},
        "regimes": ["replace"],
        "iterations": 2,
        "seeds": 2,
    }
    specs = build_experiment(config).chains()

    def refuse(*args, **kwargs):
        raise AssertionError("a chain spec asked the setting registry")

    monkeypatch.setattr(Registry, "declared", refuse)
    monkeypatch.setattr(Registry, "resolve", refuse)
    for seed, spec in enumerate(specs):
        copy = pickle.loads(pickle.dumps(spec))
        assert copy == spec and copy.label == f"base / replace / seed {seed}"
        assert copy.relative_directory.parts[-1] == f"seed-{seed}"
        assert {"test_loss", "inception_fid", "acceptance_rate"} & set(copy.metrics) == {"test_loss", "acceptance_rate"}
