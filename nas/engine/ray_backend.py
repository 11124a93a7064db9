"""The Ray Tune backend: start or join Ray, run one round of trials with :class:`ray.tune.Tuner`, forward
trial events to the caller's progress handler.

Ray's console chatter is kept out of the user's terminal (vitnas shows its own progress).

A local Ray is started with the loopback node address, but Ray's gRPC servers (GCS, raylet, workers)
listen on every interface and ray 2.60 exposes no setting to bind them to loopback
(``listen_to_localhost_only`` is internal). What protects them is Ray's token authentication, which a new
local ``ray.init()`` turns on by default (the token is written to ``~/.ray/auth_token``): vitnas refuses
to start a local Ray with ``RAY_AUTH_MODE=disabled``. A watchdog (:mod:`nas.engine.reaper`) kills what Ray
leaves behind if the driver is killed.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune import PlacementGroupFactory
from ray.tune.search import ConcurrencyLimiter, Searcher

from search_spaces import Architecture

from .. import objectives
from .driver import StudyDriver
from .packing import GPU_SHARE_KEY
from .settings import SearchConfig, SearchError, TrialEvent
from .trial import run_trial

__all__ = ["quiet_ray", "start_ray", "run_round", "round_configs", "DriverSearcher", "ProgressCallback",
           "InterruptStopper", "register", "release", "resolve"]


def quiet_ray() -> None:
    """Silence Ray's loggers and console output (set before and after ``ray.init``, which reconfigures them)."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # per-epoch reports carry only val_accuracy
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_RESULT_BUFFER_LENGTH", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # Ctrl-C is vitnas' own (nas.engine.search): Tune's handler would swallow it and end the round as if the
    # trials had merely been stopped.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1000")
    for name in ("ray", "ray.tune", "ray.train", "ray.data"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def start_ray(address: str | None) -> bool:
    """Start a local Ray, or join the cluster at ``address``; True if this call initialised Ray.

    Raises:
        SearchError: the cluster at ``address`` cannot be reached (names the ``address`` setting).
    """
    quiet_ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                                  configure_logging=True)
    if address:
        host = address.split("://")[-1].rsplit(":", 1)[0]
        if host in ("127.0.0.1", "localhost"):
            # A loopback head: Ray would rewrite 127.0.0.1 to the machine's outward address; stay on loopback.
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
            kwargs["_node_ip_address"] = "127.0.0.1"
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise SearchError(f"address: cannot join the Ray cluster at {address!r} ({first})") from None
    else:
        if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
            raise SearchError("address: a local Ray listens on every interface, so vitnas starts it only with "
                              "Ray's token authentication; unset RAY_AUTH_MODE (now "
                              f"{os.environ['RAY_AUTH_MODE']!r}) or join your own cluster with address")
        ray.init(_node_ip_address="127.0.0.1", **kwargs)  # the node's address; see the module docstring
        from .reaper import watch

        watch()
    quiet_ray()
    return True


def cluster_gpus() -> float:
    """GPUs in the Ray cluster (0 on a CPU-only machine, or before Ray is started)."""
    return float(ray.cluster_resources().get("GPU", 0.0)) if ray.is_initialized() else 0.0


def trial_resources(cpus: float, config: dict[str, Any]) -> PlacementGroupFactory:
    """Ray resources of one trial of a packed search: ``cpus`` CPUs and the GPU share its config carries
    (:data:`nas.engine.packing.GPU_SHARE_KEY`; a whole GPU for a retry alone)."""
    return PlacementGroupFactory([{"CPU": cpus, "GPU": float(config.get(GPU_SHARE_KEY, 1.0))}])


def _trainable(config: dict[str, Any], settings: dict[str, Any], data: Any) -> None:
    # The trial's own device: a trial Ray gave no GPU trains on the CPU even on a GPU machine.
    device = "cuda" if ray.get_gpu_ids() else "cpu"
    run_trial(config, settings, tune.report, data, device)


#: Objects of this process that Ray must reach but never hold, by handle: a :class:`StudyDriver` owns the
#: study, its storage and its sampler; a progress handler holds a rich console. What Ray is given (the
#: searcher, the callbacks, the stopper) holds only the handle, a plain string that survives Ray's pickling
#: and copying whatever a new release of Optuna, SQLAlchemy or rich makes of their own objects.
_LIVE: dict[str, Any] = {}


def register(obj: Any) -> str:
    """Keep ``obj`` in this process under a new handle (a plain string) and return the handle."""
    handle = uuid.uuid4().hex
    _LIVE[handle] = obj
    return handle


def release(*handles: str | None) -> None:
    """Forget the objects registered under ``handles`` (unknown handles are ignored)."""
    for handle in handles:
        _LIVE.pop(handle, None)


def resolve(handle: str | None) -> Any:
    """The object registered under ``handle`` in this process, or None."""
    return _LIVE.get(handle) if handle is not None else None


class DriverSearcher(Searcher):
    """The Ray Tune searcher of a search: plain data and a handle to the :class:`StudyDriver`, which stays in
    the driver process (where Ray Tune runs its searcher) and is the study's only writer.

    ``suggest`` and ``on_trial_complete`` forward to the driver registered under ``handle``. The searcher's
    own state is plain (the handle and the numbers of the trials it handed out), which is what Ray's
    ``save``/``restore`` write as JSON. Ray's experiment restore is not how vitnas resumes: the study in its
    storage is the state of a search, and running ``vitnas search`` again reopens it from its URL.

    Raises:
        SearchError: on ``suggest`` when no driver is registered under ``handle`` in this process (a copy
            restored elsewhere); the message says to continue with ``vitnas search``.
    """

    def __init__(self, handle: str, study: str = "") -> None:
        super().__init__()
        self.handle, self.study = handle, study
        self.trials: dict[str, int] = {}  # Ray trial id -> Optuna trial number, of the trials handed out

    def _driver(self) -> StudyDriver:
        driver = resolve(self.handle)
        if driver is None:
            raise SearchError(f"study: the driver of {self.study!r} is not in this process; continue the search "
                              "with `vitnas search` (the study in its storage is the search's state)")
        return driver

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        config = self._driver().suggest(trial_id)
        if isinstance(config, dict):
            self.trials[trial_id] = int(config["number"])
        return config

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        self.trials.pop(trial_id, None)
        self._driver().on_trial_complete(trial_id, result, error)

    def get_state(self) -> dict[str, Any]:
        return {"handle": self.handle, "study": self.study, "trials": dict(self.trials)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.handle, self.study = str(state["handle"]), str(state.get("study", ""))
        self.trials = {str(k): int(v) for k, v in state.get("trials", {}).items()}

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(json.loads(Path(checkpoint_path).read_text()))


class ProgressCallback(tune.Callback):
    """Forwards Ray Tune trial events to the progress handler registered under ``handler``, as
    :class:`TrialEvent` (plain handles: the handler and the driver stay in this process)."""

    def __init__(self, handler: str, driver: str | None = None) -> None:
        self.handler, self.driver = handler, driver

    def _emit(self, kind: str, trial, metrics: dict[str, Any] | None = None, reason: str = "") -> None:
        handler = resolve(self.handler)
        if handler is None:
            return
        try:
            arch = Architecture.from_dict(trial.config["arch"]).describe()
        except Exception:  # noqa: BLE001 - display only
            arch = "?"
        handler(TrialEvent(kind, int(trial.config.get("number", -1)), arch, metrics or {}, reason))

    def on_trial_start(self, iteration, trials, trial, **info):
        self._emit("start", trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "val_accuracy" in result and result.get("accuracy") is None:
            self._emit("epoch", trial, {"epoch": result.get("epoch"), "val_accuracy": result.get("val_accuracy")})

    def on_trial_complete(self, iteration, trials, trial, **info):
        r = trial.last_result or {}
        driver = resolve(self.driver)
        scheduler = getattr(driver, "scheduler", None)
        stopped = scheduler.stopped.get(str(trial.trial_id)) if scheduler is not None else None
        refused = r.get("refused") or {k.split("/", 1)[1]: v for k, v in r.items() if k.startswith("refused/")}
        if refused:
            self._emit("refused", trial, {"refused": refused, "params": r.get("params"),
                                          "throughput": r.get("throughput"), "peak_memory": r.get("peak_memory")})
        elif stopped is not None and r.get("accuracy") is None:
            self._emit("pruned", trial, {"epoch": stopped["epoch"], "val_accuracy": r.get("val_accuracy"),
                                         "params": r.get("params"), "throughput": r.get("throughput")})
        elif driver is not None and driver.interrupted and r.get("accuracy") is None:
            self._emit("fail", trial, reason="interrupted")
        elif r.get("fail_reason"):
            self._emit("fail", trial, reason=r["fail_reason"])
        elif r.get("accuracy") is None:  # stopped by the time budget before its final report
            self._emit("stopped", trial)
        else:
            self._emit("complete", trial, {k: r.get(k) for k in (*objectives.names(), "flops", "reused_from",
                                                                 "paused_at")})

    def on_trial_error(self, iteration, trials, trial, **info):
        driver = resolve(self.driver)
        interrupted = driver is not None and driver.interrupted
        self._emit("fail", trial, reason="interrupted" if interrupted else "the Ray worker failed (see the Ray logs)")


class InterruptStopper(tune.Stopper):
    """Stops every trial of the round once the driver registered under ``driver`` was interrupted (Ctrl-C)."""

    def __init__(self, driver: str) -> None:
        self.driver = driver

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.stop_all()

    def stop_all(self) -> bool:
        driver = resolve(self.driver)
        return bool(driver is not None and driver.interrupted)


def round_configs(config: SearchConfig, driver: str, remaining: int, budget: float | None, scheduler: Any,
                  progress: str | None) -> tuple[tune.TuneConfig, tune.RunConfig]:
    """The :class:`~ray.tune.TuneConfig` and :class:`~ray.tune.RunConfig` of one round, built from plain
    data and the handles of the driver and the progress handler (:func:`register`): everything in them is
    vitnas' own or Ray's, so ``tune.Tuner`` can pickle them whatever Optuna's sampler holds."""
    limiter = ConcurrencyLimiter(DriverSearcher(driver, config.study),
                                 max_concurrent=config.resolved_max_concurrent(cluster_gpus()))
    tune_config = tune.TuneConfig(search_alg=limiter, num_samples=remaining, time_budget_s=budget,
                                  reuse_actors=True, scheduler=scheduler)
    run_config = tune.RunConfig(
        name=f"{config.study}-{time.strftime('%Y%m%d-%H%M%S')}",
        storage_path=str(Path(config.run_dir, "ray").resolve()), verbose=0,
        callbacks=[ProgressCallback(progress, driver)] if progress else [], stop=InterruptStopper(driver),
        failure_config=tune.FailureConfig(max_failures=0),
    )
    return tune_config, run_config


def run_round(config: SearchConfig, driver: StudyDriver, remaining: int, budget: float | None, data: Any,
              progress: Callable[[TrialEvent], None] | None) -> None:
    """Run up to ``remaining`` trials proposed by ``driver`` under ``ray.tune.Tuner`` (one round).

    The driver and the progress handler stay in this process; Ray gets handles to them (:func:`round_configs`).
    Trials Ray stopped or lost without a result are failed (``stopped``) by the driver at the end; after
    :meth:`StudyDriver.interrupt` the round stops its trials and they fail as ``interrupted``.
    """
    if driver.interrupted:
        return
    handles = (register(driver), register(progress) if progress else None)
    try:
        tune_config, run_config = round_configs(config, handles[0], remaining, budget, driver.scheduler, handles[1])
        # The data set travels once through Ray's object store; actors are reused across trials, so a
        # trial does not pay for a new worker process (imports, data) each time.
        gpus = cluster_gpus()
        resources: Any = {"cpu": config.cpus_per_trial, "gpu": config.resolved_gpus_per_trial(gpus)}
        if driver.packing is not None:  # packed: each trial asks for the share its config carries
            resources = functools.partial(trial_resources, config.cpus_per_trial)
        trainable = tune.with_resources(tune.with_parameters(_trainable, settings=config.worker_settings(), data=data),
                                        resources)
        tuner = tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)
        with warnings.catch_warnings():  # Tune warns a scheduler needs unbuffered results: quiet_ray made them so
            warnings.filterwarnings("ignore", message=".*TUNE_RESULT_BUFFER_LENGTH.*")
            tuner.fit()
    finally:
        driver.stop_all()
        release(*handles)
