"""``vitnas retrain``: confirm chosen designs from scratch with several seeds under a longer protocol.

A search ranks designs by a short proxy (docs/benchmarks.md, "Proxy fidelity": the default 6-epoch proxy
agrees with 5x longer training at Kendall tau 0.27, and a second seed moves a design by up to 2.6 points).
:func:`run_retrain` trains the chosen designs again, each under ``seeds`` seeds, for ``epochs`` epochs
(default 5x the search's) on ``train_subset`` training images (default: all of the data set's training
split), and stores each run with the design it confirms (:func:`nas.study.record.save_confirmation`). The
study then shows, per design, the proxy's accuracy and the confirmed mean, standard deviation and number
of seeds (:func:`nas.study.front.confirmation`); the front, ``--pick`` and the knee use confirmed
accuracies where a design has them.

The runs are fanned out on Ray as search trials are (``gpus_per_trial``, ``address``), through the same
boundary: Ray gets plain jobs and handles, never the study. Each run is stored the moment it ends, so a
retrain stopped by Ctrl-C or killed continues when the same command runs again, and never trains a
(design, seed, protocol) twice.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from ray import tune

from ..study import DEFAULT_STORAGE, StudyError, get_trial, load_study, pareto_front, read_meta
from ..study.front import confirmation_runs, resolve_trained
from ..study.record import save_confirmation
from .ray_backend import InterruptStopper, cluster_gpus, register, release, resolve, start_ray
from .settings import SearchError

__all__ = ["RetrainConfig", "run_retrain", "select_trials", "DEFAULT_SEEDS", "EPOCHS_FACTOR"]

#: Seeds per design by default.
DEFAULT_SEEDS = 3
#: Default retrain epochs: this many times the search's proxy epochs.
EPOCHS_FACTOR = 5


@dataclass
class RetrainConfig:
    """Settings of one ``vitnas retrain``.

    Attributes:
        study, storage: the study whose designs are confirmed (its record gives the data set, image size and
            validation split).
        trials: trial numbers to confirm; top: the ``top`` most accurate members of the search's front (by the
            proxy); front: that whole front. Exactly one of them (default: the whole front).
        epochs: training epochs per run (None: :data:`EPOCHS_FACTOR` x the search's epochs).
        seeds: seeds per design (0, 1, ..., seeds - 1).
        train_subset: training images (None: all of the data set's training split).
        data_dir, download: where the data set is (as ``vitnas search``).
        run_dir: where the retrained weights go (``RUN_DIR/<study>/confirm/``).
        cpus_per_trial, gpus_per_trial, max_concurrent, address, timeout, artifact_store: as ``vitnas search``
            (the retrained weights go to the artifact store too; default ``RUN_DIR/artifacts``).
    """

    study: str = "digits"
    storage: str = DEFAULT_STORAGE
    trials: list[int] | None = None
    top: int | None = None
    front: bool = False
    epochs: int | None = None
    seeds: int = DEFAULT_SEEDS
    train_subset: int | None = None
    data_dir: str | None = None
    download: bool = False
    run_dir: str = "runs"
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0
    address: str | None = None
    timeout: float | None = None
    artifact_store: str | None = None

    def validate(self) -> None:
        """Raise :class:`SearchError` naming the first setting outside its allowed values."""
        chosen = [name for name, on in (("trials", self.trials is not None), ("top", self.top is not None),
                                        ("front", self.front)) if on]
        if len(chosen) > 1:
            raise SearchError(f"{chosen[1]}: choose designs one way, with trials, top or front (got {', '.join(chosen)})")
        for name in ("seeds", "epochs", "top", "train_subset"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise SearchError(f"{name}: must be an integer >= 1, got {value!r}")
        if self.trials is not None and (not self.trials or any(isinstance(n, bool) or not isinstance(n, int) or n < 0
                                                                for n in self.trials)):
            raise SearchError(f"trials: a list of trial numbers >= 0 is needed, got {self.trials!r}")


def select_trials(study: optuna.Study, config: RetrainConfig) -> list[optuna.trial.FrozenTrial]:
    """The trained complete trials ``config`` chooses (a reused result resolves to the trial that trained it),
    in the order given (``trials``) or best proxy accuracy first (``top``, ``front``: of the search's front by
    the proxy, so running the same command again chooses the same designs).

    Raises:
        StudyError: an unknown or unfinished trial, or a study with no complete trial.
    """
    if config.trials is not None:
        chosen = [get_trial(study, n, finished=True) for n in config.trials]
    else:
        # The search's own front and order (the proxy's), so the same command chooses the same designs
        # however their confirmations came out.
        front = sorted(pareto_front(study, confirmed=False), key=lambda t: (-t.values[0], t.number))
        if not front:
            raise StudyError(f"trials: study {study.study_name!r} has no complete trial to retrain")
        chosen = front[: config.top] if config.top is not None else front
    out, seen = [], set()
    for t in chosen:
        trained = resolve_trained(study, t)
        if trained.number not in seen:
            seen.add(trained.number)
            out.append(trained)
    return out


def run_retrain(config: RetrainConfig, progress: Callable[[dict[str, Any]], None] | None = None
                ) -> dict[int, list[dict[str, Any]]]:
    """Retrain the chosen designs; returns ``{trial number: [run, ...]}`` of every stored run under this
    protocol (runs from an earlier, interrupted retrain included).

    ``progress(event)`` receives ``{"kind": "start" | "epoch" | "done" | "fail" | "skip", "trial", "seed",
    ...}``.

    Raises:
        SearchError, StudyError, DataError: bad settings, study or data (checked before anything is trained).
        KeyboardInterrupt: Ctrl-C; the finished runs are stored, and the same command continues.
    """
    from trainers import load_dataset

    config.validate()
    study = load_study(config.storage, config.study)
    meta = read_meta(study)
    if meta.dataset is None or meta.img_size is None:
        raise StudyError(f"study: {config.study!r} was not made by vitnas search (no data set stored)")
    epochs = config.epochs or EPOCHS_FACTOR * int(meta.epochs or 1)
    chosen = select_trials(study, config)
    data = load_dataset(meta.dataset, config.data_dir, train_subset=config.train_subset, val_subset=meta.val_subset,
                        img_size=meta.img_size, download=config.download)
    protocol = {"epochs": epochs, "train_images": len(data.y_train), "img_size": data.img_size,
                "dataset": meta.dataset, "val_images": len(data.y_val)}
    jobs = []
    for t in chosen:
        done = {r["seed"] for r in confirmation_runs(study, t.number) if r.get("protocol") == protocol}
        for seed in range(config.seeds):
            if seed in done:
                if progress:
                    progress({"kind": "skip", "trial": t.number, "seed": seed})
                continue
            jobs.append({"trial": t.number, "arch": t.user_attrs["arch"], "seed": seed})
    if jobs:
        _fan_out(config, study, meta, data, protocol, jobs, progress)
    return {t.number: [r for r in confirmation_runs(study, t.number) if r.get("protocol") == protocol]
            for t in chosen}


class _RetrainDriver:
    """Driver-side end of a retrain: stores each run in the study as it ends (the study's only writer)."""

    def __init__(self, study: optuna.Study, protocol: dict[str, Any],
                 progress: Callable[[dict[str, Any]], None] | None) -> None:
        self.study, self.protocol, self.progress = study, protocol, progress
        self.interrupted = False
        self.stored = 0

    def interrupt(self) -> None:
        """Ctrl-C: stop the runs; the finished ones are stored already."""
        self.interrupted = True

    def _tell(self, event: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress(event)

    def on_epoch(self, job: dict[str, Any], result: dict[str, Any]) -> None:
        self._tell({"kind": "epoch", "trial": job["trial"], "seed": job["seed"], "epoch": result.get("epoch"),
                    "val_accuracy": result.get("val_accuracy")})

    def on_end(self, job: dict[str, Any], result: dict[str, Any]) -> None:
        """A run's final result: stored when it trained; a failure is told, and the same command retries it."""
        if result.get("accuracy") is None:
            reason = "interrupted" if self.interrupted else result.get("fail_reason") or "stopped before it finished"
            self._tell({"kind": "fail", "trial": job["trial"], "seed": job["seed"], "reason": reason})
            return
        run = {"seed": job["seed"], "protocol": self.protocol, "accuracy": float(result["accuracy"]),
               "curve": result.get("curve") or [], "weights": result.get("weights"),
               "weights_artifact": _artifact(result),
               "train_seconds": result.get("train_seconds"), "device": result.get("device"),
               "recorded": time.strftime("%Y-%m-%dT%H:%M:%S")}
        save_confirmation(self.study, job["trial"], run)
        self.stored += 1
        self._tell({"kind": "done", "trial": job["trial"], "seed": job["seed"], "accuracy": run["accuracy"]})


def _artifact(result: dict[str, Any]) -> dict[str, str] | None:
    """The weights' artifact reference of a final result (Ray may hand it over flattened)."""
    ref = result.get("weights_artifact")
    if isinstance(ref, dict):
        return ref
    store, artifact_id = result.get("weights_artifact/store"), result.get("weights_artifact/id")
    return {"store": store, "id": artifact_id} if store and artifact_id else None


def _retrain_trainable(config: dict[str, Any], settings: dict[str, Any], data: Any) -> None:
    """One retrain run in a Ray worker: the search's trial body under the retrain's epochs and the run's seed."""
    import ray

    from .trial import run_trial

    job = config["job"]
    device = "cuda" if ray.get_gpu_ids() else "cpu"
    run_trial({"arch": job["arch"], "number": job["trial"], "known": None,
               "weights_name": f"trial_{job['trial']:05d}_seed{job['seed']}_e{settings['epochs']}"},
              {**settings, "seed": job["seed"]}, tune.report, data, device)


class _RetrainCallback(tune.Callback):
    """Forwards a retrain run's events to the driver registered under ``handle`` (a plain string: Ray copies
    its callbacks, and the driver, which holds the study, stays in this process)."""

    def __init__(self, handle: str) -> None:
        self.handle = handle

    def on_trial_start(self, iteration, trials, trial, **info):
        driver = resolve(self.handle)
        if driver is not None:
            job = trial.config["job"]
            driver._tell({"kind": "start", "trial": job["trial"], "seed": job["seed"]})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        driver = resolve(self.handle)
        if driver is not None and result.get("accuracy") is None and "val_accuracy" in result:
            driver.on_epoch(trial.config["job"], result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        driver = resolve(self.handle)
        if driver is not None:
            driver.on_end(trial.config["job"], trial.last_result or {})

    def on_trial_error(self, iteration, trials, trial, **info):
        driver = resolve(self.handle)
        if driver is not None:
            driver.on_end(trial.config["job"], {"fail_reason": "the Ray worker failed (see the Ray logs)"})


def _fan_out(config: RetrainConfig, study: optuna.Study, meta: Any, data: Any, protocol: dict[str, Any],
             jobs: list[dict[str, Any]], progress: Callable[[dict[str, Any]], None] | None) -> None:
    import ray

    from .search import _catch_sigint
    from .settings import SearchConfig

    driver = _RetrainDriver(study, protocol, progress)
    target = meta.target or {}
    search = SearchConfig(study=config.study, epochs=protocol["epochs"], batch_size=meta.batch_size or 32,
                          lr=meta.lr or 3e-3, cpus_per_trial=config.cpus_per_trial,
                          gpus_per_trial=config.gpus_per_trial, max_concurrent=config.max_concurrent,
                          run_dir=config.run_dir, target_img_size=target.get("img_size"),
                          target_batch=target.get("batch", 64),
                          target_dtype=None if target.get("dtype", "auto") == "auto" else target["dtype"])
    settings = {**search.worker_settings(), "weights_dir": str(Path(config.run_dir, config.study, "confirm").resolve())}
    if config.artifact_store:
        settings["artifact_store"] = config.artifact_store
    restore = _catch_sigint(driver, b"\nvitnas: stopping after Ctrl-C; finished runs are stored, running ones are "
                                    b"dropped (press Ctrl-C again to force)\n")
    started = False
    handle = register(driver)
    try:
        started = start_ray(config.address)
        trainable = tune.with_resources(tune.with_parameters(_retrain_trainable, settings=settings, data=data),
                                        {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial})
        tuner = tune.Tuner(
            trainable, param_space={"job": tune.grid_search(jobs)},
            tune_config=tune.TuneConfig(max_concurrent_trials=search.resolved_max_concurrent(cluster_gpus()),
                                        time_budget_s=config.timeout, reuse_actors=True),
            run_config=tune.RunConfig(name=f"{config.study}-retrain-{time.strftime('%Y%m%d-%H%M%S')}",
                                      storage_path=str(Path(config.run_dir, "ray").resolve()), verbose=0,
                                      callbacks=[_RetrainCallback(handle)], stop=InterruptStopper(handle),
                                      failure_config=tune.FailureConfig(max_failures=0)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tuner.fit()
    finally:
        release(handle)
        try:
            if started:
                ray.shutdown()
        finally:
            restore()
    if driver.interrupted:
        raise KeyboardInterrupt("vitnas retrain interrupted")
