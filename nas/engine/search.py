"""The search: Ray Tune fans proxy-training trials out, Optuna decides what to try and keeps the front.

Python API (the CLI is a thin layer over it)::

    from nas import SearchConfig, run_search
    study = run_search(SearchConfig(study="digits", trials=12))

The parts, one job each: :mod:`nas.engine.settings` (settings, sampler factory, progress events),
:mod:`nas.engine.trial` (what a worker does with one proposal), :mod:`nas.engine.driver` (the only writer of the study:
sampling, reuse, refusals, storing results), :mod:`nas.engine.ray_backend` (Ray start-up and one round under
``ray.tune.Tuner``) and this module, the round loop.

``trials`` is the number of *finished* (complete) trials the study should hold: running the same search
again continues a study to that target (trials left RUNNING by a killed process are failed with the
reason ``interrupted``). A first Ctrl-C (SIGINT) stops the search: no new trial or round starts, the
running trials are failed as ``interrupted``, Ray shuts down and :func:`run_search` raises
:class:`KeyboardInterrupt` (what finished stays in the study; running the search again continues it); a
second Ctrl-C raises at once. Identical genes are never trained twice in one study: a trial whose genes
match a complete trial reuses that trial's stored result (``reused_from``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import optuna

from search_spaces import SearchSpace
from search_spaces.presets import PRESETS
from search_spaces.space import SpaceError

from .. import objectives
from ..study import StudyLease, StudyMeta, create_or_load_study, mark_interrupted, open_storage, read_meta
from ..study.record import read_scheduler_state
from .settings import SAMPLERS, SearchConfig, SearchError, TrialEvent, make_sampler

__all__ = ["SAMPLERS", "SearchConfig", "SearchError", "TrialEvent", "run_search", "make_sampler"]


def _enqueue_presets(study: optuna.Study, space: SearchSpace) -> list[str]:
    """Enqueue the presets inside ``space`` that the study has not seen yet; returns their names."""
    seen = {t.user_attrs.get("preset") for t in study.get_trials(deepcopy=False)}
    names = []
    for name, arch in PRESETS.items():
        if name in seen or not space.contains(arch):
            continue
        study.enqueue_trial(space.to_params(arch), user_attrs={"preset": name})
        names.append(name)
    return names


def run_search(config: SearchConfig, progress: Callable[[TrialEvent], None] | None = None,
               scheduler: Any = None) -> optuna.Study:
    """Run (or continue) a search until the study holds ``config.target_trials`` complete trials and, with
    ``trials`` left at its default and the paper presets on, at least as many sampled designs (COMPLETE or
    PRUNED) as presets; or until ``config.epoch_budget`` proxy epochs are spent.

    ``scheduler``: a Ray Tune ``TrialScheduler`` to stop trials early instead of the one ``config`` names
    (for comparisons, e.g. another multi-objective rule); it must record the trials it stops in a
    ``stopped`` dict and offer ``get_state()``, as :class:`nas.engine.scheduler.ParetoASHA` does.

    Raises:
        SearchError, StudyError, SpaceError, DataError: bad settings, storage, space or data (checked
        before anything is written).
        KeyboardInterrupt: Ctrl-C (SIGINT) stopped the search; the study keeps what finished, and the trials
        that were running are failed as ``interrupted``.
    """
    from trainers import load_dataset

    config.validate()
    space = SearchSpace.from_file(config.config) if config.config else (config.space or SearchSpace())
    # Check the data before touching the study: a missing data set must not leave a half-made study.
    data = load_dataset(config.dataset, config.data_dir, train_subset=config.train_subset,
                        val_subset=config.val_subset, img_size=config.img_size, download=config.download)
    space = space.for_image(data.img_size)
    if config.target_img_size and config.target_img_size != data.img_size:
        try:
            space = space.for_image(config.target_img_size)
        except SpaceError as exc:
            raise SearchError(f"target_img_size: {config.target_img_size} px fits no patch size of the space at "
                              f"{data.img_size} px ({exc})") from None
    storage = open_storage(config.storage)
    # Join a cluster before touching the study, so a wrong address changes nothing stored.
    ray_started = False
    if config.address:
        from .ray_backend import start_ray

        ray_started = start_ray(config.address)
    if config.max_params is not None:  # a budget no design of the space meets: refused before anything is stored
        from search_spaces.extremes import params_range

        size = config.target_img_size or data.img_size
        smallest = params_range(space, size, data.in_chans, data.num_classes)[0]
        if config.max_params < smallest:
            raise SearchError(f"max_params: {config.max_params:,.0f} is below the smallest model the space can build "
                              f"at {size} px ({smallest:,} params); allowed: >= {smallest:,}")
    meta = config.study_meta(data, space)
    study = create_or_load_study(storage, config.study, meta=meta, derive=lambda m: _derived(m, space))
    meta = read_meta(study)
    lease = StudyLease(study)  # refuses a study another live search drives; renewed while we run
    try:
        return _drive(config, space, study, meta, storage, data, ray_started, progress, scheduler)
    finally:
        lease.release()


def _derived(meta: StudyMeta, space: SearchSpace) -> dict[str, Any]:
    """The record's costly derived field: the hypervolume's bounds, fixed before the first trial (params
    counted exactly at the deployment shape over the space's extremes)."""
    from search_spaces.extremes import params_range

    size = (meta.target or {}).get("img_size") or meta.img_size
    return {"hv_bounds": objectives.hv_bounds(meta.num_classes,
                                              params_range(space, size, meta.in_chans, meta.num_classes)).to_dict()}


def _drive(config: SearchConfig, space: SearchSpace, study: optuna.Study, meta: StudyMeta,
           storage: optuna.storages.BaseStorage, data: Any, ray_started: bool,
           progress: Callable[[TrialEvent], None] | None, scheduler: Any = None) -> optuna.Study:
    """The round loop: rounds of trials until the target of complete trials is reached, the time budget is
    spent, or two rounds in a row complete nothing (every proposal failing)."""
    for number in mark_interrupted(study, storage):
        if progress:
            progress(TrialEvent("fail", number, reason="interrupted"))
    if config.presets and config.sampler != "knowncost":  # knowncost scores the presets by their known costs
        _enqueue_presets(study, space)
    # By default the presets are a warm start, not the budget: as many sampled designs as the study has presets.
    presets = sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get("preset")) if config.warm_start else 0

    from .driver import StudyDriver
    from .ray_backend import start_ray

    driver = StudyDriver(study, space, data.img_size, config.target_trials, config.max_failures_per_arch,
                         target_img_size=config.target_img_size, budgets=config.budgets(),
                         min_sampled=presets, epoch_budget=config.epoch_budget,
                         channels=(data.in_chans, data.num_classes), bounds=objectives.study_bounds(meta),
                         rung=config.rung_epochs, promote_after=config.promote_after)
    driver.custom_scheduler = scheduler is not None
    # before the promotion the trials pause at the rung: their scheduler's last epoch is the rung's
    driver.scheduler = scheduler if scheduler is not None else _scheduler(config, study, meta, driver.rung)
    if driver.promotion is not None or driver.promote_due():  # finish (or make) the promotion of a continued study
        _promote(config, driver, study, meta, progress)
    if driver.remaining() <= 0:
        if ray_started:
            import ray

            ray.shutdown()
        return study
    restore = _catch_sigint(driver)  # before Ray starts: a Ctrl-C from here on stops the search cleanly
    try:
        started_ray = False  # for the finally below, should start_ray itself be interrupted
        started_ray = start_ray(config.address) or ray_started
        driver.packing = _packing_plan(config)
        _run_rounds(config, driver, study, meta, data, progress)
    finally:
        try:
            if started_ray or ray_started:
                import ray

                ray.shutdown()
        finally:
            restore()
    if driver.interrupted:
        raise KeyboardInterrupt("vitnas search interrupted")
    return study


def _scheduler(config: SearchConfig, study: optuna.Study, meta: StudyMeta | None = None,
               max_t: int | None = None) -> Any:
    """The Pareto-aware successive-halving scheduler (None without early stopping), continuing the rungs
    the study stored when they were made with the same grace period, eta and epochs (``meta``: the study's
    record, read when not given; ``max_t``: the trials' last epoch, ``config.epochs`` when None, the rung's
    while trials pause at the promotion rung)."""
    max_t = max_t or config.epochs
    if not config.early_stopping or max_t <= config.grace_period:
        return None
    from .scheduler import AccuracyASHA, ParetoASHA

    if config.scheduler == "asha":
        return AccuracyASHA(grace_period=config.grace_period, eta=config.eta, max_t=max_t)

    scheduler = ParetoASHA(grace_period=config.grace_period, eta=config.eta, max_t=max_t,
                           bounds=objectives.study_bounds(meta or read_meta(study)))
    state = read_scheduler_state(study)
    if state is not None and state.get("version") != "asha" and (
            state.get("grace_period"), state.get("eta"), state.get("max_t")) == (config.grace_period, config.eta,
                                                                                  max_t):
        scheduler.set_state(state)
    scheduler.curve_aware = config.scheduler == "curve"  # the rule is the search's, whatever the stored state's
    return scheduler


def _catch_sigint(driver: Any, message: bytes = b"\nvitnas: stopping after Ctrl-C; the running trials are kept as "
                                                 b"'interrupted' (press Ctrl-C again to force)\n") -> Callable[[], None]:
    """Make the first SIGINT call ``driver.interrupt()`` (stop proposing, stop the round) and a second one
    raise :class:`KeyboardInterrupt` at once; returns the function restoring the previous handler. Only in
    the main thread (where Python delivers signals); elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGINT)
    if previous is None:  # installed outside Python: put Python's default back afterwards
        previous = signal.default_int_handler

    def on_sigint(signum: int, frame: Any) -> None:
        if driver.interrupted:
            raise KeyboardInterrupt
        driver.interrupt()
        try:
            os.write(2, message)
        except OSError:
            pass

    signal.signal(signal.SIGINT, on_sigint)
    return lambda: signal.signal(signal.SIGINT, previous)


def _packing_plan(config: SearchConfig) -> Any:
    """The :class:`nas.engine.packing.PackingPlan` of a search on a GPU cluster with ``--gpus-per-trial auto``
    (None otherwise: a CPU search runs as before, one trial at a time unless asked). The GPU memory is this
    machine's first GPU's, else 16 GiB (a cluster whose head has no GPU)."""
    from .ray_backend import cluster_gpus

    if not config.packed(cluster_gpus()):
        return None
    import torch

    from .packing import PackingPlan
    from .settings import MAX_PER_GPU

    memory = torch.cuda.mem_get_info(0)[1] if torch.cuda.is_available() else 16 * 2**30
    return PackingPlan(gpu_memory=float(memory), max_per_gpu=MAX_PER_GPU)


def _cost_context(config: SearchConfig, driver: Any, meta: StudyMeta) -> Any:
    """The :class:`nas.engine.known_cost.CostContext` of a ``knowncost`` search (None for other samplers): the
    space at the proxy's size, the deployment shape, the study's bounds, the budgets, and the presets (as
    candidates, trained only when their known costs can move the front)."""
    if config.sampler != "knowncost":
        return None
    from .known_cost import CostContext

    presets = tuple((name, driver.space.to_params(arch)) for name, arch in PRESETS.items()
                    if config.presets and driver.space.contains(arch))
    return CostContext(driver.space, driver.target_img_size or driver.img_size, *driver.channels,
                       bounds=objectives.study_bounds(meta), max_params=config.max_params,
                       min_throughput=config.min_throughput, presets=presets)


def _promote(config: SearchConfig, driver: Any, study: optuna.Study, meta: StudyMeta,
             progress: Callable[[TrialEvent], None] | None) -> None:
    """Promotion at the rung (:meth:`nas.engine.driver.StudyDriver.promote`, then its gate once the front's
    resumes have ended, :meth:`~nas.engine.driver.StudyDriver.gate`); the scheduler becomes the full proxy's
    (unless the caller gave its own), and a ``promoted`` event says what resumes."""
    fresh = driver.promotion is None
    numbers = driver.promote(config.promote_fronts, config.promote_gate)
    if not driver.custom_scheduler:
        driver.scheduler = _scheduler(config, study, meta)
    if progress and (fresh or numbers):
        record = driver.promotion
        pending = (f"; the other {len(record['pending'])} resume after them unless even their optimistic predicted "
                   f"accuracy is dominated") if record.get("pending") else ""
        reason = (f"promotion at epoch {record['rung']}: {len(record['promoted'])} of {len(record['paused'])} paused "
                  f"trials resume ({record['fronts']} non-dominated fronts), most accurate first: "
                  f"{', '.join(map(str, record['promoted']))}{pending}") if record["paused"] else \
            "promotion: no trial paused at the rung; every trial trains the full proxy from now on"
        progress(TrialEvent("promoted", -1, metrics=dict(record), reason=reason))
    if driver.gate_due():
        gated = "gated" in (driver.promotion or {})
        numbers = driver.gate()
        if progress and (not gated or numbers):
            record = driver.promotion
            reason = (f"promotion gate: {len(record['gated'])} of {len(record['pending'])} other paused trials resume "
                      f"(not surely dominated at quantile {record['gate']:g}): {', '.join(map(str, record['gated'])) or '-'}")
            progress(TrialEvent("promoted", -1, metrics=dict(record), reason=reason))


def _run_rounds(config: SearchConfig, driver: Any, study: optuna.Study, meta: StudyMeta, data: Any,
                progress: Callable[[TrialEvent], None] | None) -> None:
    from .ray_backend import run_round

    deadline = time.monotonic() + config.timeout if config.timeout else None
    stalled = 0
    while not driver.interrupted:
        if driver.promote_due() or driver.gate_due():  # the rung's epochs are spent (or its front's resumes): promote
            _promote(config, driver, study, meta, progress)
        if (remaining := driver.remaining()) <= 0:
            break
        budget = None if deadline is None else deadline - time.monotonic()
        if budget is not None and budget <= 0:
            break
        before = (driver.complete, getattr(driver, "pruned", 0), getattr(driver, "paused", 0))
        # Reseed per round from the study's size, so a continued study does not replay the
        # proposals of its first run (NSGA-II's first generation and random sampling are seeded).
        study.sampler = make_sampler(config.sampler, config.seed + len(study.trials), config.target_trials,
                                     meta.population_size, context=_cost_context(config, driver, meta))
        run_round(config, driver, remaining, budget, data, progress)
        # A round whose trials were all stopped early made progress (the rungs filled); one where every
        # proposal failed did not.
        if getattr(driver, "stalled", ""):  # every proposal of a round broke a budget by its known cost
            if progress:
                progress(TrialEvent("stalled", -1, reason=driver.stalled))
            break
        stalled = stalled + 1 if (driver.complete, getattr(driver, "pruned", 0), getattr(driver, "paused", 0)) == before \
            else 0
        if stalled >= 2 and not driver.interrupted:
            if progress:
                progress(TrialEvent("stalled", -1, reason="two rounds in a row completed no trial; stopping"))
            break
    driver.abandon_retries()
