"""Curation between sampling and the regime: draw more candidates than the regime asks for, score them,
keep some (the ``curation`` section of a setting's config, ``settings/configs.py``).

With ``candidates: m`` a chain draws m T samples per seed where its regime asks for T, scores every
candidate (higher is better) and keeps T:

* ``top``: the T best of the m T (ties: the earlier drawn first): Alemohammad et al.'s sampling bias
  with ``score: likelihood``, a perfect verifier's choice with ``oracle``;
* ``threshold``: T drawn uniformly from the candidates scoring at least ``threshold``, each verdict
  flipped with probability ``flip`` (Feng et al.'s imperfect verifier); a seed with fewer than T
  accepted keeps all of them and the best of the rest, and its ``acceptance_rate`` shows it;
* ``weighted``: the candidates are m per kept sample (sample t's are t, t + T, ..., t + (m-1) T), and one
  of each m is drawn with probability proportional to exp(score / temperature), by the Gumbel-max trick:
  the Bradley-Terry / Plackett-Luce choice among m of Ferbach et al. A setting whose samples belong to
  fixed slots (linear regression's design rows) keeps one sample per slot this way.

Besides a setting's own scores (``Capabilities.scores``), ``score: importance`` is log p(x) - log q(x), the
``oracle`` minus the ``likelihood``, for any setting that has both: with ``keep: weighted`` and
temperature 1, each kept sample is a sampling-importance-resampling draw from the real distribution
among its m candidates (exact as m grows): a perfect verifier, which ``noise`` makes imperfect.

``noise`` adds N(0, noise^2) to the scores every choice sees; the recorded scores are the true ones. The
choice's random numbers come from ``chain_rng(seeds, iteration, "curation")``, so a curated chain
resumes exactly. With one candidate nothing is chosen: the batch is the plain loop's, bit for bit, and
it is scored after the fit, for the record alone.

A reward or verifier is a user's function ``function(samples, **options)`` of a batch of candidates (the
setting's data type: ``Samples`` for the array settings, ``samples["x"]`` of shape (seeds, n, d)) that
returns an array of shape (seeds, n). It is imported when a config that names it is checked and when a
chain runs, never when a run is read back; and a run directory alone never makes it imported: resuming
a run whose curation names a function takes the user's word for it (``resume --allow-import``,
``vouched.py``), as for a setting named by import path.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any, Protocol

import numpy as np

from . import activity
from .errors import ConfigError
from .settings import CurationConfig, Metric, Setting, SettingConfig
from .settings.base import Declaration
from .settings.registry import import_object
from .vouched import is_import_path, vouched

log = logging.getLogger(__name__)

# What every curated chain records per iteration (NaN at iteration 1, which samples nothing).
CURATION_METRICS = {
    "kept_score_mean": Metric("mean score of the kept samples"),
    "kept_score_q10": Metric("10th percentile of the kept samples' scores"),
    "kept_score_median": Metric("median score of the kept samples"),
    "kept_score_q90": Metric("90th percentile of the kept samples' scores"),
    "candidate_score_mean": Metric("mean score of all candidates"),
    "acceptance_rate": Metric("share of candidates accepted"),
}


# The score the engine derives from a setting's oracle and likelihood.
IMPORTANCE = "importance"


def offered_scores(declared: type[Declaration]) -> tuple[str, ...]:
    """The scores a config may rank a setting's samples by: its own, and ``importance`` with both
    ``oracle`` and ``likelihood``."""
    scores = declared.capabilities.scores
    derived = (IMPORTANCE,) if {"oracle", "likelihood"} <= set(scores) else ()
    return (*scores, *derived)


def metrics_for(declared: type[Declaration], point: SettingConfig) -> dict[str, Metric]:
    """The metrics a chain of ``point`` records: the setting's, and curation's when it curates."""
    return {**declared.metrics_of(point), **(CURATION_METRICS if point.curation is not None else {})}


def check_curation(declared: type[Declaration], point: SettingConfig, import_functions: bool = True) -> None:
    """Refuse a curation the setting cannot score, or a function that cannot be imported or called."""
    curation = point.curation
    if curation is None:
        return
    if curation.score is not None and curation.score not in offered_scores(declared):
        offered = ", ".join(offered_scores(declared)) or "none of its own (use reward or verifier)"
        raise ConfigError(
            f"setting.curation.score: the {declared.name} setting has no score {curation.score!r}; it scores {offered}"
        )
    if curation.score is None and import_functions:
        _function(curation)


def check_functions_allowed(point: SettingConfig) -> None:
    """Refuse to resume a run whose curation names a function the user has not named in this process."""
    curation = point.curation
    if curation is None or curation.score is not None or vouched(curation.scored_by) or _registered(curation):
        return
    path = curation.scored_by
    raise ConfigError(
        f"setting.curation.{curation.scorer_key} {path!r} is named by a run directory, which cannot make "
        f"model-collapse import code: name it yourself (resume --allow-import {path})"
    )


# Installed packages register curation functions here (``[project.entry-points."model_collapse.curation_functions"]``).
ENTRY_POINT_GROUP = "model_collapse.curation_functions"


class CurationFunction(Protocol):
    """A reward or verifier: one number per candidate of a batch (the setting's data type; ``Samples``
    for the array settings, ``samples["x"]`` of shape (seeds, n, d)), an array (seeds, n), higher
    better; ``options`` are the config's ``curation.options``."""

    def __call__(self, samples: Any, /, **options: Any) -> np.ndarray: ...


def _registered_functions() -> dict[str, str]:
    return {entry.name: entry.value for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _registered(curation: CurationConfig) -> bool:
    """Whether the curation function is one an installed package registers (by name or by its path)."""
    registered = _registered_functions()
    return curation.scored_by in registered or curation.scored_by in registered.values()


def _function(curation: CurationConfig) -> CurationFunction:
    key, path = curation.scorer_key, curation.scored_by
    if not is_import_path(path):
        registered = _registered_functions()
        if path not in registered:
            known = ", ".join(sorted(registered)) or "none installed"
            raise ConfigError(
                f"setting.curation.{key} {path!r}: no installed package registers it (registered: {known}); "
                "or name it as package.module:function"
            )
        path = registered[path]
    by_path = is_import_path(curation.scored_by)  # (a registered name's package is installed: never the cwd's)
    function = import_object(path, f"setting.curation.{key} {path!r}", working_directory=by_path)
    if not callable(function):
        raise ConfigError(
            f"setting.curation.{key} {path!r}: the {type(function).__name__} {function!r}, not a function"
        )
    return function


class Curator:
    """The curation of one chain's synthetic batches."""

    def __init__(self, setting: Setting, curation: CurationConfig):
        self.setting, self.curation = setting, curation
        self.what = f"setting.curation.{curation.scorer_key} {curation.scored_by!r}"
        self.iteration: int | None = None  # the iteration whose candidates are being drawn and scored
        self._function = None if curation.score is not None else _function(curation)

    @classmethod
    def of(cls, setting: Setting) -> Curator | None:
        curation = setting.config.curation
        return cls(setting, curation) if curation is not None else None

    def nothing(self) -> dict[str, np.ndarray]:
        """The curation metrics of an iteration that sampled nothing."""
        return {name: np.full(self.setting.seed_count, np.nan) for name in CURATION_METRICS}

    def draw(
        self,
        model: Any,
        size: int,
        sample_rng: np.random.Generator,
        rng: np.random.Generator,
        scratch: Any = None,
        iteration: int | None = None,
    ) -> tuple[Any, Callable[[], dict[str, np.ndarray]]]:
        """``size`` curated samples per seed from ``model``, and the function giving their metrics (to
        call after the fit: with one candidate, scoring must not change what the fit sees). Kept samples
        that their score rules out (-inf: fewer candidates passed than the regime needs) are counted in a
        warning."""
        m = self.curation.candidates
        self.iteration = iteration
        drawn = self.setting.sample(model, m * size, sample_rng, scratch)
        if m == 1:
            return drawn, lambda: self._metrics(self._scores(model, drawn), None, rng)
        scores = self._scores(model, drawn)
        rows, accepted = self._choose(scores, size, rng)
        self._warn_of_ruled_out(np.take_along_axis(scores, rows, axis=1))
        kept = type(self.setting.real_train).select([drawn], rows)
        metrics = self._metrics(scores, rows, None, accepted)
        return kept, lambda: metrics

    def _where(self) -> str:
        """``chain LABEL: iteration N: ``, as much of it as is known, to open a warning."""
        return activity.chain_prefix() + (f"iteration {self.iteration}: " if self.iteration is not None else "")

    def _warn_of_ruled_out(self, kept: np.ndarray) -> None:
        ruled_out = np.isneginf(kept).sum(axis=1)
        if not ruled_out.any():
            return
        size = kept.shape[1]
        seeds = ", ".join(f"seed {self.setting.seeds[i]}: {n} of {size}" for i, n in enumerate(ruled_out) if n)
        log.warning(
            "%ssamples kept although %s rules them out (score -inf; %s): fewer of the %d candidates per seed "
            "passed than the regime needs",
            self._where(),
            self.what,
            seeds,
            self.curation.candidates * size,
        )

    def _scores(self, model: Any, samples: Any) -> np.ndarray:
        if self._function is None and self.curation.scored_by == IMPORTANCE:
            oracle, likelihood = (self.setting.score(name, model, samples) for name in ("oracle", "likelihood"))
            values = np.asarray(oracle, dtype=float) - np.asarray(likelihood, dtype=float)
        elif self._function is None:
            values = self.setting.score(self.curation.scored_by, model, samples)
        else:
            try:
                with self._watched(len(samples)):
                    values = self._function(samples, **self.curation.options)
            except Exception as error:  # the user's function: its failure is one line naming it
                message = (str(error).splitlines() or [""])[0]
                raise ConfigError(f"{self.what} raised {type(error).__name__}: {message}") from None
        return self._checked(values, len(samples))

    @contextlib.contextmanager
    def _watched(self, candidates: int) -> Iterator[None]:
        """A user's function that has not returned after ``warn_after_seconds`` (a reward model that
        hangs) is named in a warning, with the chain and iteration waiting on it, and again every as long."""
        interval, started, returned = self.curation.warn_after_seconds, time.monotonic(), threading.Event()
        where = self._where()

        def watch() -> None:
            while not returned.wait(interval):
                log.warning(
                    "%swaiting on %s for %.0f s: it has not returned (called on %d candidates per seed)",
                    where,
                    self.what,
                    time.monotonic() - started,
                    candidates,
                )

        watcher = threading.Thread(target=watch, name="curation-watch", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            returned.set()
            watcher.join()

    def _checked(self, values: Any, count: int) -> np.ndarray:
        expected = (self.setting.seed_count, count)
        try:
            scores = np.asarray(values, dtype=float)
        except (TypeError, ValueError):
            raise ConfigError(f"{self.what} returned a {type(values).__name__}, not an array of numbers") from None
        if scores.shape != expected:
            raise ConfigError(
                f"{self.what} returned scores of shape {scores.shape}, expected (seeds, candidates) = {expected}"
            )
        bad = np.isnan(scores) | (scores == np.inf)
        if bad.any():
            seed, row = (int(i[0]) for i in np.nonzero(bad))
            raise ConfigError(
                f"{self.what} returned {scores[seed, row]} for candidate {row} of seed {self.setting.seeds[seed]}: "
                "scores are numbers, or -inf for a candidate ruled out"
            )
        return scores

    def _seen(self, scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noise = self.curation.noise
        return scores + noise * rng.standard_normal(scores.shape) if noise else scores

    def _verdicts(self, seen: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        assert self.curation.threshold is not None
        accepted = seen >= self.curation.threshold
        if self.curation.flip:
            accepted ^= rng.random(seen.shape) < self.curation.flip
        return accepted

    def _choose(self, scores: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        """The rows kept of each seed's candidates (seeds, size), in the order drawn, and the verdicts
        (under ``threshold``)."""
        seen, keep = self._seen(scores, rng), self.curation.keep
        if keep == "top":
            return np.sort(np.argsort(-seen, axis=1, kind="stable")[:, :size], axis=1), None
        if keep == "threshold":
            accepted = self._verdicts(seen, rng)
            # accepted first, in random order; then the rest, best first
            order = np.lexsort((np.where(accepted, rng.random(seen.shape), -seen), ~accepted), axis=1)
            return np.sort(order[:, :size], axis=1), accepted
        seeds, m = seen.shape[0], self.curation.candidates
        keys = seen / self.curation.temperature + rng.gumbel(size=seen.shape)
        chosen = np.argmax(keys.reshape(seeds, m, size), axis=1)  # which of its m candidates each sample is
        return chosen * size + np.arange(size), None

    def _metrics(
        self,
        scores: np.ndarray,
        rows: np.ndarray | None,
        rng: np.random.Generator | None,
        accepted: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """The iteration's record: the kept samples' scores (all of them when ``rows`` is None: one
        candidate each) and the share accepted."""
        kept = scores if rows is None else np.take_along_axis(scores, rows, axis=1)
        if accepted is None and self.curation.keep == "threshold":
            assert rng is not None  # (one candidate: the verdicts are the record's alone)
            accepted = self._verdicts(self._seen(scores, rng), rng)
        acceptance = (
            accepted.mean(axis=1)
            if accepted is not None
            else np.full(len(scores), kept.shape[1] / scores.shape[1], dtype=float)
        )
        with np.errstate(invalid="ignore"):  # -inf scores: the mean is -inf, a quantile may be NaN
            quantiles = np.quantile(kept, [0.1, 0.5, 0.9], axis=1)
            return {
                "kept_score_mean": kept.mean(axis=1),
                "kept_score_q10": quantiles[0],
                "kept_score_median": quantiles[1],
                "kept_score_q90": quantiles[2],
                "candidate_score_mean": scores.mean(axis=1),
                "acceptance_rate": acceptance,
            }
