"""Syne Tune's MOASHA as a Ray Tune scheduler, for the search benchmark (not part of vitnas).

MOASHA (Schmucker et al., arXiv 2106.12639; ``syne_tune.optimizer.schedulers.multiobjective.MOASHA``)
ranks the trials at a rung by non-dominated sorting with an epsilon-net inside each front and keeps the
top ``1/eta``. Syne Tune runs its own trials; here only its stopping decisions are used: each per-epoch
result of a vitnas trial (``epoch``, ``val_accuracy``, ``params``, ``throughput``) is handed to MOASHA's
``on_trial_result`` and its STOP/CONTINUE becomes Ray Tune's. The objectives are given to MOASHA as values
to minimise, ``1 - x`` of the study's own normalisation (:meth:`nas.objectives.HVBounds.normalise`), the
scale :class:`nas.engine.scheduler.ParetoASHA` ranks on, so the two rules differ only in how they rank.

Like ParetoASHA it records the trials it stops in ``stopped`` and offers ``get_state()``, which is what
``nas.engine.search.run_search(..., scheduler=...)`` needs to record them PRUNED.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from nas import objectives
from nas.engine.scheduler import ACCURACY_FIELD, EPOCH_FIELD, _finite, per_epoch, record_stop, saved_epochs

METRICS = ("accuracy_loss", "params_loss", "throughput_loss")


class MOASHAScheduler(FIFOScheduler):
    """Ray Tune ``TrialScheduler`` whose decisions are Syne Tune MOASHA's (one bracket, as ASHA)."""

    _supports_buffered_results = False

    def __init__(self, grace_period: int, eta: int, max_t: int, bounds: objectives.HVBounds | None = None,
                 seed: int = 0) -> None:
        from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

        super().__init__()
        self.grace_period, self.eta, self.max_t = grace_period, eta, max_t
        self.bounds = bounds or objectives.hv_bounds()
        self.moasha = MOASHA(config_space={}, metrics=list(METRICS), do_minimize=True, time_attr=EPOCH_FIELD,
                             max_t=max_t, grace_period=grace_period, reduction_factor=eta, brackets=1,
                             random_seed=seed)
        self._trials: dict[str, Any] = {}
        self._curves: dict[str, list[dict[str, Any]]] = {}
        self.stopped: dict[str, dict[str, Any]] = {}

    def set_search_properties(self, metric: Any, mode: Any, **spec: Any) -> bool:
        return True

    def _syne_trial(self, tid: str) -> Any:
        from syne_tune.backend.trial_status import Trial

        if tid not in self._trials:
            trial = Trial(trial_id=len(self._trials), config={}, creation_time=_dt.datetime.now())
            self.moasha.on_trial_add(trial)
            self._trials[tid] = trial
        return self._trials[tid]

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        tid = str(trial.trial_id)
        if tid in self.stopped:
            return TrialScheduler.STOP
        epoch_i = per_epoch(self._curves, tid, result)
        if epoch_i is None or epoch_i >= self.max_t:  # not a per-epoch result, or fully trained: never pruned
            return TrialScheduler.CONTINUE
        accuracy = _finite(result.get(ACCURACY_FIELD))
        params, throughput = _finite(result.get("params")), _finite(result.get("throughput"))
        norm = self.bounds.normalise([accuracy if accuracy is not None else 0.0,
                                      params if params is not None else self.bounds.bounds[1][1],
                                      throughput if throughput is not None else self.bounds.bounds[2][0]])
        metrics = dict(zip(METRICS, (1.0 - v for v in norm)))
        decision = self.moasha.on_trial_result(self._syne_trial(tid), {EPOCH_FIELD: epoch_i, **metrics})
        if str(decision).lower().endswith("stop"):
            record_stop(self.stopped, self._curves, tid, epoch_i, epoch_i)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._curves.pop(str(trial.trial_id), None)

    def get_state(self) -> dict[str, Any]:
        return {"version": "moasha", "stopped": {t: dict(s) for t, s in self.stopped.items()}}

    def epochs_saved(self, max_t: int | None = None) -> int:
        return saved_epochs(self.stopped, self.max_t if max_t is None else max_t)
