"""What each regime hands the fit, iteration by iteration."""

import re

import numpy as np
import pytest

from model_collapse.regimes import REAL, REGIMES, fresh_real_source, parse_regime, synthetic_source

T = 10
SEEDS = 3


def sizes_for(regime, iteration, real_size=T):
    """The sizes of the pool a chain holds at ``iteration`` for ``regime``."""
    pool = {REAL: real_size}
    first = 2 if regime.keeps_history else iteration
    for n in range(max(first, 2), iteration + 1):
        pool[synthetic_source(n)] = regime.synthetic_size(n, real_size)
    if iteration >= 2 and regime.fresh_real_size(iteration, real_size):
        pool[fresh_real_source(iteration)] = regime.fresh_real_size(iteration, real_size)
    return pool


def plan(regime, iteration, seed=0):
    return regime.plan(sizes_for(regime, iteration), iteration, SEEDS, np.random.default_rng(seed))


# every regime, with parameters where it needs them
EXAMPLES = {name: "real-synthetic:4+6" if name == "real-synthetic" else name for name in REGIMES}


@pytest.mark.parametrize("name", list(REGIMES))
def test_iteration_one_is_the_real_data_in_every_regime(name):
    result = plan(parse_regime(EXAMPLES[name]), 1)
    assert len(result.selections) == 1
    assert result.selections[0].sources == (REAL,)
    assert result.selections[0].rows is None
    assert result.train_size == T
    np.testing.assert_array_equal(result.real_fraction, np.ones(SEEDS))


@pytest.mark.parametrize("iteration", [2, 3, 7])
def test_replace_uses_only_the_newest_synthetic_batch(iteration):
    regime = parse_regime("replace")
    result = plan(regime, iteration)
    assert [s.sources for s in result.selections] == [(synthetic_source(iteration),)]
    assert result.train_size == T
    np.testing.assert_array_equal(result.real_fraction, 0.0)
    assert not regime.keeps_history


@pytest.mark.parametrize("iteration", [2, 3, 7])
def test_accumulate_uses_real_plus_every_synthetic_batch(iteration):
    regime = parse_regime("accumulate")
    result = plan(regime, iteration)
    expected = (REAL, *(synthetic_source(n) for n in range(2, iteration + 1)))
    assert [s.sources for s in result.selections] == [expected]
    assert result.selections[0].rows is None
    assert result.train_size == iteration * T
    np.testing.assert_allclose(result.real_fraction, 1 / iteration)
    assert regime.keeps_history


@pytest.mark.parametrize("iteration", [2, 5])
def test_accumulate_subsample_draws_T_distinct_rows_of_the_pool_per_seed(iteration):
    regime = parse_regime("accumulate-subsample")
    result = plan(regime, iteration)
    (selection,) = result.selections
    assert selection.sources == (REAL, *(synthetic_source(n) for n in range(2, iteration + 1)))
    rows = selection.rows
    assert rows.shape == (SEEDS, T)
    assert rows.min() >= 0 and rows.max() < iteration * T
    for seed_rows in rows:
        assert len(set(seed_rows)) == T
    assert not all(np.array_equal(rows[0], r) for r in rows[1:]), "seeds must subsample independently"
    np.testing.assert_allclose(result.real_fraction, (rows < T).mean(axis=1))
    assert result.train_size == T


def test_accumulate_subsample_is_uniform_over_the_pool():
    regime = parse_regime("accumulate-subsample")
    pool = sizes_for(regime, 4)
    counts = np.zeros(4 * T)
    rng = np.random.default_rng(0)
    for _ in range(400):
        rows = regime.plan(pool, 4, SEEDS, rng).selections[0].rows
        np.add.at(counts, rows.ravel(), 1)
    expected = 400 * SEEDS * T / (4 * T)  # 300 draws per row on average
    assert np.abs(counts - expected).max() < 5 * np.sqrt(expected)
    real_fraction = regime.plan(pool, 4, 2000, rng).real_fraction
    assert abs(real_fraction.mean() - 0.25) < 0.01


@pytest.mark.parametrize("iteration", [2, 4])
def test_replace_grown_draws_n_times_T_synthetic_samples(iteration):
    regime = parse_regime("replace-grown")
    assert regime.synthetic_size(iteration, T) == iteration * T
    result = plan(regime, iteration)
    assert [s.sources for s in result.selections] == [(synthetic_source(iteration),)]
    assert result.train_size == iteration * T
    np.testing.assert_array_equal(result.real_fraction, 0.0)


@pytest.mark.parametrize("fraction,kept", [(0.1, 1), (0.5, 5), (0.0, 0), (1.0, 10)])
def test_keep_real_fraction_keeps_a_fresh_subset_of_the_original_real_data(fraction, kept):
    regime = parse_regime(f"keep-real-fraction:{fraction}")
    assert regime.synthetic_size(3, T) == T - kept
    result = plan(regime, 3)
    assert result.train_size == T
    np.testing.assert_allclose(result.real_fraction, kept / T)
    real = [s for s in result.selections if s.sources == (REAL,)]
    synthetic_parts = [s for s in result.selections if s.sources == (synthetic_source(3),)]
    assert len(real) == (1 if kept else 0)
    assert len(synthetic_parts) == (1 if kept < T else 0)
    if kept:
        rows = real[0].rows
        assert rows.shape == (SEEDS, kept)
        assert all(len(set(r)) == kept for r in rows)
        assert rows.max() < T
        # a new subset every iteration
        assert not np.array_equal(rows, plan(regime, 3, seed=1).selections[0].rows) or kept == T


def test_keep_real_fraction_default_is_shumailovs_ten_percent():
    assert parse_regime("keep-real-fraction").fraction == 0.1
    assert parse_regime("keep-real-fraction").label == "keep-real-fraction:0.1"


@pytest.mark.parametrize("fraction,fresh", [(0.5, 5), (0.2, 2), (1.0, 10)])
def test_fresh_real_trains_on_new_real_samples_plus_synthetic(fraction, fresh):
    regime = parse_regime(f"fresh-real:{fraction}")
    assert regime.fresh_real_size(2, T) == fresh
    assert regime.synthetic_size(2, T) == T - fresh
    result = plan(regime, 2)
    sources = [s.sources for s in result.selections]
    assert (fresh_real_source(2),) in sources
    assert REAL not in {src for s in sources for src in s}, "fresh-real never reuses the original real data"
    assert result.train_size == T
    np.testing.assert_allclose(result.real_fraction, fresh / T)


@pytest.mark.parametrize("ratio,extra", [(0.5, 5), (1.0, 10), (2.0, 20), (0.0, 0)])
def test_mix_adds_lambda_T_synthetic_samples_to_all_real_data(ratio, extra):
    regime = parse_regime({"name": "mix", "ratio": ratio})
    assert regime.synthetic_size(5, T) == extra
    result = plan(regime, 5)
    assert result.selections[0].sources == (REAL,)
    assert result.train_size == T + extra
    np.testing.assert_allclose(result.real_fraction, T / (T + extra))


@pytest.mark.parametrize(
    "spec,message",
    [
        ("resample", "unknown regime"),
        ("replace:0.3", "takes no parameter, got 1"),
        ("keep-real-fraction:1.5", "must lie in [0, 1]"),
        ("mix:-1", "ratio must be >= 0"),
        ("mix:lots", "must be a number"),
        ({"name": "mix", "fraction": 0.2}, "unknown field"),
        ({"ratio": 0.2}, "needs a 'name'"),
        (3, "must be a name or a mapping"),
        ("real-synthetic", "takes 2 parameters (real, synthetic), got 0"),
        ("real-synthetic:256", "takes 2 parameters (real, synthetic), got 1"),
        ("real-synthetic:256+2500+1", "takes 2 parameters (real, synthetic), got 3"),
        ({"name": "real-synthetic", "real": 256}, "synthetic is missing"),
        ("real-synthetic:2.5+1", "real must be a whole number"),
        ("real-synthetic:1+-3", "synthetic must be a whole number"),
        ("real-synthetic:0+0", "nothing to train on"),
        ({"name": "mix", "ratio": [0.5, 1.0]}, "must be one number, got a list"),
    ],
)
def test_bad_regime_specs_are_refused_with_a_message(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_regime(spec)


def test_labels_round_trip():
    for spec in [
        "replace",
        "accumulate",
        "accumulate-subsample",
        "replace-grown",
        "keep-real-fraction:0.2",
        "fresh-real:0.25",
        "mix:1.5",
        "real-synthetic:256+2500",
        "real-synthetic:0+80000",
    ]:
        regime = parse_regime(spec)
        assert regime.label == spec
        assert parse_regime(regime.label) == regime


def test_regime_labels_record_parameters_exactly():
    """The label is what config.yaml records and resume reads back: it must give the same number."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None)
    @given(
        st.sampled_from(["mix", "keep-real-fraction", "fresh-real"]),
        st.floats(min_value=0, max_value=1e12, allow_nan=False),
    )
    def check(name, value):
        if name != "mix":
            value = min(value, 1.0)
        regime = parse_regime(f"{name}:{value!r}")
        (parameter,) = regime.parameters()
        assert getattr(regime, parameter) == value
        assert getattr(parse_regime(regime.label), parameter) == value
        assert parse_regime(regime.label).label == regime.label

    check()
    assert parse_regime("mix:10000.25").label == "mix:10000.25"  # :g would have written mix:10000.2
    assert (
        parse_regime("mix:1").label == "mix:1"
        and parse_regime("keep-real-fraction:0.1").label == "keep-real-fraction:0.1"
    )
    with pytest.raises(ValueError, match="finite"):
        parse_regime("mix:inf")


@pytest.mark.parametrize("iteration", [2, 4])
def test_real_synthetic_trains_on_the_first_real_rows_and_a_fresh_batch(iteration):
    regime = parse_regime("real-synthetic:4+6")
    assert (regime.real, regime.synthetic) == (4, 6)
    assert regime.synthetic_size(iteration, T) == 6 and not regime.keeps_history
    result = plan(regime, iteration, seed=iteration)
    real, synthetic = result.selections
    assert real.sources == (REAL,)
    np.testing.assert_array_equal(real.rows, np.tile(np.arange(4), (SEEDS, 1)))  # the same first rows for every seed
    assert synthetic == type(synthetic)((synthetic_source(iteration),))
    assert result.train_size == 10
    np.testing.assert_allclose(result.real_fraction, 0.4)


def test_real_synthetic_takes_the_whole_real_set_or_none_of_it():
    whole = plan(parse_regime(f"real-synthetic:{T}+3"), 2)
    assert whole.selections[0].rows is None and whole.train_size == T + 3
    only_synthetic = plan(parse_regime("real-synthetic:0+5"), 2)
    assert [s.sources for s in only_synthetic.selections] == [(synthetic_source(2),)]
    np.testing.assert_array_equal(only_synthetic.real_fraction, 0.0)
    only_real = plan(parse_regime("real-synthetic:3+0"), 2)
    assert only_real.train_size == 3 and parse_regime("real-synthetic:3+0").synthetic_size(2, T) == 0
    np.testing.assert_array_equal(only_real.real_fraction, 1.0)


def test_real_synthetic_refuses_more_real_rows_than_there_are_at_its_first_plan():
    from model_collapse.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        plan(parse_regime(f"real-synthetic:{T + 1}+5"), 1)
    assert str(refused.value) == (
        f"regime real-synthetic:{T + 1}+5 trains on the first {T + 1} real samples, but the real training set holds {T}"
    )


def test_a_mapping_with_lists_is_the_grid_of_their_values():
    from model_collapse.regimes import parse_regimes

    grid = parse_regimes({"name": "real-synthetic", "real": [256, 2500], "synthetic": [0, 256, 80000]})
    assert [r.label for r in grid] == [
        f"real-synthetic:{real}+{synthetic}" for real in (256, 2500) for synthetic in (0, 256, 80000)
    ]
    assert [r.label for r in parse_regimes({"name": "mix", "ratio": [0.25, 1]})] == ["mix:0.25", "mix:1"]
    assert parse_regimes("accumulate") == [parse_regime("accumulate")]
    with_zeros = parse_regimes({"name": "real-synthetic", "real": [0, 5], "synthetic": [0, 7]})
    assert [r.label for r in with_zeros] == ["real-synthetic:0+7", "real-synthetic:5+0", "real-synthetic:5+7"]
    with pytest.raises(ValueError, match="ratio lists no value"):
        parse_regimes({"name": "mix", "ratio": []})


def test_a_regime_is_a_frozen_dataclass_whose_fields_are_its_parameters_checked_in_one_place():
    """A researcher's regime declares its parameters as fields; making it checks them, its label writes
    them, and the grammar reads them back."""
    import dataclasses

    from model_collapse.regimes import Regime, Selection, parameter

    @dataclasses.dataclass(frozen=True, repr=False)
    class HalfAndHalf(Regime):
        """share of the newest batch, capped at a count"""

        name = "half-and-half"
        share: float = parameter(0.5, high=1.0)
        cap: int = parameter(100, low=1, whole=True)

        def _plan(self, sizes, iteration, seed_count, rng):
            return [Selection((REAL,)), Selection((synthetic_source(iteration),))]

    regime = HalfAndHalf(0.25, 7)
    assert regime.label == "half-and-half:0.25+7" and regime.parameters() == ("share", "cap")
    assert HalfAndHalf.defaults() == {"share": 0.5, "cap": 100}
    assert regime == HalfAndHalf.from_values([0.25, 7]) and hash(regime) == hash(HalfAndHalf(0.25, 7.0))
    assert isinstance(HalfAndHalf(0.25, 7.0).cap, int)
    with pytest.raises(dataclasses.FrozenInstanceError):
        regime.share = 0.5  # type: ignore[misc]
    for values, problem in [
        ((1.5, 7), "share must lie in [0, 1], got 1.5"),
        ((0.5, 0), "cap must be a whole number of samples >= 1, got 0"),
        ((0.5, 2.5), "cap must be a whole number of samples >= 1, got 2.5"),
        ((float("nan"), 7), "share must be a finite number"),
        (("half", 7), "share must be a number, got 'half'"),
    ]:
        with pytest.raises(ValueError, match=re.escape(f"regime 'half-and-half': {problem}")):
            HalfAndHalf(*values)


def test_only_the_real_synthetic_grid_places_chains_in_the_value_of_synthetic_data_figure():
    assert parse_regime("real-synthetic:256+2500").grid_counts == (256, 2500)
    assert all(parse_regime(EXAMPLES[name]).grid_counts is None for name in REGIMES if name != "real-synthetic")
