"""The driver's side of a trial: the only writer of the Optuna study.

:class:`StudyDriver` owns the study, its storage and its sampler, and lives in the driver process only:
Ray never holds it (Ray pickles and copies what it is given, and an Optuna study, sampler or SQLAlchemy
engine promises nothing about pickling). Ray Tune sees :class:`nas.engine.ray_backend.DriverSearcher`, a
:class:`~ray.tune.search.Searcher` that holds a plain handle and forwards to the driver registered under
it. The driver asks the study for a trial
(``study.ask()``: enqueued presets first, then the sampler), samples the genes through the search space,
decides what the trial needs (a reused result, a refusal, or training), hands Ray a plain config, and
when Ray reports the trial's end it stores the result through Optuna's public API (user attributes written
by :mod:`nas.study.record` on the trial it owns, ``study.tell``). Workers never open the storage, so a cluster worker needs no
database access.

Decisions, made with the canonical architecture key (:meth:`search_spaces.Architecture.canonical_key`):

- *reuse*: a proposal that builds the same model as a complete, trained trial reports that trial's
  objectives and attributes (``reused_from``) instead of training again;
- *refusal*: genes that already failed ``max_failures_per_arch`` times fail at once (``RepeatedFailure``),
  with the earlier reason;
- a trial that ends without a result (the time budget ran out, the worker died) fails with the reason
  ``stopped: ...``, or ``interrupted`` once :meth:`StudyDriver.interrupt` was called (Ctrl-C): after that
  the driver proposes nothing more.

The lookups are dictionaries keyed by the canonical key, built from the study once and updated as trials
end, so deciding costs the same whatever the study's size.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from search_spaces import SearchSpace

from .. import objectives
from ..study import is_infeasible, trained_epochs
from ..study.record import (
    read_pausing,
    read_promotion,
    save_pausing,
    save_promotion,
    save_scheduler_state,
    set_trial_attrs,
)
from .packing import ALONE_KEY, GPU_SHARE_KEY, PackingPlan, is_out_of_memory
from .scheduler import RESUME_KEY
from .settings import budget_violations
from .trial import RESULT_ATTRS

__all__ = ["StudyDriver", "STOPPED", "NOT_COUNTED", "MAX_REFUSALS"]

#: Reason stored on a trial that ended without a result of its own.
STOPPED = "stopped: the search ended before the trial finished"
#: Proposals in a row a driver refuses by their known cost before it stops proposing (the budgets are too tight
#: for what the sampler proposes).
MAX_REFUSALS = 500
#: Failure reasons that say nothing about the genes (not counted towards refusing them).
NOT_COUNTED = ("interrupted", "stopped", "RepeatedFailure")


class StudyDriver:
    """The searcher's logic over a multi-objective Optuna study; the study's only writer. Ray-free: Ray Tune
    reaches it through :class:`nas.engine.ray_backend.DriverSearcher` by a handle, never by pickling it.

    Args:
        study: the Optuna study (its sampler proposes; enqueued trials come first).
        space: the search space the genes are sampled from.
        img_size: the proxy's image size (canonical keys depend on the token grid).
        target: complete trials the study should hold; :meth:`suggest` says FINISHED once it does.
        max_failures_per_arch: failures after which the same genes are refused.
        target_img_size: the deployment image size (None: ``img_size``); the key that decides reuse
            covers the model built at both sizes.
        scheduler: the :class:`~nas.engine.scheduler.ParetoASHA` of the round (None: no early stopping); a trial it
            stopped ends PRUNED, with ``pruned_at_epoch``, its ``curve`` and its measured efficiency as user
            attributes, and the scheduler's state is stored with the study (``scheduler_state``) so a
            resumed search continues the same rungs.
        budgets: ``SearchConfig.budgets()``; each complete trial gets one Optuna constraint per budget
            (``Trial.set_constraint``, :func:`nas.engine.settings.budget_violations`) and the user attribute
            ``budget_violations`` with the budgets it breaks.
        epoch_budget: proxy epochs the study's trials may train in all (None: no limit): once the trials that
            ended have trained this many (complete ones their epochs, early-stopped ones up to their rung;
            reused results none), nothing new is proposed, whatever ``target`` and ``min_sampled``.
        min_sampled: designs the sampler must have proposed (trials without a ``preset`` user attribute that
            ended COMPLETE or PRUNED) before the search ends, whatever ``target``: the paper presets are a
            warm start, and a search that runs them samples at least as many designs of its own.
        rung, promote_after: promotion at one rung (``SearchConfig.promote_at``): until the trials that ended
            have trained ``promote_after`` epochs, each new trial pauses after ``rung`` epochs (``pause_at`` in
            its config; stored COMPLETE with ``paused_at``, not counted as complete); then :meth:`promote_due`
            is true and the search calls :meth:`promote`. A study that already holds full trained trials and
            no promotion (made before promotion existed) goes on without one.
    """

    def __init__(self, study: optuna.Study, space: SearchSpace, img_size: int, target: int,
                 max_failures_per_arch: int = 2,
                 target_img_size: int | None = None, budgets: dict[str, float] | None = None,
                 scheduler: Any = None, min_sampled: int = 0, epoch_budget: int | None = None,
                 channels: tuple[int, int] | None = None, bounds: objectives.HVBounds | None = None,
                 max_refusals: int = MAX_REFUSALS, rung: int | None = None,
                 promote_after: float | None = None) -> None:
        self.study, self.space, self.img_size, self.target = study, space, img_size, target
        self.target_img_size = target_img_size if target_img_size not in (None, img_size) else None
        self.budgets = dict(budgets or {})
        self.channels = channels
        self.bounds = bounds or objectives.hv_bounds()
        self.max_refusals = max_refusals
        self.refused = 0  # proposals refused before training (they broke a budget by their known cost)
        self.stalled = ""  # why suggest() gave up, when it did
        self.scheduler = scheduler
        self.pruned = 0
        self.max_failures = max_failures_per_arch
        self.live: dict[str, tuple[optuna.Trial, str]] = {}
        self.trained: dict[str, tuple[int, list[float], dict[str, Any]]] = {}
        self.failures: dict[str, list[tuple[int, str]]] = {}
        self.complete = 0
        self.min_sampled = min_sampled
        self.sampled = 0  # sampler-proposed (not preset) trials that ended COMPLETE or PRUNED
        self.epoch_budget = epoch_budget
        self.epochs_trained = 0  # proxy epochs trained by the trials that ended (COMPLETE or PRUNED)
        self.interrupted = False  # set by :meth:`interrupt` (Ctrl-C): no new proposal, unfinished = interrupted
        self.packing: PackingPlan | None = None  # set by the search on a GPU cluster with --gpus-per-trial auto
        self.shares: dict[str, float] = {}  # trial id -> the GPU share it was given (packed searches)
        self.retry: list[tuple[optuna.Trial, str]] = []  # ran out of GPU memory packed: to run again alone
        self.retried = 0
        self.paused = 0  # trials that paused at the promotion rung
        self.full = 0  # trials that trained the full proxy themselves (not paused, reused or refused)
        self.promote_after = promote_after
        self.custom_scheduler = False  # the caller's own scheduler (run_search(scheduler=...)): kept after promotion
        from search_spaces.presets import PRESETS

        # a proposal that builds a paper preset is labelled one, however it was proposed (enqueued or sampled)
        self.preset_keys = {self.key(a): n for n, a in PRESETS.items() if space.contains(a)}
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)):
            self._index(t.number, t.state, t.user_attrs, t.values)
        self.promotion = read_promotion(study)
        # pause new trials at the rung until the promotion, unless the study already went on without one
        self.rung = rung if rung and promote_after is not None and self.promotion is None and not self.full else None
        if self.rung is not None and read_pausing(study) != self.rung:
            save_pausing(study, self.rung)

    def key(self, arch: Any) -> str:
        """The canonical key of ``arch`` in this study: at the proxy's image size, and at the deployment size
        when it differs (two proposals with one key build the same models)."""
        key = arch.canonical_key(self.img_size)
        if self.target_img_size is not None:
            key += f" @{self.target_img_size}px " + arch.canonical_key(self.target_img_size)
        return key

    def remaining(self) -> int:
        """Trials still to run: complete ones up to ``target``, or sampled designs up to ``min_sampled``,
        whichever is more; 0 once ``epoch_budget`` is spent (0: the search is done)."""
        if self.epoch_budget is not None and self.epochs_trained >= self.epoch_budget:
            return 0
        if self.promote_due():  # the round ends; the search promotes, then goes on
            return 0
        if self.gate_waiting():  # only the front's resumes run; then the rest of the rung is decided
            return len(self._waiting_resumes())
        return max(self.target - self.complete, self.min_sampled - self.sampled, len(self.retry), 0)

    # ------------------------------------------------------------------ promotion
    def promote_due(self) -> bool:
        """Whether the trials paused at the rung have spent ``promote_after`` epochs. The promotion is
        synchronous: once it is due :meth:`remaining` is 0, the round proposes nothing more and its running
        trials pause too; the search promotes between rounds."""
        return self.rung is not None and self.epochs_trained >= (self.promote_after or 0)

    def promote(self, fronts: int, gate: float = 0.0) -> list[int]:
        """Promotion at the rung (successive halving with pause and resume, arXiv 1810.05934): the paused
        trials' first ``fronts`` non-dominated fronts (rung accuracy, params, throughput; budget-feasible ones
        when any is) resume to the full proxy, most accurate first, as enqueued trials (``resume_of``). With
        ``gate`` (a quantile in (0.5, 1)) the other paused trials are ``pending``: once those resumes have
        ended, :meth:`gate` resumes each one unless even that quantile of its predicted proxy accuracy is
        dominated; without it they stay stopped at the rung. The record (:func:`nas.study.record.save_promotion`)
        is written before the trials are enqueued and the step is idempotent, so a search killed in between
        finishes the same promotion when continued. Returns the promoted trial numbers (those enqueued now)."""
        self.rung = None
        record = self.promotion or read_promotion(self.study)
        if record is None:
            paused = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                      if t.user_attrs.get("paused_at") and t.values]
            feasible = [t for t in paused if not is_infeasible(t)] or paused
            ranks = objectives.nondominated_sort([objectives.loss_vector(t.values) for t in feasible]) if feasible else []
            chosen = [feasible[int(j)] for r in ranks[:fronts] for j in r]
            chosen.sort(key=lambda t: (-t.values[0], t.number))
            numbers = {t.number for t in chosen}
            pending = sorted((t for t in feasible if t.number not in numbers), key=lambda t: (-t.values[0], t.number)) \
                if gate else []
            record = {"rung": int(paused[0].user_attrs["paused_at"]) if paused else None,
                      "epochs": self.epochs_trained, "fronts": fronts,
                      "paused": [t.number for t in paused], "promoted": [t.number for t in chosen],
                      **({"gate": float(gate), "pending": [t.number for t in pending]} if pending else {})}
            save_promotion(self.study, record)
        self.promotion = record
        return self._enqueue_resumes(record)

    def gate_waiting(self) -> bool:
        """Whether the promotion's ``pending`` paused trials are still to be decided (:meth:`gate`)."""
        return bool(self.promotion and self.promotion.get("pending") and "gated" not in self.promotion)

    def _waiting_resumes(self) -> list[Any]:
        return [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                if t.user_attrs.get("resume_of") is not None]

    def gate_due(self) -> bool:
        """Whether :meth:`gate` can decide now: pending paused trials and no resume left to run."""
        return self.gate_waiting() and not self._waiting_resumes()

    def gate(self) -> list[int]:
        """The second step of the promotion: each ``pending`` paused trial (most accurate first) resumes unless
        even the ``gate`` quantile of its predicted proxy accuracy (:func:`nas.engine.scheduler.predict_final`
        on the (rung, final) accuracies of the trials that resumed) is dominated by a trial trained to the full
        proxy (:func:`nas.engine.scheduler.dominated_by`); the curve rule's test, with a quantile chosen on
        the recorded table (docs/benchmarks.md, "Promotion with a gate"). With fewer than
        :data:`nas.engine.scheduler.MIN_CURVES` resumed trials every pending trial resumes. The decision
        (``gated``: those resumed, ``gated_out``: those left stopped) is stored before the trials are enqueued.
        Returns the trial numbers enqueued now."""
        from .scheduler import dominated_by, predict_final

        record = dict(self.promotion or {})
        if "gated" not in record:
            trials = self.study.get_trials(deepcopy=False)
            full = [t for t in trials if t.state == TrialState.COMPLETE and t.values and not t.user_attrs.get("paused_at")
                    and not t.user_attrs.get("refused") and not is_infeasible(t)]
            pairs = [(trials[t.user_attrs["resume_of"]].values[0], t.values[0]) for t in full
                     if t.user_attrs.get("resume_of") is not None]
            kept, out = [], []
            for number in record["pending"]:
                values = list(trials[number].values)
                pred = predict_final(pairs, values[0], record["gate"])
                (out if pred is not None and dominated_by([pred[1], *values[1:]], [list(t.values) for t in full])
                 else kept).append(number)
            record.update(gated=kept, gated_out=out, promoted=[*record["promoted"], *kept])
            save_promotion(self.study, record)
        self.promotion = record
        return self._enqueue_resumes(record)

    def _enqueue_resumes(self, record: dict[str, Any]) -> list[int]:
        # resumes already under way or done (one failed as interrupted or stopped is enqueued again)
        started = {t.user_attrs.get("resume_of") for t in self.study.get_trials(deepcopy=False)
                   if t.state != TrialState.FAIL or t.user_attrs.get("fail_reason", "").split(":")[0] not in NOT_COUNTED}
        enqueued, trials = [], self.study.get_trials(deepcopy=False)
        for number in record["promoted"]:
            if number in started:
                continue
            t = trials[number]
            self.study.enqueue_trial(t.params, user_attrs={
                "resume_of": number, "resume_state": t.user_attrs.get("paused_state"),
                **({"resume_state_artifact": t.user_attrs["paused_state_artifact"]}
                   if t.user_attrs.get("paused_state_artifact") else {}),
                "resume_epoch": int(t.user_attrs["paused_at"]),
                **({"preset": t.user_attrs["preset"]} if t.user_attrs.get("preset") else {})})
            enqueued.append(number)
        return enqueued

    # ------------------------------------------------------------------ bookkeeping
    def _index(self, number: int, state: TrialState, attrs: dict[str, Any], values: Any) -> None:
        key = attrs.get("arch_key")
        if state == TrialState.COMPLETE and attrs.get("refused"):
            self.refused += 1  # never trained: counts as no complete trial and no sampled design
            return
        if state in (TrialState.COMPLETE, TrialState.PRUNED) and not attrs.get("preset") and not attrs.get("resumed_from"):
            self.sampled += 1
        self.epochs_trained += trained_epochs(state, attrs)
        if state == TrialState.COMPLETE and attrs.get("paused_at"):
            self.paused += 1  # the rung's accuracy: neither complete nor a result to reuse
            return
        if state == TrialState.COMPLETE and "reused_from" not in attrs:
            self.full += 1
        if state == TrialState.COMPLETE:
            self.complete += 1
            if key and "reused_from" not in attrs and key not in self.trained:
                self.trained[key] = (number, list(values), {k: attrs[k] for k in RESULT_ATTRS if k in attrs})
        elif state == TrialState.FAIL and key:
            reason = attrs.get("fail_reason", "")
            if reason.split(":")[0] not in NOT_COUNTED:
                self.failures.setdefault(key, []).append((number, reason))

    def _known(self, key: str) -> dict[str, Any] | None:
        """The result this proposal gets without training: a reused one, a refusal, or None."""
        if key in self.trained:
            number, values, attrs = self.trained[key]
            return {**dict(zip(objectives.names(), values, strict=True)), **attrs, "reused_from": number}
        failures = self.failures.get(key, [])
        if len(failures) >= self.max_failures:
            number, reason = failures[-1]
            return {"fail_reason": f"RepeatedFailure: these genes failed {len(failures)} times (last: trial "
                                   f"{number}, {reason}); not retried"}
        return None

    #: What :meth:`suggest` returns once the search is done (Ray Tune's ``Searcher.FINISHED``).
    FINISHED = "FINISHED"

    # ------------------------------------------------------------------ Searcher API (through DriverSearcher)
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """A new proposal as a plain config, or ``FINISHED`` once :meth:`remaining` is 0."""
        if self.retry and not self.interrupted:  # out of GPU memory while packed: the same trial, alone
            trial, key = self.retry.pop(0)
            self.live[trial_id] = (trial, key)
            self.shares[trial_id] = 1.0
            self.retried += 1
            return {"arch": trial.user_attrs["arch"], "number": trial.number, "known": None, GPU_SHARE_KEY: 1.0,
                    ALONE_KEY: True}
        if self.remaining() <= 0 or self.interrupted:
            return self.FINISHED
        for _ in range(self.max_refusals):
            trial = self.study.ask()
            arch = self.space.suggest(trial)
            key = self.key(arch)
            preset = self.preset_keys.get(key) if "preset" not in trial.user_attrs else None
            set_trial_attrs(trial, {"arch": arch.to_dict(), "arch_key": key, "preset": preset})
            known = self._known(key)
            costs = self._known_costs(arch) if known is None else {}
            broken = {k: v for k, v in budget_violations(self.budgets, costs, known_only=True).items() if v > 0}
            if broken:  # refused before training: the sampler is told, and asked again
                self.refuse(trial, costs, broken)
                continue
            self.live[trial_id] = (trial, key)
            config = {"arch": arch.to_dict(), "number": trial.number, "known": known}
            resume_of = trial.user_attrs.get("resume_of")
            if resume_of is not None:  # promoted at the rung: the paused run goes on
                config.update({"known": None, RESUME_KEY: trial.user_attrs.get("resume_state")})
                if trial.user_attrs.get("resume_state_artifact"):  # for a worker without the run folder
                    config["resume_artifact"] = trial.user_attrs["resume_state_artifact"]
                set_trial_attrs(trial, {"resumed_from": {"trial": int(resume_of),
                                                         "epoch": int(trial.user_attrs["resume_epoch"])}})
            elif self.rung is not None and known is None:
                config["pause_at"] = self.rung
            if self.packing is not None:
                self.shares[trial_id] = config[GPU_SHARE_KEY] = self.packing.share()
            return config
        self.stalled = (f"{self.max_refusals} proposals in a row broke the budgets by their known cost "
                        f"({', '.join(f'{k} {v:,.6g}' for k, v in self.budgets.items())}); loosen a budget or narrow "
                        "the space to smaller designs")
        return self.FINISHED

    def _known_costs(self, arch: Any) -> dict[str, Any]:
        """The costs of ``arch`` known without training: its exact params at the deployment shape (when the
        driver knows the data set's channels and classes)."""
        if self.channels is None or "max_params" not in self.budgets:
            return {}
        from search_spaces.extremes import count_params

        return {"params": count_params(arch, self.target_img_size or self.img_size, *self.channels)}

    def refuse(self, trial: optuna.Trial, costs: dict[str, Any], broken: dict[str, float]) -> None:
        """Store ``trial`` as refused before training: COMPLETE and infeasible (one Optuna constraint per budget,
        > 0 for those ``broken``), so every constrained sampler ranks it below any feasible design; its known
        ``costs`` as objectives, the others at their worst (:meth:`nas.objectives.HVBounds.worst`: accuracy at
        chance, as untrained); user attributes ``refused`` (the budgets broken, by how much) and
        ``budget_violations``. No epoch is trained; it counts as no complete trial."""
        values = [float(costs[name]) if costs.get(name) is not None else worst
                  for name, worst in zip(objectives.names(), self.bounds.worst(), strict=True)]
        for name, amount in budget_violations(self.budgets, costs, known_only=True).items():
            trial.set_constraint(name, amount)
        set_trial_attrs(trial, {"refused": dict(broken), "budget_violations": dict(broken),
                                **{k: v for k, v in costs.items() if k not in objectives.names()}})
        self.study.tell(trial, values)
        self._index(trial.number, TrialState.COMPLETE, {"refused": broken}, values)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        """Store the trial's end: COMPLETE with its objectives, or FAIL with its reason."""
        entry = self.live.pop(trial_id, None)
        if entry is None:
            return
        trial, _ = entry
        result = _unflatten(result or {})
        share = self.shares.pop(trial_id, None)
        if self.packing is not None:
            self.packing.observe(result, alone=share == 1.0)
            if share is not None and share < 1.0 and is_out_of_memory(result.get("fail_reason")) \
                    and not self.interrupted:  # packing's doing, not the design's: run it again, alone
                self.packing.on_out_of_memory()
                self.retry.append(entry)
                return
        if result.get("refused"):  # measured by the worker before training, over a budget
            measured = {k: result[k] for k in (*objectives.names(), "flops", "peak_memory", "target",
                                               "throughput_detail") if result.get(k) is not None}
            self.refuse(trial, measured, dict(result["refused"]))
            return
        names = objectives.names()
        if all(result.get(name) is not None for name in names):
            set_trial_attrs(trial, {name: result.get(name) for name in (*RESULT_ATTRS, "reused_from")})
            values = [float(result[name]) for name in names]
            if self.budgets:
                violations = budget_violations(self.budgets, result)
                for name, amount in violations.items():
                    trial.set_constraint(name, amount)
                set_trial_attrs(trial, {"budget_violations": {k: v for k, v in violations.items() if v > 0}})
            self.study.tell(trial, values)
            self._index(trial.number, TrialState.COMPLETE, trial.user_attrs, values)
            if self.scheduler is not None:
                save_scheduler_state(self.study, self.scheduler.get_state())
            return
        stopped = self.scheduler.stopped.get(str(trial_id)) if self.scheduler is not None else None
        if stopped is not None:
            self._prune(trial, stopped, result)
            return
        if self.interrupted:  # stopped (or killed by the same Ctrl-C) without a result of its own
            self._fail(trial, "interrupted")
            return
        self._fail(trial, result.get("fail_reason") or STOPPED, result.get("traceback"))

    def _prune(self, trial: optuna.Trial, stopped: dict[str, Any], result: dict[str, Any]) -> None:
        """PRUNED, not COMPLETE: the trial's last result is an early epoch's (issue: Ray tells a searcher a
        stopped trial's last result as if it were final)."""
        set_trial_attrs(trial, {"pruned_at_epoch": int(stopped["epoch"]), "curve": stopped.get("curve", []),
                                **{name: result.get(name) for name in ("params", "throughput", *RESULT_ATTRS)
                                   if name != "curve"}})
        self.study.tell(trial, state=TrialState.PRUNED)
        self.pruned += 1
        self._index(trial.number, TrialState.PRUNED, trial.user_attrs, None)
        save_scheduler_state(self.study, self.scheduler.get_state())

    def interrupt(self) -> None:
        """Stop proposing (Ctrl-C): trials that end from now on without their objectives fail as ``interrupted``
        (not counted against their genes; a rerun of the search continues the study)."""
        self.interrupted = True

    def stop_all(self, reason: str = STOPPED) -> list[int]:
        """Fail every trial this driver handed out that has not ended (e.g. Ray stopped it); their numbers.
        After :meth:`interrupt` the reason is ``interrupted``."""
        if self.interrupted:
            reason = "interrupted"
        numbers = []
        for trial_id in list(self.live):
            trial, _ = self.live.pop(trial_id)
            self._fail(trial, reason)
            numbers.append(trial.number)
        if self.interrupted:
            numbers += self.abandon_retries("interrupted")
        return numbers

    def abandon_retries(self, reason: str = STOPPED) -> list[int]:
        """Fail the trials waiting to run again alone (the search ended first); their numbers."""
        numbers = []
        while self.retry:
            trial, _ = self.retry.pop(0)
            self._fail(trial, reason)
            numbers.append(trial.number)
        return numbers

    def _fail(self, trial: optuna.Trial, reason: str, tb: str | None = None) -> None:
        set_trial_attrs(trial, {"fail_reason": reason[:500], "traceback": tb or None})
        self.study.tell(trial, state=TrialState.FAIL)
        self._index(trial.number, TrialState.FAIL, trial.user_attrs, None)


def _unflatten(result: dict[str, Any]) -> dict[str, Any]:
    """Ray Tune hands searchers results with nested dicts flattened (``target/img_size``): rebuild the
    nested attributes of :data:`~nas.engine.trial.RESULT_ATTRS` (``target``, ``throughput_detail``)."""
    out: dict[str, Any] = {}
    for key, value in result.items():
        head, sep, rest = key.partition("/")
        if sep and (head in RESULT_ATTRS or head == "refused"):
            node = out.setdefault(head, {})
            *path, leaf = rest.split("/")
            for part in path:
                node = node.setdefault(part, {})
            node[leaf] = value
        else:
            out[key] = value
    return out
