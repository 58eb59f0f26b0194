"""The conformance suite every setting passes, built in or brought by a researcher: ``check_setting``.

As scikit-learn's ``check_estimator`` holds every estimator to its protocol, ``check_setting`` holds a
setting to what the chain relies on. Use it in a setting package's tests, every check a test item of its
own (``parametrize_with_checks``, scikit-learn's design; ``setting_checks`` lists them):

    from model_collapse.testing import parametrize_with_checks

    @parametrize_with_checks([(MySetting, {"components": 2, "samples": 50})])
    def test_my_setting_conforms(check):
        check()

or all of them in one test, raising at the first failure: ``check_setting(MySetting, {...})``.

It runs small chains under every regime (``regimes``; a regime that draws fresh real data is skipped,
saying so, for a setting without ``fresh_real``) and checks, in this order (``CHECKS``):

* ``declarations``: ``capabilities`` (``capabilities_of`` the config) is a ``Capabilities`` and
  ``presentation`` a ``Presentation``, and they agree with what the class writes: ``fresh_real`` and
  ``theory`` are written exactly when declared (the engine calls neither otherwise), ``score`` when
  ``scores`` are declared, ``preview`` when ``preview_size`` is set, ``fit`` takes ``previous`` when
  ``warm_start`` is declared;
* ``deterministic``: ``fit`` and ``sample`` leave numpy's and Python's global random states untouched,
  and handed generators in the same state give the same model and samples, so every random number
  comes from the generators a setting is handed (or from ``randomness.seed_rng``);
* ``metrics``: ``evaluate`` gives every declared metric, one finite value per seed, and no other (and an
  ``Evaluation``'s details can be written as JSON);
* ``data_contract``: the data follow ``base.Data``: ``len`` counts samples per seed, ``select`` takes the
  rows it is asked for, in their order, from one part or across several;
* ``data_round_trip``: real and synthetic data saved and loaded (``load(directory, like=real)``) are
  the same data;
* ``model_round_trip``: a saved and loaded model evaluates to the same metrics, bit for bit;
* ``scores``: every score the setting declares (``Capabilities.scores``, for a config's ``curation``) gives
  one number per seed and sample, higher better, never NaN or +inf, the same numbers twice;
* ``damaged_files``: a saved model or batch with any file truncated, emptied or missing is refused with
  a ``ModelCollapseError`` of one line (what the command line prints), never another exception;
* ``fresh_real_unseen``: ``fresh_real`` (where the setting has it) gives data that are not its
  training data;
* ``repeatable``: a chain run twice gives the same records, bit for bit;
* ``repeatable_on_threads``: the same on every core, and again with two busy processes on the machine
  (a chain alone in a process computes with every core, and nondeterministic parallel kernels, such as
  the backward pass of advanced indexing on a CPU, show up when threads are scheduled differently); one
  chain, under the first of ``regimes`` that keeps its history, since the fault is not the regime's;
* ``resume``: a chain committed to a run directory after some iterations and resumed by a new setting
  object equals the uninterrupted chain bit for bit (recomputed for ``cheap`` ones, restored from
  the kept models and synthetic batches for costly ones).

Each failure raises ``SettingCheckFailed`` naming the check, the regime and what differed. Data are
compared through the setting itself: two data sets are the same when a fit on each, with the same
random generator, evaluates to the same metrics, which needs nothing beyond the protocol.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from .chain import run_chain
from .contract import checked_data, checked_evaluation
from .errors import ModelCollapseError, SettingError
from .randomness import chain_rng
from .regimes import Regime, parse_regime
from .rundir import ChainStore, IterationRecord
from .settings.base import Capabilities, Data, Evaluation, Fit, Presentation, Setting, SettingConfig
from .threads import limited as limited_threads

CHECKS = (
    "declarations",
    "deterministic",
    "metrics",
    "data_contract",
    "data_round_trip",
    "model_round_trip",
    "scores",
    "damaged_files",
    "fresh_real_unseen",
    "repeatable",
    "repeatable_on_threads",
    "resume",
)

# Every regime, with a parameter that exercises it (a share of real data, a mix of sizes).
REGIMES = (
    "replace",
    "accumulate",
    "accumulate-subsample",
    "replace-grown",
    "keep-real-fraction:0.25",
    "fresh-real:0.5",
    "mix:0.5",
    "real-synthetic:2+3",
)


class SettingCheckFailed(AssertionError):
    """A setting that does not do what the chain relies on: ``check`` names the check (one of
    ``CHECKS``), the message what differed."""

    def __init__(self, check: str, message: str):
        super().__init__(f"{check}: {message}")
        self.check = check


@dataclass
class CheckReport:
    """What ``check_setting`` ran: the checks that passed (``check`` or ``check [regime]``) and those it
    skipped, with why."""

    setting: str
    passed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        skipped = f"; skipped: {'; '.join(self.skipped)}" if self.skipped else ""
        return f"{self.setting}: {len(self.passed)} checks passed{skipped}"


@dataclass(frozen=True)
class SettingCheck:
    """One check of one setting (under one regime, for the checks run per regime): what a test item runs.

    Calling it runs the check: it raises ``SettingCheckFailed`` when the setting fails it, and skips the
    test (``pytest.skip``) with the reason when the check does not apply (``fresh_real`` checks of a
    setting without it). ``run`` does the same without pytest, returning the reason it skips, or None."""

    setting: str  # the setting's name
    check: str  # one of CHECKS
    regime: str | None  # the regime's label, for a check run per regime
    skip: str | None  # why the check does not apply to this setting, or None
    _checker: _Checker = field(repr=False, compare=False)

    @property
    def label(self) -> str:
        """``check`` or ``check [regime]``, as ``CheckReport`` lists it."""
        return self.check if self.regime is None else f"{self.check} [{self.regime}]"

    @property
    def id(self) -> str:
        """The test item's id: ``setting:check`` or ``setting:check[regime]``."""
        return f"{self.setting}:{self.check}" + (f"[{self.regime}]" if self.regime is not None else "")

    def run(self) -> str | None:
        if self.skip is not None:
            return self.skip
        method = getattr(self._checker, self.check)
        method(parse_regime(self.regime)) if self.regime is not None else method()
        return None

    def __call__(self) -> None:
        reason = self.run()
        if reason is not None:
            import pytest

            pytest.skip(reason)


def setting_checks(
    setting_class: type[Setting],
    config: Mapping[str, Any] | SettingConfig,
    *,
    seeds: Sequence[int] | None = None,
    iterations: int = 3,
    regimes: Iterable[str] = REGIMES,
    checks: Iterable[str] = CHECKS,
    skip: Mapping[str, str] | None = None,
) -> list[SettingCheck]:
    """Every check ``check_setting`` runs on ``setting_class`` and ``config``, in its order, each a
    ``SettingCheck`` to run on its own (one test item each: ``parametrize_with_checks``). They share the
    chains they compute (a chain run straight is compared by ``repeatable`` and ``resume``), so running
    them all costs what ``check_setting`` costs. The arguments are ``check_setting``'s."""
    wanted, point = _arguments(setting_class, config, iterations, checks)
    declared = _declared_skips(skip)
    capabilities = setting_class.capabilities_of(point)
    if seeds is None:
        seeds = (0,) if capabilities.one_seed_per_chain else (0, 1)
    checker = _Checker(setting_class, point, tuple(int(s) for s in seeds), iterations)
    parsed = [parse_regime(spec) for spec in regimes]
    fresh = capabilities.fresh_real
    runnable = [r for r in parsed if fresh or not r.draws_fresh_real]

    def item(name: str, regime: str | None = None, skip: str | None = None) -> SettingCheck:
        reason = declared.get(name) or skip  # the setting author's reason first, then the suite's
        return SettingCheck(setting_class.name, name, regime, reason, checker)

    found = []
    for name in wanted:
        if name == "repeatable_on_threads":
            # one chain: what it catches does not depend on the regime; one that keeps its history
            # (several parts, rows taken across them) runs the most code
            regime = next((r for r in runnable if r.keeps_history), runnable[0]) if runnable else None
            label = regime.label if regime is not None else None
            found.append(item(name, label, None if regime is not None else "no regime the setting can run"))
        elif name in _PER_REGIME:
            found += [item(name, r.label, None if r in runnable else "the setting has no fresh_real") for r in parsed]
        else:
            found.append(
                item(name, skip="the setting has no fresh_real" if name == "fresh_real_unseen" and not fresh else None)
            )
    return found


def check_setting(
    setting_class: type[Setting],
    config: Mapping[str, Any] | SettingConfig,
    *,
    seeds: Sequence[int] | None = None,
    iterations: int = 3,
    regimes: Iterable[str] = REGIMES,
    checks: Iterable[str] = CHECKS,
    skip: Mapping[str, str] | None = None,
) -> CheckReport:
    """Hold ``setting_class`` to the setting protocol on ``config`` (its fields, as a mapping, or a
    config object); raises ``SettingCheckFailed`` at the first check it fails.

    ``config`` should be tiny: every check runs chains of ``iterations`` iterations (at least 2) under
    every one of ``regimes``. ``seeds``: default (0, 1), or (0,) for a setting with one seed per chain.
    ``skip``: checks the setting does not pass on purpose, each with its reason (``{"repeatable_on_threads":
    "cuBLAS reduces in an order of its own"}``, as scikit-learn's ``expected_failed_checks``): reported
    as skipped, with the reason. ``setting_checks`` gives the same checks one by one, for a test item each."""
    found = setting_checks(
        setting_class, config, seeds=seeds, iterations=iterations, regimes=regimes, checks=checks, skip=skip
    )
    report = CheckReport(setting_class.name)
    for check in found:
        reason = check.run()
        if reason is None:
            report.passed.append(check.label)
        else:
            report.skipped.append(f"{check.label}: {reason}")
    return report


def parametrize_with_checks(cases: Iterable[tuple[type[Setting], Mapping[str, Any] | SettingConfig]], **options: Any):
    """A pytest decorator that makes every check of every (setting class, config) case a test item of its
    own, as scikit-learn's ``parametrize_with_checks`` does: ``-k resume`` picks a check, and one failure
    hides none of the others. ``options`` are ``setting_checks``'s (``seeds``, ``iterations``,
    ``regimes``, ``checks``, ``skip``: a check skipped with the reason given):

        @parametrize_with_checks([(MySetting, {"samples": 20})])
        def test_my_setting(check):
            check()
    """
    import pytest

    found = [check for setting_class, config in cases for check in setting_checks(setting_class, config, **options)]
    return pytest.mark.parametrize("check", found, ids=[check.id for check in found])


_PER_REGIME = ("repeatable", "resume")


def _declared_skips(skip: Mapping[str, str] | None) -> dict[str, str]:
    """The checks a setting's author skips on purpose, each with a reason of words."""
    declared = dict(skip or {})
    unknown = sorted(set(declared) - set(CHECKS))
    if unknown:
        raise ValueError(f"skip names unknown checks {unknown}; the checks are {', '.join(CHECKS)}")
    for name, reason in declared.items():
        if not (isinstance(reason, str) and reason.strip()):
            raise ValueError(f"skip[{name!r}]: give the reason the setting does not pass it, not {reason!r}")
    return {name: f"skipped by the setting's author: {reason}" for name, reason in declared.items()}


def _arguments(
    setting_class: type[Setting], config: Mapping[str, Any] | SettingConfig, iterations: int, checks: Iterable[str]
) -> tuple[list[str], SettingConfig]:
    """``check_setting``'s arguments, checked: the checks to run in their order, and the config."""
    if not (isinstance(setting_class, type) and issubclass(setting_class, Setting)):
        raise TypeError(f"check_setting takes a Setting subclass, got {setting_class!r}")
    if iterations < 2:
        raise ValueError("check_setting needs at least 2 iterations (synthetic data appear at iteration 2)")
    unknown = set(checks) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown checks {sorted(unknown)}; the checks are {', '.join(CHECKS)}")
    if isinstance(config, SettingConfig):
        return [name for name in CHECKS if name in set(checks)], config
    values = dict(config)
    values.setdefault("name", setting_class.name)
    return [name for name in CHECKS if name in set(checks)], setting_class.Config.model_validate(values)


class _Checker:
    def __init__(self, setting_class: type[Setting], config: SettingConfig, seeds: tuple[int, ...], iterations: int):
        self.setting_class, self.config, self.seeds, self.iterations = setting_class, config, seeds, iterations
        self._straight: dict[str, list[IterationRecord]] = {}

    def new(self) -> Setting:
        return self.setting_class(self.config, self.seeds)

    # -- what one iteration's pieces give -------------------------------------------------------------

    def fit(self, setting: Setting, parts: Sequence[Any], scratch: Path | None = None) -> Any:
        result = setting.fit(list(parts), chain_rng(self.seeds, 1, "fit"), scratch)
        return result.model if isinstance(result, Fit) else result

    def fingerprint(self, setting: Setting, data: Any) -> dict[str, np.ndarray]:
        """The metrics of a model fitted on ``data`` with a fixed generator: equal data, equal metrics."""
        return self.evaluate(setting, self.fit(setting, [data]))

    def evaluate(self, setting: Setting, model: Any) -> dict[str, np.ndarray]:
        return self.evaluation(setting, model).metrics

    def evaluation(self, setting: Setting, model: Any) -> Evaluation:
        """``evaluate``'s result, checked as a chain checks it before committing (``contract.py``): a
        fault there is the ``metrics`` check's, whichever check came upon it."""
        result = setting.evaluate(model)
        try:
            return checked_evaluation(setting, result)
        except SettingError as error:
            raise SettingCheckFailed("metrics", str(error)) from None

    def sample(self, setting: Setting, model: Any, size: int, iteration: int = 2) -> Any:
        """``sample``'s result, checked as a chain checks it (``contract.py``)."""
        samples = setting.sample(model, size, chain_rng(self.seeds, iteration, "sample"))
        try:
            return checked_data(setting, "sample", samples, size)
        except SettingError as error:
            raise SettingCheckFailed("data_contract", str(error)) from None

    # -- checks on the pieces ------------------------------------------------------------------------

    def declarations(self) -> None:
        cls = self.setting_class
        capabilities, presentation = cls.capabilities_of(self.config), cls.presentation
        for value, kind in ((capabilities, Capabilities), (presentation, Presentation)):
            if not isinstance(value, kind):
                raise SettingCheckFailed("declarations", f"{kind.__name__.lower()} is a {type(value).__name__}")
        problems = []
        for method, declared in (("fresh_real", capabilities.fresh_real), ("theory", capabilities.theory)):
            if declared and not _written(cls, method):
                problems.append(f"capabilities declare {method}, but {method} is not written")
            if _written(cls, method) and not declared:
                problems.append(f"{method} is written, but capabilities do not declare {method}=True (never called)")
        if capabilities.scores and not _written(cls, "score"):
            problems.append(f"capabilities declare scores {capabilities.scores}, but score is not written")
        if presentation.preview_size and not _written(cls, "preview"):
            problems.append("presentation has a preview_size, but preview is not written")
        if capabilities.warm_start and "previous" not in inspect.signature(cls.fit).parameters:
            problems.append("capabilities declare warm_start, but fit takes no previous=")
        if problems:
            raise SettingCheckFailed("declarations", "; ".join(problems))

    def deterministic(self) -> None:
        setting = self.new()
        with _global_random_state_untouched("fit"):
            first = self.fit(setting, [setting.real_train])
        with _global_random_state_untouched("sample"):
            self.sample(setting, first, len(setting.real_train))
        second = self.fit(setting, [setting.real_train])
        name = _differs(self.evaluate(setting, first), self.evaluate(setting, second))
        if name:
            raise SettingCheckFailed(
                "deterministic",
                f"two fits on the same data with generators in the same state evaluate to different {name}: "
                "draw every random number from the generator fit is handed",
            )
        size = len(setting.real_train)
        a, b = (self.fingerprint(setting, self.sample(setting, first, size)) for _ in range(2))
        name = _differs(a, b)
        if name:
            raise SettingCheckFailed(
                "deterministic",
                "two samples of the same model with generators in the same state are different data: "
                "draw every random number from the generator sample is handed",
            )

    def metrics(self) -> None:
        setting = self.new()
        evaluated = self.evaluation(setting, self.fit(setting, [setting.real_train]))
        metrics = evaluated.metrics
        try:  # an Evaluation's details are written to the iteration's diagnostics.json
            json.dumps(evaluated.diagnostics)
        except (TypeError, ValueError) as error:
            raise SettingCheckFailed("metrics", f"evaluate's Evaluation.diagnostics are not JSON: {error}") from None
        for name, values in metrics.items():  # (every declared one, one value per seed: ``evaluation``)
            if not np.isfinite(values).all():
                raise SettingCheckFailed("metrics", f"{name} = {values.tolist()} is not finite for every seed")

    def data_contract(self) -> None:
        setting = self.new()
        real = setting.real_train
        kind = type(real)
        if not isinstance(real, Data):
            missing = [m for m in ("__len__", "select", "save", "load", "memory_mapped") if not hasattr(real, m)]
            raise SettingCheckFailed(
                "data_contract", f"{kind.__name__} lacks {', '.join(missing)} of the data contract (base.Data)"
            )
        rows = len(real)
        if not isinstance(rows, int) or rows < 2:
            raise SettingCheckFailed(
                "data_contract", f"len(real_train) = {rows!r}; the check needs at least 2 samples per seed"
            )
        seeds = len(self.seeds)
        rng = np.random.default_rng(0)
        k = min(rows, 4)
        wanted = np.stack([rng.choice(rows, size=k, replace=False) for _ in range(seeds)])
        chosen = kind.select([real], wanted)
        if len(chosen) != k:
            raise SettingCheckFailed(
                "data_contract", f"select of {k} rows per seed gave {len(chosen)} samples per seed"
            )
        # the same rows one at a time, then joined by a select across those parts: equal only if select
        # takes the rows it is given, in their order, and counts rows across parts
        singles = [kind.select([real], wanted[:, j : j + 1]) for j in range(k)]
        if any(len(single) != 1 for single in singles):
            raise SettingCheckFailed("data_contract", "select of one row per seed did not give one sample per seed")
        joined = kind.select(singles, np.tile(np.arange(k), (seeds, 1)))
        if _other_data(self.fingerprint(setting, joined), self.fingerprint(setting, chosen)):
            raise SettingCheckFailed(
                "data_contract",
                f"select(parts, rows) does not take the rows it is asked for: rows {wanted[0].tolist()} of the "
                "real data taken at once and one at a time (then joined across parts) are different data",
            )
        everything = kind.select([real], np.tile(np.arange(rows), (seeds, 1)))
        if _other_data(self.fingerprint(setting, everything), self.fingerprint(setting, real)):
            raise SettingCheckFailed(
                "data_contract", "select of every row, in order, is not the data it was taken from"
            )

    def data_round_trip(self) -> None:
        setting = self.new()
        real = setting.real_train
        model = self.fit(setting, [real])
        synthetic = self.sample(setting, model, len(real))
        if len(synthetic) != len(real):
            raise SettingCheckFailed(
                "data_round_trip", f"sample(model, {len(real)}) gave {len(synthetic)} samples per seed"
            )
        for what, data in (("real", real), ("synthetic", synthetic)):
            with tempfile.TemporaryDirectory(prefix="check-setting-") as directory:
                data.save(Path(directory))
                loaded = type(real).load(Path(directory), like=real)
                if len(loaded) != len(data):
                    raise SettingCheckFailed(
                        "data_round_trip",
                        f"{what} data saved with {len(data)} samples per seed load with {len(loaded)}",
                    )
                if _other_data(self.fingerprint(setting, loaded), self.fingerprint(setting, data)):
                    raise SettingCheckFailed(
                        "data_round_trip", f"{what} data saved and loaded are not the data that were saved"
                    )

    def model_round_trip(self) -> None:
        setting = self.new()
        model = self.fit(setting, [setting.real_train])
        before = self.evaluate(setting, model)
        with tempfile.TemporaryDirectory(prefix="check-setting-") as directory:
            setting.save_model(model, Path(directory))
            loaded = self.new().load_model(Path(directory))
        after = self.evaluate(setting, loaded)
        name = _differs(before, after)
        if name:
            raise SettingCheckFailed(
                "model_round_trip",
                f"a saved and loaded model evaluates to {name} = {after[name].tolist()}, before saving "
                f"{before[name].tolist()}",
            )

    def scores(self) -> None:
        setting = self.new()
        model = self.fit(setting, [setting.real_train])
        samples = self.sample(setting, model, len(setting.real_train))
        expected = (len(self.seeds), len(samples))
        for name in setting.capabilities_of(setting.config).scores:
            try:
                first, second = (np.asarray(setting.score(name, model, samples), dtype=float) for _ in range(2))
            except NotImplementedError as error:
                raise SettingCheckFailed(
                    "scores", f"{name!r} is declared in scores, but score raises: {error}"
                ) from None
            if first.shape != expected:
                raise SettingCheckFailed("scores", f"score {name!r} has shape {first.shape}, expected {expected}")
            if np.isnan(first).any() or (first == np.inf).any():
                raise SettingCheckFailed("scores", f"score {name!r} gives NaN or +inf (-inf rules a sample out)")
            if not np.array_equal(first, second):
                raise SettingCheckFailed("scores", f"score {name!r} gives other numbers the second time")

    def damaged_files(self) -> None:
        setting = self.new()
        real = setting.real_train
        model = self.fit(setting, [real])
        synthetic = self.sample(setting, model, len(real))
        metrics = self.evaluate(setting, model)
        fingerprint = self.fingerprint(setting, synthetic)
        self._refuses_damage(
            "a saved model",
            lambda directory: setting.save_model(model, directory),
            lambda directory: self.evaluate(setting, self.new().load_model(directory)),
            metrics,
        )
        self._refuses_damage(
            "a saved batch",
            synthetic.save,
            lambda directory: self.fingerprint(setting, type(real).load(directory, like=real)),
            fingerprint,
        )

    def _refuses_damage(
        self, what: str, save: Callable[[Path], None], load: Callable[[Path], dict[str, np.ndarray]], whole: dict
    ) -> None:
        """Every file of what ``save`` writes, truncated, emptied or removed: ``load`` must refuse it in
        one line, or (a file it does not need) give what the whole files give."""
        with tempfile.TemporaryDirectory(prefix="check-setting-") as root:
            directory = Path(root) / "saved"
            directory.mkdir()
            save(directory)
            files = sorted(p.relative_to(directory) for p in directory.rglob("*") if p.is_file())
            if not files:
                raise SettingCheckFailed("damaged_files", f"{what} wrote no file")
            for relative in files:
                for damage in ("truncated", "emptied", "missing"):
                    copy = Path(root) / f"{damage}-{'-'.join(relative.parts)}"
                    shutil.copytree(directory, copy)
                    target = copy / relative
                    if damage == "missing":
                        target.unlink()
                    else:
                        content = target.read_bytes()
                        target.write_bytes(content[: len(content) // 2] if damage == "truncated" else b"")
                    where = f"{what} with {relative} {damage}"
                    try:
                        got = load(copy)
                    except ModelCollapseError as error:
                        if not str(error) or "\n" in str(error):
                            raise SettingCheckFailed(
                                "damaged_files", f"{where}: refused with a message of more than one line"
                            ) from None
                        continue
                    except Exception as error:
                        raise SettingCheckFailed(
                            "damaged_files",
                            f"{where} raised {type(error).__name__}: {_first_line(error)}; refuse it with "
                            "model_collapse.errors.RunDirectoryError naming the file",
                        ) from None
                    finally:
                        shutil.rmtree(copy, ignore_errors=True)
                    if _other_data(got, whole):
                        raise SettingCheckFailed(
                            "damaged_files", f"{where} was loaded, and gives other numbers than the whole files"
                        )

    def fresh_real_unseen(self) -> None:
        setting = self.new()
        real = setting.real_train
        size = max(1, len(real) // 2)
        fresh = setting.fresh_real(size, chain_rng(self.seeds, 2, "fresh-real"))
        if len(fresh) != size:
            raise SettingCheckFailed("fresh_real_unseen", f"fresh_real({size}) gave {len(fresh)} samples per seed")
        seen = _row_digests(real)
        # rows compared by value where the training rows are distinct values; where values repeat (a
        # discrete distribution) an equal value is no seen sample
        if seen is not None and all(len(rows) == len(real) for rows in seen):
            for seed, (old, new) in zip(self.seeds, zip(seen, _row_digests(fresh) or [])):
                if old & new:
                    raise SettingCheckFailed(
                        "fresh_real_unseen", f"fresh_real gave {len(old & new)} training sample(s) of seed {seed}"
                    )
            return
        # data of another type: at least not the training data's first rows
        first = type(real).select([real], np.tile(np.arange(size), (len(self.seeds), 1)))
        if not _other_data(self.fingerprint(setting, fresh), self.fingerprint(setting, first)):
            raise SettingCheckFailed("fresh_real_unseen", "fresh_real gave the first rows of the training data")

    # -- checks on whole chains ----------------------------------------------------------------------

    def chain(
        self, regime: Regime, store: ChainStore | None = None, iterations: int | None = None, **options
    ) -> list[IterationRecord]:
        return run_chain(self.new(), regime, iterations or self.iterations, store, **options)

    def straight(self, regime: Regime) -> list[IterationRecord]:
        """The chain run once, uninterrupted, on one thread (as in a worker): what the others must equal."""
        if regime.label not in self._straight:
            with limited_threads(1):
                self._straight[regime.label] = self.chain(regime)
        return self._straight[regime.label]

    def repeatable(self, regime: Regime) -> None:
        first = self.straight(regime)
        with limited_threads(1):
            second = self.chain(regime)
        _same(
            "repeatable",
            regime,
            "a second run (are all random numbers drawn from the generators handed in?)",
            second,
            first,
        )

    def repeatable_on_threads(self, regime: Regime) -> None:
        cores = max(2, os.cpu_count() or 1)
        with limited_threads(cores):
            first = self.chain(regime)
            with busy_processes(2):
                second = self.chain(regime)
        _same(
            "repeatable_on_threads", regime, f"a second run on {cores} threads with two busy processes", second, first
        )

    def resume(self, regime: Regime) -> None:
        stop = max(1, self.iterations - 1)
        straight = self.straight(regime)
        with limited_threads(1), tempfile.TemporaryDirectory(prefix="check-setting-") as directory:
            description = {"check": regime.label}
            store = ChainStore(Path(directory) / "chain", description)
            self.chain(regime, store, stop, commit_interval_s=0.0)
            how = "recomputed" if self.setting_class.capabilities_of(self.config).cheap else "restored"
            resumed = self.chain(regime, ChainStore(Path(directory) / "chain", description), commit_interval_s=0.0)
            recorded = ChainStore(Path(directory) / "chain", description).records(len(self.seeds))
        _same("resume", regime, f"the chain stopped after iteration {stop} and resumed ({how})", resumed, straight)
        _same("resume", regime, "the records in the run directory", recorded, straight)


def _written(cls: type[Setting], method: str) -> bool:
    """Whether ``cls`` writes its own ``method`` rather than inheriting the protocol's default."""
    mine, default = getattr(cls, method), getattr(Setting, method)
    return getattr(mine, "__func__", mine) is not getattr(default, "__func__", default)


def _same(check: str, regime: Regime, what: str, got: list[IterationRecord], expected: list[IterationRecord]) -> None:
    if len(got) != len(expected):
        raise SettingCheckFailed(check, f"[{regime.label}] {what} has {len(got)} iterations, expected {len(expected)}")
    for a, b in zip(got, expected):
        if a.train_size != b.train_size or not np.array_equal(a.real_fraction, b.real_fraction):
            raise SettingCheckFailed(check, f"[{regime.label}] {what} trains iteration {a.iteration} on other data")
        name = _differs(a.metrics, b.metrics)
        if name:
            got_values, expected_values = (np.asarray(r.metrics[name]).tolist() for r in (a, b))
            raise SettingCheckFailed(
                check,
                f"[{regime.label}] {what} differs at iteration {a.iteration}: "
                f"{name} = {got_values}, expected {expected_values}",
            )


def _differs(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    """The first metric whose values differ (NaN equals NaN), or None."""
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            return name
        x, y = np.asarray(a[name], dtype=float), np.asarray(b[name], dtype=float)
        if x.shape != y.shape or not np.array_equal(x, y, equal_nan=True):
            return name
    return None


def _other_data(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    """Whether two fingerprints are of different data. Equal data may take different paths through a fit
    (a whole part's cached statistics, a selection's rows), which agree to rounding, not bit for bit;
    different data change a fit far more."""
    return set(a) != set(b) or any(
        a[name].shape != b[name].shape or not np.allclose(a[name], b[name], rtol=1e-9, atol=1e-12, equal_nan=True)
        for name in a
    )


def _row_digests(data: Any) -> list[set[bytes]] | None:
    """Per seed, the bytes of every row, for data of named arrays (``Samples``); None for other types."""
    fields = getattr(data, "fields", None)
    if not isinstance(fields, Mapping) or not all(isinstance(a, np.ndarray) for a in fields.values()):
        return None
    arrays = [np.ascontiguousarray(fields[name]) for name in sorted(fields)]
    seeds, rows = arrays[0].shape[:2]
    return [{b"".join(a[s, r].tobytes() for a in arrays) for r in range(rows)} for s in range(seeds)]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "(no message)"


def _torch_random_states() -> list[Any]:
    """PyTorch's global random states, the CPU's and every initialised CUDA device's (none without
    PyTorch imported)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return []
    states = [torch.random.get_rng_state()]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states += torch.cuda.get_rng_state_all()
    return states


@contextlib.contextmanager
def _global_random_state_untouched(method: str) -> Iterator[None]:
    """Fail ``deterministic`` if the block draws from (or seeds) numpy's, Python's or PyTorch's global
    random state (a library called without a seed does; ``torch.manual_seed(0)`` in ``fit`` gives every
    seed the same initial weights), which no key of the chain's fixes: a setting seeds a
    ``torch.Generator`` of its own, or seeds inside ``torch.random.fork_rng()``."""
    import random

    numpy_before, python_before = cast(tuple, np.random.get_state()), random.getstate()
    torch_before = _torch_random_states()
    yield
    torch_after = _torch_random_states()
    if torch_after and not torch_before:  # imported by the block: its global state started as a new generator's
        torch_before, torch_after = [sys.modules["torch"].Generator().get_state()], torch_after[:1]
    if any(not a.equal(b) for a, b in zip(torch_after, torch_before)):
        raise SettingCheckFailed(
            "deterministic",
            f"{method} draws from or seeds PyTorch's global random state (torch.manual_seed, torch.rand*, "
            "nn.Module initialisation outside torch.random.fork_rng()): seed a torch.Generator from the "
            "generator it is handed",
        )
    numpy_after = cast(tuple, np.random.get_state())
    if not (np.array_equal(numpy_after[1], numpy_before[1]) and numpy_after[2:] == numpy_before[2:]):
        raise SettingCheckFailed(
            "deterministic",
            f"{method} draws from numpy's global random state (np.random.*, or a library given no seed): "
            "draw from the generator it is handed",
        )
    if random.getstate() != python_before:
        raise SettingCheckFailed(
            "deterministic", f"{method} draws from Python's global random state (random.*): draw from the generator"
        )


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """``count`` processes spinning on the CPU while the block runs, as a loaded machine has (for
    ``repeatable_on_threads``, and ``benchmarks/threads.py``)."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
        for spinner in spinners:
            spinner.wait()
