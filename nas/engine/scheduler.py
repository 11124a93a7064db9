"""Pareto-aware asynchronous successive halving: vitnas' early stopping for a multi-objective search.

Neither Optuna (a multi-objective study cannot prune) nor Ray Tune (its schedulers follow one metric)
stops bad trials early in a multi-objective search (docs/design.md, "The search loop"). :class:`ParetoASHA`
does, as a Ray Tune ``TrialScheduler``.

The algorithm
-------------
Asynchronous successive halving (ASHA; Li et al., "A System for Massively Parallel Hyperparameter
Tuning", arXiv 1810.05934) checks a trial at *rungs*, epochs ``grace_period * eta**k`` (k = 0, 1, ...)
below ``max_t``. When a trial's per-epoch result reaches a rung, its value is recorded there and the
trial goes on only if it ranks in the top ``1/eta`` of every value recorded at that rung so far; nobody
waits for a rung to fill, so a decision is never deferred and workers never idle.

Here the value recorded at a rung is a vector, one entry per objective of :mod:`nas.objectives`: the
per-epoch validation accuracy (result field ``val_accuracy``) stands for ``accuracy``; the other
objectives (``params``, ``throughput``) do not change with training: vitnas' trials measure them before
training and report them with every epoch (result fields ``params`` and ``throughput``), and where a
result lacks them they are read from the trial's config, ``trial.config["objectives_hint"]``
(``{"params": float, "throughput": float}``, estimates of the design). Every value is normalised as the
study's hypervolume normalises it
(:meth:`nas.objectives.HVBounds.normalise`: [0, 1], 1 = best, log scales for params and throughput).
The trials at the rung are then ranked:

1. by non-dominated sorting (front 1 = dominated by nobody at the rung, front 2 = dominated only by
   front 1, ...);
2. within a front, by hypervolume contribution (the normalised hypervolume of the front, as
   :func:`nas.objectives.normalised_hypervolume` computes it, minus that of the front without the
   trial), larger first; then by crowding distance (NSGA-II), larger first; then by the sum of the
   normalised values; then by trial id, so the ranking is a function of the rung's entries alone.

With ``n`` trials at the rung, a trial is **stopped** only when it is outside the first front **and**
outside the top ``ceil(n / eta)`` of that ranking; a rung with fewer than ``eta`` entries stops nobody.
So a trial that dominates everyone at its rung always goes on, and a tiny, fast design goes on however
low its accuracy, unless some trial at the rung is at least as small, as fast and as accurate: it is on
the first front.

A trial is recorded at a rung by the first per-epoch result at or past the rung's epoch (with that
result's accuracy, when it skipped the rung's own epoch). A trial that reports a rung's epoch again (a
trial Ray restarted from scratch) replaces its entry there and is decided again; a trial once stopped
stays stopped.

An objective with no hint (``objectives_hint`` missing, or a value missing or not a finite number) is
*unknown* and counts as its worst normalised value (0, the hypervolume's reference corner), so a trial
without hints competes on accuracy alone: it is dominated by any trial with hints that is at least as
accurate, it dominates none of them, it adds nothing to a front's hypervolume, and it cannot push a small
or fast design off the first front however accurate it is. A rung of trials without hints is ranked by
accuracy, as ASHA ranks it. A non-finite per-epoch accuracy ranks below any finite one.

How this differs from MO-ASHA
-----------------------------
MO-ASHA (Schmucker et al., "Multi-objective Asynchronous Successive Halving", arXiv 2106.12639) replaces
ASHA's sort by one metric with a multi-objective order of the rung: non-dominated sorting, trials within
a front ordered by an epsilon-net (greedy farthest-point spread) or NSGA-II's crowding distance, and the
top ``1/eta`` of that order go on. Here:

* the whole first front goes on, even when it is larger than ``ceil(n / eta)`` (survivors are the first
  front plus the top ``ceil(n / eta)`` of the order), so a non-dominated design is never stopped;
* within a front the order is by hypervolume contribution in the study's own normalisation (the number
  the search is judged by), crowding distance only breaking ties (the epsilon-net is not used);
* only accuracy is a learning-curve value measured at the rung; params and throughput are fixed
  properties of the design known before training (the hint), not measured per rung;
* it is a stopping rule, as Ray's ``ASHAScheduler`` is: a trial that goes on trains to the next rung
  without waiting; nothing is paused and promoted later.

The asynchronous caveat
-----------------------
As in ASHA, a trial is decided when it reaches the rung, against the entries recorded *so far*: a late
arrival is compared with every earlier entry, but an early arrival was decided before the later ones
came, and a decision is never revisited (an early trial that went on is not stopped later; one
stopped early, while the rung was small, stays stopped). The rule is a function of the set of entries
only, so once a rung is full the verdicts (:meth:`ParetoASHA.verdicts`) and the decision on the last
arrival do not depend on the order results arrived in (up to exact ties, broken by trial id).

State
-----
:meth:`ParetoASHA.get_state` returns the rungs with their recorded entries, the stopped trials with the
epoch and learning curve at which they stopped, and the parameters, as a JSON-able dict; the driver
stores it in the study's user attributes and calls :meth:`ParetoASHA.set_state` on resume, so a resumed
search continues the same rungs. Ray's ``save``/``restore`` write and read the same dict as JSON.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from .. import objectives

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

__all__ = ["ParetoASHA", "AccuracyASHA", "SCHEDULERS", "HINT_KEY", "EPOCH_FIELD", "ACCURACY_FIELD", "RESUME_KEY"]

#: Early-stopping rules a search can use (``SearchConfig.scheduler``): ``pareto`` (:class:`ParetoASHA`, the
#: default) or ``asha`` (:class:`AccuracyASHA`, Ray Tune's ASHA on accuracy alone: the baseline).
SCHEDULERS: tuple[str, ...] = ("pareto", "curve", "asha")

#: Config key holding ``{objective name: value}`` estimates of the objectives other than accuracy.
HINT_KEY = "objectives_hint"
#: Config key of a trial that resumes a run paused at the promotion rung (the saved state's path): it passed
#: its rung already, so the rules neither stop it nor learn from its curve (as the replay that chose the
#: default treats it; :meth:`nas.engine.driver.StudyDriver.promote`).
RESUME_KEY = "resume"


def _resumed(trial: Any) -> bool:
    config = getattr(trial, "config", None)
    return isinstance(config, dict) and bool(config.get(RESUME_KEY))
#: Result field giving the epoch (1-based) a per-epoch result belongs to.
EPOCH_FIELD = "epoch"
#: Result field giving the per-epoch validation accuracy (stands for the primary objective at a rung).
ACCURACY_FIELD = "val_accuracy"
#: Per-epoch result fields kept in a trial's learning curve.
CURVE_FIELDS = ("epoch", "val_accuracy", "train_loss")
_STATE_VERSION = 1
#: Full learning curves a curve-aware :class:`ParetoASHA` needs before it predicts (and so before it stops).
MIN_CURVES = 4
#: The quantile of the predicted final accuracy the curve rule takes as optimistic (the upper end of a 95%
#: prediction interval).
PREDICTION_QUANTILE = 0.975


def predict_final(pairs: list[tuple[float, float]], accuracy: float,
                  quantile: float = PREDICTION_QUANTILE) -> tuple[float, float] | None:
    """Predict a final accuracy from an earlier one, as ``(mean, optimistic)``.

    A least-squares line ``final = a + b * earlier`` is fitted on ``pairs`` (``(earlier, final)`` accuracies,
    fractions in [0, 1], of full learning curves seen so far); ``optimistic`` is the ``quantile`` of the
    prediction's Student-t distribution with ``n - 2`` degrees of freedom (0.975: the upper end of the 95%
    prediction interval). A parametric stand-in for the learning-curve extrapolation of Domhan et al. (IJCAI
    2015) fitted only on the study's own curves. None with fewer than :data:`MIN_CURVES` pairs.

    Raises:
        ValueError: ``quantile`` outside (0.5, 1).
    """
    if not 0.5 < quantile < 1:
        raise ValueError(f"quantile: must be in (0.5, 1), got {quantile!r}")
    if len(pairs) < MIN_CURVES:
        return None
    from scipy.stats import t as student

    x, y = np.array(pairs, dtype=float).T
    n = len(x)
    sxx = float(np.sum((x - x.mean()) ** 2))
    b = float(np.sum((x - x.mean()) * (y - y.mean())) / sxx) if sxx > 0 else 0.0
    a = float(y.mean() - b * x.mean())
    s = math.sqrt(float(np.sum((y - a - b * x) ** 2)) / (n - 2))
    mean = a + b * accuracy
    half = float(student.ppf(quantile, n - 2)) * s * math.sqrt(1 + 1 / n + ((accuracy - x.mean()) ** 2 / sxx
                                                                         if sxx > 0 else 0.0))
    return mean, mean + half


def dominated_by(vec: list[float | None], others: list[list[float | None]]) -> bool:
    """Whether ``vec`` (accuracy, then the other objectives in :func:`nas.objectives.spec` order, own units) is
    dominated by one of ``others``: a row with a higher accuracy and, on every other objective both know, at
    least as good a value (no more params, no less throughput)."""
    for other in others:
        if other[0] is None or vec[0] is None or other[0] <= vec[0]:
            continue
        if all(v is not None and w is not None and (w <= v if o.direction == "minimize" else w >= v)
               for o, v, w in zip(objectives.spec()[1:], vec[1:], other[1:], strict=False)):
            return True
    return False


def _check_int(field: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"{field}: must be an integer >= {least}, not {value!r}")
    return int(value)


def _add_to_curve(curve: list[dict[str, Any]], epoch: int, result: dict) -> None:
    """Append epoch ``epoch`` of ``result`` to a learning curve (a restarted trial's repeated epochs replace
    the later ones)."""
    while curve and curve[-1]["epoch"] >= epoch:
        curve.pop()
    curve.append({k: (epoch if k == EPOCH_FIELD else _finite(result[k])) for k in CURVE_FIELDS if k in result})


def per_epoch(curves: dict[str, list[dict[str, Any]]], tid: str, result: dict) -> int | None:
    """The epoch of ``result`` when it is a per-epoch result (``epoch`` and ``val_accuracy``, not a final
    result carrying the primary objective), after adding it to trial ``tid``'s curve in ``curves``;
    ``None`` for any other result."""
    epoch = _finite(result.get(EPOCH_FIELD))
    if epoch is None or objectives.primary().name in result or ACCURACY_FIELD not in result:
        return None
    _add_to_curve(curves.setdefault(tid, []), int(epoch), result)
    return int(epoch)


def record_stop(stopped: dict[str, dict[str, Any]], curves: dict[str, list[dict[str, Any]]], tid: str, epoch: int,
                rung: int) -> None:
    """Record trial ``tid`` as stopped at ``epoch`` by ``rung`` with its curve so far (the entry the driver
    reads to tell Optuna PRUNED), and drop its running curve from ``curves``."""
    stopped[tid] = {"epoch": epoch, "rung": rung, "curve": [dict(r) for r in curves.get(tid, [])]}
    curves.pop(tid, None)


def saved_epochs(stopped: dict[str, dict[str, Any]], max_t: int) -> int:
    """Epochs not trained thanks to stopping: the sum of ``max_t - epoch stopped at`` over ``stopped``."""
    return sum(max(0, int(max_t) - int(s["epoch"])) for s in stopped.values())


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, else ``None``."""
    if isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class ParetoASHA(FIFOScheduler):
    """Asynchronous successive halving that ranks a rung by non-dominated sorting of the objectives.

    See the module docstring for the algorithm. Each trial reports, per epoch, a dict with ``epoch``
    (1-based), ``val_accuracy`` and ``train_loss``; its config carries ``objectives_hint``
    (``{"params": ..., "throughput": ...}``). Results without ``epoch``, results without
    ``val_accuracy`` and final results (those carrying the primary objective, ``accuracy``) are let
    through (``CONTINUE``).

    Args:
        grace_period: epochs of the first rung; every trial trains at least this long.
        eta: reduction factor: rungs are ``eta`` times apart and a full rung keeps (at least) the top
            ``ceil(n / eta)`` of its ``n`` trials, plus its whole first front.
        max_t: the epochs of a full trial (the proxy's ``epochs``); rungs lie strictly below it.
        bounds: the hypervolume normalisation of the study (:class:`nas.objectives.HVBounds`); default
            :func:`nas.objectives.hv_bounds` (pass the study's own, :func:`nas.objectives.study_bounds`).
        curve_aware: learning-curve-aware stopping: a trial the rung's ranking would stop goes on unless
            even the optimistic end of the prediction of its final accuracy (:meth:`predict_final`, a line
            fitted on the full learning curves seen so far, 95% prediction interval) is dominated by a fully
            trained trial (:meth:`surely_dominated`); nobody stops before :data:`MIN_CURVES` full curves.

    Attributes:
        stopped: ``{trial_id: {"epoch": int, "rung": int, "curve": [{"epoch", "val_accuracy",
            "train_loss"}, ...]}}`` for each trial stopped: the epoch it stopped at, the rung that
            stopped it (the same epoch when results arrive every epoch) and its curve so far.

    Raises:
        ValueError: ``grace_period`` < 1, ``eta`` < 2 or ``max_t`` < ``grace_period`` (or not integers),
            or ``bounds`` not an ``HVBounds``; the message starts with the field's name (``eta: ...``).
    """

    _supports_buffered_results = False  # decide on every epoch's result, not on a batch of them

    def __init__(self, grace_period: int = 1, eta: int = 3, max_t: int = 10,
                 bounds: objectives.HVBounds | None = None, curve_aware: bool = False) -> None:
        super().__init__()
        self.curve_aware = bool(curve_aware)
        self._finished: list[dict[str, Any]] = []  # {"curve": {epoch: accuracy}, "values": objectives} of full trials
        self.grace_period = _check_int("grace_period", grace_period, 1)
        self.eta = _check_int("eta", eta, 2)
        self.max_t = _check_int("max_t", max_t, 1)
        if self.max_t < self.grace_period:
            raise ValueError(f"max_t: must be >= grace_period ({self.grace_period}), not {max_t!r}")
        if bounds is not None and not isinstance(bounds, objectives.HVBounds):
            raise ValueError(f"bounds: an nas.objectives.HVBounds is needed, not {type(bounds).__name__}")
        self.bounds = bounds if bounds is not None else objectives.hv_bounds()
        self._rungs: dict[int, dict[str, list[float | None]]] = {m: {} for m in self.rungs}
        self._curves: dict[str, list[dict[str, Any]]] = {}
        self.stopped: dict[str, dict[str, Any]] = {}

    # ---------------------------------------------------------------- rungs
    @property
    def rungs(self) -> list[int]:
        """The rung epochs, ascending: ``grace_period * eta**k`` below ``max_t``."""
        out, m = [], self.grace_period
        while m < self.max_t:
            out.append(m)
            m *= self.eta
        return out

    def rung_entries(self, epoch: int) -> dict[str, dict[str, float | None]]:
        """``{trial_id: {objective: value}}`` recorded at the rung ``epoch`` (own units; ``None`` = unknown).

        Raises:
            ValueError: ``epoch`` is not a rung.
        """
        names = objectives.names()
        return {tid: dict(zip(names, vec)) for tid, vec in self._rung(epoch).items()}

    def _rung(self, epoch: int) -> dict[str, list[float | None]]:
        if epoch not in self._rungs:
            raise ValueError(f"epoch: {epoch!r} is not a rung; rungs: {self.rungs}")
        return self._rungs[epoch]

    # ---------------------------------------------------------------- ranking
    def _normalised(self, vec: list[float | None]) -> list[float]:
        """Normalised values (1 = best); an unknown counts as the worst (0), an unknown (non-finite)
        accuracy below any known one (-1)."""
        out = []
        for k, (o, v, b) in enumerate(zip(objectives.spec(), vec, self.bounds.bounds)):
            if v is None:
                out.append(-1.0 if k == 0 else 0.0)
            else:
                out.append(o.normalise(v, b))
        return out

    def ranking(self, epoch: int) -> list[list[str]]:
        """The trials at the rung ``epoch`` as fronts (front 1 first), each ordered best first (see the
        module docstring).

        Raises:
            ValueError: ``epoch`` is not a rung.
        """
        return self._fronts(self._rung(epoch))

    def _fronts(self, entries: dict[str, list[float | None]]) -> list[list[str]]:
        ids = sorted(entries)
        if not ids:
            return []
        x = np.array([self._normalised(entries[t]) for t in ids], dtype=float)  # 1 = best
        return [self._order_front([ids[i] for i in idx], x[idx]) for idx in objectives.nondominated_sort(-x)]

    def _order_front(self, ids: list[str], x: np.ndarray) -> list[str]:
        contrib = _hv_contributions(x)
        crowd = objectives.crowding_distance(x)
        total = x.sum(axis=1)
        order = sorted(range(len(ids)), key=lambda i: (-contrib[i], -crowd[i], -total[i], ids[i]))
        return [ids[i] for i in order]

    def _survivors(self, entries: dict[str, list[float | None]]) -> set[str]:
        n = len(entries)
        if n < self.eta:
            return set(entries)
        fronts = self._fronts(entries)
        keep = max(math.ceil(n / self.eta), len(fronts[0]))
        flat = [t for front in fronts for t in front]
        return set(flat[:keep])

    def verdicts(self, epoch: int) -> dict[str, str]:
        """What each trial at the rung ``epoch`` would be told were it decided now, against the whole
        rung: ``{trial_id: CONTINUE or STOP}``. (The decision made when a trial arrived is this, taken
        on the entries recorded up to then.)

        Raises:
            ValueError: ``epoch`` is not a rung.
        """
        entries = self._rung(epoch)
        alive = self._survivors(entries)
        return {t: TrialScheduler.CONTINUE if t in alive else TrialScheduler.STOP for t in sorted(entries)}

    # ---------------------------------------------------------------- Ray Tune hooks
    def set_search_properties(self, metric: Any, mode: Any, **spec: Any) -> bool:
        """Accept whatever Ray passes: the objectives come from :mod:`nas.objectives`, not from ``metric``."""
        return True

    def _hint(self, trial: Trial, result: dict | None = None) -> list[float | None]:
        """The objectives other than accuracy: the result's own figures, else the config's hint."""
        config = getattr(trial, "config", None) or {}
        hint = config.get(HINT_KEY) if isinstance(config, dict) else None
        hint = hint if isinstance(hint, dict) else {}
        result = result or {}
        return [_finite(result[o.name]) if _finite(result.get(o.name)) is not None else _finite(hint.get(o.name))
                for o in objectives.spec()[1:]]

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        """Record the trial at any rung its epoch has reached (not yet recorded there) and decide.

        Returns ``STOP`` when the rule stops it at such a rung (or it was stopped before), else
        ``CONTINUE``.
        """
        tid = str(trial.trial_id)
        if tid in self.stopped:
            return TrialScheduler.STOP
        if _resumed(trial):  # promoted at the rung: it goes on to the end
            return TrialScheduler.CONTINUE
        epoch_i = per_epoch(self._curves, tid, result)
        if epoch_i is None:
            return TrialScheduler.CONTINUE  # not a per-epoch result (final, failure, or foreign)
        accuracy = _finite(result.get(ACCURACY_FIELD))
        hint = self._hint(trial, result)
        for m in self.rungs:
            if m > epoch_i:
                break
            entries = self._rungs[m]
            if tid in entries and m < epoch_i:
                continue  # decided at this rung already
            entries[tid] = [accuracy, *hint]  # a trial reporting this rung again replaces its entry
            if tid not in self._survivors(entries) and (not self.curve_aware
                                                         or self.surely_dominated(epoch_i, accuracy, hint)):
                record_stop(self.stopped, self._curves, tid, epoch_i, m)
                return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        curve = self._curves.pop(str(trial.trial_id), None) or []
        if _resumed(trial):
            return
        points = {int(r[EPOCH_FIELD]): r.get(ACCURACY_FIELD) for r in curve if r.get(ACCURACY_FIELD) is not None}
        if self.curve_aware and points and max(points) >= self.max_t:  # a full curve: the model learns from it
            self._finished.append({"curve": points, "values": [points[max(points)], *self._hint(trial, result)]})

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self._curves.pop(str(trial.trial_id), None)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._curves.pop(str(trial.trial_id), None)

    # ---------------------------------------------------------------- learning curves
    def predict_final(self, epoch: int, accuracy: float) -> tuple[float, float] | None:
        """The final accuracy (at ``max_t``) of a trial with ``accuracy`` at ``epoch``, as ``(mean, optimistic)``:
        :func:`predict_final` on the full learning curves this scheduler has seen, the optimistic end the upper
        end of the 95% prediction interval. None before :data:`MIN_CURVES` full curves reached ``epoch``."""
        pairs = [(f["curve"][epoch], f["values"][0]) for f in self._finished if epoch in f["curve"]]
        return predict_final(pairs, accuracy, PREDICTION_QUANTILE)

    def surely_dominated(self, epoch: int, accuracy: float | None, hint: list[float | None]) -> bool:
        """Whether even the optimistic prediction of the trial's final accuracy (:meth:`predict_final`) is
        dominated by a fully trained trial (:func:`dominated_by`). False when no prediction can be made yet."""
        if accuracy is None:
            return False
        pred = self.predict_final(epoch, accuracy)
        return pred is not None and dominated_by([pred[1], *hint], [f["values"] for f in self._finished])

    def debug_string(self) -> str:
        rungs = ", ".join(f"epoch {m}: {len(e)}" for m, e in self._rungs.items()) or "none"
        return (f"Using Pareto ASHA (grace_period={self.grace_period}, eta={self.eta}, max_t={self.max_t}): "
                f"rungs {rungs}; {len(self.stopped)} stopped, {self.epochs_saved()} epochs saved.")

    # ---------------------------------------------------------------- budget
    def epochs_saved(self, max_t: int | None = None) -> int:
        """Epochs not trained thanks to stopping: the sum of ``max_t - epoch stopped at`` over stopped
        trials (``max_t`` defaults to the scheduler's)."""
        return saved_epochs(self.stopped, self.max_t if max_t is None else max_t)

    # ---------------------------------------------------------------- state
    def get_state(self) -> dict[str, Any]:
        """The scheduler as a JSON-able dict: parameters, bounds, rungs with their entries (own units,
        ``None`` = unknown), stopped trials and the curves of trials still running."""
        names = objectives.names()
        return {
            "version": _STATE_VERSION,
            "grace_period": self.grace_period, "eta": self.eta, "max_t": self.max_t,
            "bounds": self.bounds.to_dict(),
            "objectives": list(names),
            "rungs": [{"epoch": m, "entries": {t: dict(zip(names, v)) for t, v in sorted(e.items())}}
                      for m, e in self._rungs.items()],
            "stopped": {t: {"epoch": s["epoch"], "rung": s["rung"], "curve": [dict(r) for r in s["curve"]]}
                        for t, s in self.stopped.items()},
            "curves": {t: [dict(r) for r in c] for t, c in self._curves.items()},
            "curve_aware": self.curve_aware,
            "finished": [{"curve": {str(e): a for e, a in f["curve"].items()}, "values": list(f["values"])}
                         for f in self._finished],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`get_state`'s dict: its parameters, bounds, rungs, stopped trials and curves
        replace this scheduler's (so a resumed search continues the same rungs).

        Raises:
            ValueError: not a state this version wrote (the message names the field), or objectives other
                than those now in force.
        """
        if not isinstance(state, dict):
            raise ValueError(f"state: a dict from get_state() is needed, not {type(state).__name__}")
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"version: scheduler state version {state.get('version')!r}; "
                             f"this vitnas reads {_STATE_VERSION}")
        names = objectives.names()
        if list(state.get("objectives", [])) != list(names):
            raise ValueError(f"objectives: the state has {state.get('objectives')!r}, the study {list(names)}")
        fresh = ParetoASHA(state.get("grace_period"), state.get("eta"), state.get("max_t"),
                           objectives.HVBounds.from_dict(state.get("bounds")))
        rungs = state.get("rungs")
        if not isinstance(rungs, list):
            raise ValueError("rungs: a list of {epoch, entries} is needed")
        for rung in rungs:
            try:
                m, entries = int(rung["epoch"]), rung["entries"]
                target = fresh._rung(m)
                for tid, vals in entries.items():
                    target[str(tid)] = [_finite(vals.get(n)) for n in names]
            except (KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"rungs: malformed rung {rung!r}") from exc
        try:
            stopped = {str(t): {"epoch": int(s["epoch"]), "rung": int(s.get("rung", s["epoch"])),
                                "curve": [dict(r) for r in s.get("curve", [])]}
                       for t, s in (state.get("stopped") or {}).items()}
            curves = {str(t): [dict(r) for r in c] for t, c in (state.get("curves") or {}).items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"stopped: malformed stopped trials or curves ({exc})") from exc
        self.grace_period, self.eta, self.max_t, self.bounds = fresh.grace_period, fresh.eta, fresh.max_t, fresh.bounds
        try:
            finished = [{"curve": {int(e): float(a) for e, a in f["curve"].items()},
                         "values": [_finite(v) for v in f["values"]]} for f in (state.get("finished") or [])]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"finished: malformed learning curves ({exc})") from exc
        self._rungs, self.stopped, self._curves = fresh._rungs, stopped, curves
        self.curve_aware, self._finished = bool(state.get("curve_aware", False)), finished

    def save(self, checkpoint_path: str) -> None:
        """Ray's checkpoint: :meth:`get_state` as JSON at ``checkpoint_path``."""
        with open(checkpoint_path, "w", encoding="utf-8") as fh:
            json.dump(self.get_state(), fh)

    def restore(self, checkpoint_path: str) -> None:
        """Ray's restore: :meth:`set_state` from the JSON :meth:`save` wrote."""
        with open(checkpoint_path, encoding="utf-8") as fh:
            self.set_state(json.load(fh))


class AccuracyASHA(AsyncHyperBandScheduler):
    """Ray Tune's ASHA on the per-epoch validation accuracy alone: the single-objective baseline (what a Ray
    Tune user stopping trials early in a multi-objective search would run today).

    Ray's ``AsyncHyperBandScheduler`` (one bracket; rungs at ``grace_period * eta**k`` epochs below
    ``max_t``, Ray's own rung at ``max_t`` left out so a fully trained trial is never pruned; a trial
    below the ``1 - 1/eta`` quantile of the accuracies already recorded at its rung stops;
    Li et al., arXiv 1810.05934), with what vitnas' driver needs of a scheduler, as :class:`ParetoASHA`
    offers it: ``stopped`` (trial id -> the epoch, rung and curve at which it stopped), ``get_state`` and
    ``epochs_saved``. Params and throughput play no part: a small, fast design with a low first-epoch
    accuracy stops as readily as a large, slow one. The state is not restored on resume (its rungs start
    empty); the stopped trials are PRUNED in the study all the same.

    Raises:
        ValueError: ``grace_period`` < 1, ``eta`` < 2 or ``max_t`` < ``grace_period``, as for ParetoASHA.
    """

    _supports_buffered_results = False

    def __init__(self, grace_period: int = 1, eta: int = 3, max_t: int = 10) -> None:
        grace_period = _check_int("grace_period", grace_period, 1)
        eta = _check_int("eta", eta, 2)
        max_t = _check_int("max_t", max_t, 1)
        if max_t < grace_period:
            raise ValueError(f"max_t: must be >= grace_period ({grace_period}), not {max_t!r}")
        super().__init__(time_attr=EPOCH_FIELD, metric=ACCURACY_FIELD, mode="max", max_t=max_t,
                         grace_period=grace_period, reduction_factor=eta, brackets=1, stop_last_trials=False)
        self.grace_period, self.eta, self.max_t = grace_period, eta, max_t
        self.stopped: dict[str, dict[str, Any]] = {}
        self._curves: dict[str, list[dict[str, Any]]] = {}

    def set_search_properties(self, metric: Any, mode: Any, **spec: Any) -> bool:
        """Keep accuracy whatever the searcher's metrics (Ray passes the multi-objective searcher's)."""
        return True

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        """ASHA's decision on a per-epoch result (``CONTINUE`` for any other result)."""
        tid = str(trial.trial_id)
        if tid in self.stopped:
            return TrialScheduler.STOP
        if _resumed(trial):  # promoted at the rung: it goes on to the end
            return TrialScheduler.CONTINUE
        epoch_i = per_epoch(self._curves, tid, result)
        if epoch_i is None or epoch_i >= self.max_t:  # fully trained: Ray's rung at max_t would prune it
            return TrialScheduler.CONTINUE
        if trial.trial_id not in self._trial_info:
            self.on_trial_add(tune_controller, trial)
        accuracy = _finite(result.get(ACCURACY_FIELD))
        decision = super().on_trial_result(tune_controller, trial, {
            EPOCH_FIELD: epoch_i, ACCURACY_FIELD: -1.0 if accuracy is None else accuracy})
        if decision == TrialScheduler.STOP:
            rung = max((m for m in self.rungs if m <= epoch_i), default=epoch_i)
            record_stop(self.stopped, self._curves, tid, epoch_i, rung)
        return decision

    @property
    def rungs(self) -> list[int]:
        """The rung epochs at which a trial can stop, ascending (below ``max_t``)."""
        return sorted(int(m) for m, _ in self._brackets[0]._rungs if m < self.max_t)

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        self._curves.pop(str(trial.trial_id), None)
        self._trial_info.pop(trial.trial_id, None)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self._curves.pop(str(trial.trial_id), None)
        self._trial_info.pop(trial.trial_id, None)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._curves.pop(str(trial.trial_id), None)
        self._trial_info.pop(trial.trial_id, None)

    def epochs_saved(self, max_t: int | None = None) -> int:
        """Epochs not trained thanks to stopping (as :meth:`ParetoASHA.epochs_saved`)."""
        return saved_epochs(self.stopped, self.max_t if max_t is None else max_t)

    def get_state(self) -> dict[str, Any]:
        """The stopped trials as a JSON-able dict (stored with the study for the record; not restored)."""
        return {"version": "asha", "grace_period": self.grace_period, "eta": self.eta, "max_t": self.max_t,
                "stopped": {t: {"epoch": s["epoch"], "rung": s["rung"], "curve": [dict(r) for r in s["curve"]]}
                            for t, s in self.stopped.items()}}


# ---------------------------------------------------------------------------- tie-breaks within a front
def _hv_contributions(x: np.ndarray) -> np.ndarray:
    """Hypervolume contribution of each row of ``x`` (normalised values, 1 = best) to the rows together:
    what :func:`nas.objectives.normalised_hypervolume` gives for the front minus the front without the row
    (the same unit cube and reference corner)."""
    pts = 1.0 - x  # minimisation form; a row with a value at 0 (or an unknown accuracy) adds nothing
    ref = [1.0] * x.shape[1]
    whole = objectives.hypervolume(pts, ref)
    return np.array([whole - objectives.hypervolume(np.delete(pts, i, axis=0), ref) for i in range(len(x))])
