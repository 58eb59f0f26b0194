"""Curation between sampling and the regime (``model_collapse.curation``): what each ``keep`` keeps, that
one candidate is the plain loop bit for bit, that curated chains pass the conformance suite under every
regime (repeatable, resumed exactly, cheap and costly), the 1-D closed form against simulation, the
settings' oracle densities, and one line for every bad curation or user function."""

import io
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import invoke, tiny_settings
from model_collapse.chain import run_chain
from model_collapse.config import build_experiment
from model_collapse.curation import CURATION_METRICS, Curator
from model_collapse.errors import ConfigError
from model_collapse.randomness import chain_rng
from model_collapse.regimes import parse_regime
from model_collapse.settings import SETTINGS, Samples
from model_collapse.settings.gaussian import Gaussian, central_variance_factor
from model_collapse.settings.kde import KDEConfig, draw_real, true_log_density
from model_collapse.testing import CHECKS, REGIMES, check_setting

CHEAP = ("linear-regression", "gaussian", "kde", "discrete")
TINY = tiny_settings()


def setting_with(name, curation, seeds=(0, 1, 2), **fields):
    cls = SETTINGS[name]
    return cls(cls.Config(**{**TINY[name], **fields, "curation": curation}), seeds)


def setting_metrics(records, names):
    return [{name: r.metrics[name].tolist() for name in names} | {"size": r.train_size} for r in records]


@pytest.mark.parametrize("name", CHEAP)
@pytest.mark.parametrize(
    "curation",
    [
        {"score": "likelihood"},
        {"score": "oracle", "keep": "threshold", "threshold": -1.0, "flip": 0.2, "noise": 0.5},
        {"score": "likelihood", "keep": "weighted", "temperature": 0.5},
    ],
    ids=["top", "threshold", "weighted"],
)
def test_one_candidate_is_the_plain_loop_bit_for_bit(name, curation):
    plain_setting = setting_with(name, None)
    for spec in REGIMES:
        regime = parse_regime(spec)
        plain = run_chain(plain_setting, regime, 4)
        curated = run_chain(setting_with(name, {"candidates": 1, **curation}), regime, 4)
        names = list(plain_setting.metrics)
        assert setting_metrics(curated, names) == setting_metrics(plain, names), spec
        assert set(curated[-1].metrics) == set(names) | set(CURATION_METRICS)
        assert all(np.isnan(curated[0].metrics[m]).all() for m in CURATION_METRICS)  # iteration 1 sampled nothing
        assert np.isfinite(curated[-1].metrics["kept_score_mean"]).all()


@pytest.mark.parametrize("name", CHEAP)
@pytest.mark.parametrize(
    "curation",
    [
        {"candidates": 3, "score": "likelihood"},
        {"candidates": 2, "score": "oracle", "keep": "threshold", "threshold": -2.0, "flip": 0.1},
        {"candidates": 2, "score": "oracle", "keep": "weighted", "noise": 0.3},
    ],
    ids=["top", "threshold", "weighted"],
)
@pytest.mark.slow  # (seconds each: every regime, resumed)
def test_curated_chains_conform_under_every_regime(name, curation):
    """Repeatable, resumed exactly (recomputed from the first iteration), under every regime."""
    checks = [c for c in CHECKS if c not in ("repeatable_on_threads", "damaged_files")]
    report = check_setting(SETTINGS[name], {**TINY[name], "curation": curation}, checks=checks)
    assert not report.skipped, report
    assert sum("resume [" in check for check in report.passed) == len(REGIMES)


class CostlyGaussian(Gaussian):
    """The Gaussian resumed as a costly setting is: from its last model and the curated batches it kept."""

    capabilities = replace(Gaussian.capabilities, cheap=False)


def test_a_costly_curated_chain_keeps_the_curated_batches_and_resumes_from_them():
    report = check_setting(
        CostlyGaussian,
        {"dim": 2, "samples": 8, "curation": {"candidates": 4, "score": "likelihood", "keep": "weighted"}},
        checks=["repeatable", "resume"],
    )
    assert sum("resume [" in check for check in report.passed) == len(REGIMES), report


def curator(curation, seeds=(0, 1)):
    setting = setting_with("gaussian", {"score": "oracle", **curation}, seeds=seeds, dim=1, samples=10)
    return setting, Curator.of(setting)


def test_top_keeps_the_best_candidates_in_the_order_drawn():
    _, chooser = curator({"candidates": 3})
    scores = np.array([[5.0, 1, 9, 2, 9, 0], [0, 0, 0, 3, 2, 1]])
    rows, accepted = chooser._choose(scores, 2, np.random.default_rng(0))
    assert rows.tolist() == [[2, 4], [3, 4]] and accepted is None
    rows, _ = chooser._choose(np.zeros((2, 6)), 2, np.random.default_rng(0))
    assert rows.tolist() == [[0, 1], [0, 1]]  # ties: the earlier drawn


def test_threshold_draws_among_the_accepted_and_fills_up_with_the_best_of_the_rest():
    _, chooser = curator({"candidates": 3, "keep": "threshold", "threshold": 1.0})
    scores = np.array([[2.0, 0, 3, -1, 5, 0.5], [0.9, 0.8, 0.1, 0.2, 0.95, 1.0]])
    kept = set()
    for seed in range(40):
        rows, accepted = chooser._choose(scores, 2, np.random.default_rng(seed))
        assert set(rows[0]) <= {0, 2, 4}  # three accepted: two of them, uniformly
        kept.add(tuple(rows[0]))
        assert rows[1].tolist() == [4, 5]  # one accepted (1.0), then the best rejected (0.95)
        assert accepted.sum(axis=1).tolist() == [3, 1]
    assert kept == {(0, 2), (0, 4), (2, 4)}


def test_flip_turns_verdicts_over_at_its_rate():
    _, chooser = curator({"candidates": 2, "keep": "threshold", "threshold": 0.0, "flip": 0.25})
    verdicts = chooser._verdicts(np.ones((2, 40000)), np.random.default_rng(1))
    assert abs(verdicts.mean() - 0.75) < 0.01


def test_weighted_keeps_one_of_each_samples_m_candidates_with_plackett_luce_probabilities():
    _, chooser = curator({"candidates": 2, "keep": "weighted"})
    scores = np.log(np.array([[1.0, 1.0, 3.0, 1.0]]))  # sample 0: candidates 0, 2; sample 1: candidates 1, 3
    counts = np.zeros(4)
    for seed in range(4000):
        rows, _ = chooser._choose(scores, 2, np.random.default_rng(seed))
        assert rows[0, 0] in (0, 2) and rows[0, 1] in (1, 3)
        counts[rows[0]] += 1
    assert abs(counts[2] / 4000 - 0.75) < 0.03 and abs(counts[1] / 4000 - 0.5) < 0.03


def test_noise_blurs_the_choice_and_is_recorded_without_it():
    clean_setting, clean = curator({"candidates": 8})
    _, noisy = curator({"candidates": 8, "noise": 3.0})
    model = clean_setting.fit([clean_setting.real_train], chain_rng((0, 1), 1, "fit"))
    means = []
    for chooser in (clean, noisy):
        kept, record = chooser.draw(model, 10, chain_rng((0, 1), 2, "sample"), chain_rng((0, 1), 2, "curation"))
        metrics = record()
        true = clean_setting.score("oracle", model, kept)
        assert np.allclose(metrics["kept_score_mean"], true.mean(axis=1))  # the true scores, not the noisy ones
        assert metrics["acceptance_rate"].tolist() == [1 / 8, 1 / 8]
        means.append(metrics["kept_score_mean"])
    assert (means[0] > means[1]).all()


def test_sampling_bias_collapses_the_gaussian_faster_as_the_closed_form_says():
    """Replace, keeping the likeliest T of m T: E tr ratio = s (s E[v])^(n-1), within Monte-Carlo error."""
    from model_collapse import theory

    iterations, seeds = 6, tuple(range(3000))
    for candidates in (1, 4):
        config = Gaussian.Config(samples=20, curation={"candidates": candidates, "score": "likelihood"})
        records = run_chain(Gaussian(config, seeds), parse_regime("replace"), iterations)
        curves = {c.metric: c.values for c in theory.curves(config, "replace", iterations)}
        for metric in ("trace_ratio", "mean_sq_error"):
            values = np.stack([r.metrics[metric] for r in records])
            error = values.std(axis=1) / np.sqrt(len(seeds))
            assert (np.abs(values.mean(axis=1) - curves[metric]) < 4 * error).all(), (candidates, metric)
        if candidates == 1:
            assert "det_ratio" in curves  # one candidate: the plain loop's closed forms, all of them
        else:
            assert set(curves) == {"trace_ratio", "mean_sq_error"}
    assert central_variance_factor(1, 20, 4) < 0.05  # the central quarter of a normal keeps about 4% of its variance


def test_curation_without_a_known_closed_form_has_no_curve():
    from model_collapse import theory

    for curation in (
        {"score": "oracle"},
        {"score": "likelihood", "noise": 0.1},
        {"score": "likelihood", "keep": "weighted"},
    ):
        config = Gaussian.Config(curation={"candidates": 2, **curation})
        assert theory.curves(config, "replace", 5) == []
    linear = SETTINGS["linear-regression"].Config(curation={"candidates": 2, "score": "oracle"})
    assert theory.curves(linear, "replace", 5) == []  # the plain loop's closed forms do not hold
    assert theory.curves(linear.model_copy(update={"curation": None}), "replace", 5)


@pytest.mark.parametrize("dataset", ["moons", "circles", "blobs", "swiss-roll"])
def test_kde_oracle_densities_integrate_to_one_and_favour_real_data(dataset):
    # (the swiss roll's spiral is 90 long: a wider noise needs fewer quadrature points, keeping this quick)
    config = KDEConfig(dataset=dataset, noise=0.5 if dataset == "swiss-roll" else 0.1)
    centres = np.array([[0.0, 0.0], [5, 5], [-5, 3]]) if dataset == "blobs" else None
    box = {"moons": ([-2, -2], [3, 2]), "circles": ([-2, -2], [2, 2]), "blobs": ([-11, -10], [11, 12])}
    low, high = (np.array(b, dtype=float) for b in box.get(dataset, ([-17, -3, -17], [17, 24, 17])))
    count = 50_000 if dataset == "swiss-roll" else 200_000
    points = np.random.default_rng(0).uniform(low, high, size=(count, len(low)))
    integral = np.exp(true_log_density(config, points, centres)).mean() * np.prod(high - low)
    assert abs(integral - 1) < 0.04
    real = true_log_density(config, draw_real(config, 2000, 1, centres), centres).mean()
    assert real > np.log(1 / np.prod(high - low)) + 1  # real data are far likelier than uniform in the box


def test_the_linear_regression_oracle_keeps_replace_from_collapsing():
    plain = run_chain(setting_with("linear-regression", None, samples=20, dim=4), parse_regime("replace"), 10)
    verified = run_chain(
        setting_with("linear-regression", {"candidates": 4, "score": "oracle"}, samples=20, dim=4),
        parse_regime("replace"),
        10,
    )
    assert verified[-1].metrics["test_error"].mean() < plain[-1].metrics["test_error"].mean() / 3


def test_a_users_reward_ranks_the_candidates():
    setting = setting_with(
        "gaussian",
        {"candidates": 4, "reward": "curation_functions:closeness", "options": {"target": 3.0}},
        dim=1,
        samples=50,
    )
    records = run_chain(setting, parse_regime("replace"), 6)
    means = [float(r.metrics["kept_score_mean"].mean()) for r in records[1:]]
    assert means[-1] > means[0]  # the reward of what is kept rises as the chain moves toward 3


def config_of(curation, **setting):
    return {
        "setting": {"name": "gaussian", "dim": 1, "samples": 10, "curation": curation, **setting},
        "regimes": ["replace"],
        "iterations": 3,
        "seeds": 2,
    }


@pytest.mark.parametrize(
    ("curation", "message"),
    [
        ({"candidates": 2}, "set exactly one of score, reward and verifier (found none of them)"),
        ({"score": "likelihood", "reward": "a:b"}, "found score, reward"),
        ({"score": "energy"}, "the gaussian setting has no score 'energy'; it scores likelihood, oracle"),
        ({"score": "pkg.mod:fn"}, "a function goes in reward or verifier"),
        ({"reward": "no colon"}, "expected a function as package.module:function or a registered name"),
        ({"score": "oracle", "keep": "threshold"}, "threshold: give it with keep: threshold"),
        ({"score": "oracle", "flip": 0.1}, "flip: flips the verdicts of keep: threshold"),
        ({"score": "oracle", "temperature": 2.0}, "temperature: weights the choice of keep: weighted"),
        ({"score": "oracle", "options": {"a": 1}}, "options: keyword arguments are for a reward or verifier"),
        ({"score": "oracle", "candidates": 0}, "candidates"),
        (
            {"reward": "curation_functions:absent"},
            f"curation_functions ({Path(__file__).parent / 'curation_functions.py'}) has no absent",
        ),
        ({"reward": "no_such_module_here:fn"}, "cannot import no_such_module_here"),
        (  # a warning a second at most
            {"reward": "curation_functions:closeness", "warn_after_seconds": 0.001},
            "curation.warn_after_seconds: Input should be greater than or equal to 1",
        ),
        ({"verifier": "curation_functions:NOT_A_FUNCTION"}, "the int 3, not a function"),
    ],
)
def test_a_bad_curation_is_refused_before_anything_runs(curation, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as refused:
        build_experiment(config_of(curation))
    assert "\n" not in str(refused.value)


def test_the_kde_oracle_needs_noise_on_curves():
    raw = config_of({"score": "oracle"}, name="kde", dim=None)
    del raw["setting"]["dim"]
    raw["setting"]["noise"] = 0.0
    with pytest.raises(ConfigError, match="oracle needs noise > 0: without it moons has no density"):
        build_experiment(raw)


@pytest.mark.parametrize(
    ("function", "message"),
    [
        (
            "raises",
            "setting.curation.reward 'curation_functions:raises' raised ValueError: the reward model is not loaded",
        ),
        ("gives_nan", "returned nan for candidate 1 of seed 0"),
        ("one_too_few", "returned scores of shape (2, 19), expected (seeds, candidates) = (2, 20)"),
        ("gives_text", "returned a str, not an array of numbers"),
    ],
)
def test_a_failing_user_function_is_one_line_naming_it(tmp_path, monkeypatch, function, message):
    monkeypatch.chdir(Path(__file__).parent)  # where the command finds curation_functions
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(config_of({"candidates": 2, "reward": f"curation_functions:{function}"})))
    result = invoke("run", config, "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 2, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert message in last and "Traceback" not in result.stderr, result.stderr


def test_a_swept_curation_names_its_chains_and_records_its_metrics(tmp_path):
    config = tmp_path / "config.yaml"
    raw = config_of({"candidates": 1, "score": "likelihood"})
    raw["sweep"] = {"curation.candidates": [1, 4]}
    config.write_text(yaml.safe_dump(raw))
    assert invoke("run", config, "--out", tmp_path / "run", "--quiet").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "run" / "chains").iterdir()) == [
        "curation.candidates-1",
        "curation.candidates-4",
    ]
    table = invoke("table", tmp_path / "run").stdout.splitlines()
    header = table[0].split(",")
    assert "curation.candidates" in header and "acceptance_rate" in header
    acceptance = {
        (row.split(",")[header.index("curation.candidates")], row.split(",")[header.index("iteration")]): row.split(
            ","
        )[header.index("acceptance_rate")]
        for row in table[1:]
    }
    assert acceptance[("4", "3")] == "0.25" and acceptance[("1", "2")] == "1.0" and acceptance[("4", "1")] == "nan"


def test_a_config_without_curation_describes_the_same_chains_as_before():
    config = SETTINGS["gaussian"].Config(dim=2)
    assert "curation" not in config.model_dump() and "curation" not in config.model_dump(mode="json")
    curated = SETTINGS["gaussian"].Config(dim=2, curation={"score": "oracle"})
    assert list(curated.model_dump())[-1] == "curation"


def test_the_memory_estimate_counts_the_candidates():
    from model_collapse.memory import estimate_memory

    raw = config_of({"candidates": 1, "score": "likelihood"}, samples=1_000_000, dim=100)
    raw["seeds"] = 1
    estimate_memory(build_experiment(raw), workers=1)  # a few GB: fits
    raw["setting"]["curation"]["candidates"] = 100_000
    with pytest.raises(ConfigError, match="a chain would hold about"):
        estimate_memory(build_experiment(raw), workers=1)


def test_a_score_is_one_number_per_seed_and_candidate_for_every_cheap_setting():
    for name in CHEAP:
        setting = setting_with(name, None)
        model = setting.fit([setting.real_train], chain_rng(setting.seeds, 1, "fit"))
        samples = setting.sample(model, 12, chain_rng(setting.seeds, 2, "sample"))
        for score in setting.capabilities.scores:
            values = setting.score(score, model, samples)
            assert values.shape == (3, 12) and not np.isnan(values).any(), (name, score)
        assert isinstance(samples, Samples)


def test_a_run_directory_alone_never_makes_a_curation_function_imported(tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).parent)  # where the command finds curation_functions
    config, out = tmp_path / "config.yaml", tmp_path / "run"
    config.write_text(yaml.safe_dump(config_of({"candidates": 2, "reward": "curation_functions:closeness"})))
    assert invoke("run", config, "--out", out, "--quiet").exit_code == 0
    assert invoke("table", out).exit_code == 0  # reading it back imports nothing and needs nothing
    refused = invoke("resume", out, "--quiet")
    assert refused.exit_code == 2
    assert refused.stderr.strip() == (
        "error: setting.curation.reward 'curation_functions:closeness' is named by a run directory, which "
        "cannot make model-collapse import code: name it yourself "
        "(resume --allow-import curation_functions:closeness)"
    )
    assert invoke("resume", out, "--quiet", "--allow-import", "curation_functions:closeness").exit_code == 0


@pytest.mark.parametrize("keep", ["top", "threshold", "weighted"])
def test_kept_samples_that_their_score_rules_out_are_counted_in_a_warning(tmp_path, monkeypatch, keep):
    """Fewer candidates pass than the regime needs: the rest are kept (the training set keeps its size),
    and the user is told how many, per iteration and seed (it was silent)."""
    monkeypatch.chdir(Path(__file__).parent)
    curation = {"candidates": 2, "verifier": "curation_functions:above_one", "keep": keep}
    if keep == "threshold":
        curation["threshold"] = 1.0
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(config_of(curation)))
    result = invoke("run", config, "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "rules them out" in line]
    assert [line.split(": ")[:2] for line in warnings] == [
        ["chain base / replace", "iteration 2"],
        ["chain base / replace", "iteration 3"],
    ], result.stderr
    counts = re.findall(r"seed (\d): (\d+) of 10", warnings[0])
    assert counts and all(0 < int(n) <= 10 for _, n in counts)
    assert warnings[0].endswith("fewer of the 20 candidates per seed passed than the regime needs")
    table = pd.read_csv(io.StringIO(invoke("table", tmp_path / "run").stdout))
    assert set(table["train_size"]) == {10}  # the training set keeps the size the regime asks


def test_a_reward_that_does_not_return_is_named_with_the_chain_waiting_on_it(tmp_path, monkeypatch):
    """A reward model that hangs hung the run without a word."""
    monkeypatch.chdir(Path(__file__).parent)
    curation = {"candidates": 2, "reward": "curation_functions:slow", "warn_after_seconds": 1.0}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**config_of(curation), "iterations": 2}))
    result = invoke("run", config, "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output
    waits = [line for line in result.stderr.splitlines() if "has not returned" in line]
    assert waits and waits[0] == (
        "chain base / replace: iteration 2: waiting on setting.curation.reward 'curation_functions:slow' for 1 s: "
        "it has not returned (called on 20 candidates per seed)"
    ), result.stderr
