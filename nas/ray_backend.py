"""The Ray Tune backend: start or join Ray, run one round of trials with :class:`ray.tune.Tuner`, forward
trial events to the caller's progress handler.

Ray's console chatter is kept out of the user's terminal (vitnas shows its own progress).

A local Ray is started with the loopback node address, but Ray's gRPC servers (GCS, raylet, workers)
listen on every interface and ray 2.60 exposes no setting to bind them to loopback
(``listen_to_localhost_only`` is internal). What protects them is Ray's token authentication, which a new
local ``ray.init()`` turns on by default (the token is written to ``~/.ray/auth_token``): vitnas refuses
to start a local Ray with ``RAY_AUTH_MODE=disabled``. A watchdog (:mod:`nas.reaper`) kills what Ray
leaves behind if the driver is killed.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.search import ConcurrencyLimiter

from search_spaces import Architecture

from . import objectives
from .driver import StudyDriver
from .settings import SearchConfig, SearchError, TrialEvent
from .trial import run_trial

__all__ = ["quiet_ray", "start_ray", "run_round", "ProgressCallback"]


def quiet_ray() -> None:
    """Silence Ray's loggers and console output (set before and after ``ray.init``, which reconfigures them)."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # per-epoch reports carry only val_accuracy
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_RESULT_BUFFER_LENGTH", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # Ctrl-C is vitnas' own (nas.search): Tune's handler would swallow it and end the round as if the
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
    """GPUs in the Ray cluster (0 on a CPU-only machine)."""
    return float(ray.cluster_resources().get("GPU", 0.0))


def _trainable(config: dict[str, Any], settings: dict[str, Any], data: Any) -> None:
    # The trial's own device: a trial Ray gave no GPU trains on the CPU even on a GPU machine.
    device = "cuda" if ray.get_gpu_ids() else "cpu"
    run_trial(config, settings, tune.report, data, device)


#: Progress handlers by key: Ray pickles its callbacks, and a handler (holding a rich console) cannot be.
_HANDLERS: dict[int, Callable[[TrialEvent], None]] = {}


class ProgressCallback(tune.Callback):
    """Forwards Ray Tune trial events to the progress handler registered under ``key``, as :class:`TrialEvent`."""

    def __init__(self, handler: Callable[[TrialEvent], None], driver: StudyDriver | None = None) -> None:
        self.key = id(handler)
        _HANDLERS[self.key] = handler
        self.driver_key = id(driver) if driver is not None else None

    def _emit(self, kind: str, trial, metrics: dict[str, Any] | None = None, reason: str = "") -> None:
        handler = _HANDLERS.get(self.key)
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
        driver = _DRIVERS.get(self.driver_key)
        scheduler = getattr(driver, "scheduler", None)
        stopped = scheduler.stopped.get(str(trial.trial_id)) if scheduler is not None else None
        if stopped is not None and r.get("accuracy") is None:
            self._emit("pruned", trial, {"epoch": stopped["epoch"], "val_accuracy": r.get("val_accuracy"),
                                         "params": r.get("params"), "throughput": r.get("throughput")})
        elif driver is not None and driver.interrupted and r.get("accuracy") is None:
            self._emit("fail", trial, reason="interrupted")
        elif r.get("fail_reason"):
            self._emit("fail", trial, reason=r["fail_reason"])
        elif r.get("accuracy") is None:  # stopped by the time budget before its final report
            self._emit("stopped", trial)
        else:
            self._emit("complete", trial, {k: r.get(k) for k in (*objectives.names(), "flops", "reused_from")})

    def on_trial_error(self, iteration, trials, trial, **info):
        driver = _DRIVERS.get(self.driver_key)
        interrupted = driver is not None and driver.interrupted
        self._emit("fail", trial, reason="interrupted" if interrupted else "the Ray worker failed (see the Ray logs)")


#: Drivers by key, for :class:`InterruptStopper` (Tune may copy its stopper; a key survives that).
_DRIVERS: dict[int, StudyDriver] = {}


class InterruptStopper(tune.Stopper):
    """Stops every trial of the round once the driver was interrupted (Ctrl-C)."""

    def __init__(self, driver: StudyDriver) -> None:
        self.key = id(driver)
        _DRIVERS[self.key] = driver

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.stop_all()

    def stop_all(self) -> bool:
        driver = _DRIVERS.get(self.key)
        return bool(driver is not None and driver.interrupted)


def run_round(config: SearchConfig, driver: StudyDriver, remaining: int, budget: float | None, data: Any,
              progress: Callable[[TrialEvent], None] | None) -> None:
    """Run up to ``remaining`` trials proposed by ``driver`` under ``ray.tune.Tuner`` (one round).

    Trials Ray stopped or lost without a result are failed (``stopped``) by the driver at the end; after
    :meth:`StudyDriver.interrupt` the round stops its trials and they fail as ``interrupted``.
    """
    if driver.interrupted:
        return
    limiter = ConcurrencyLimiter(driver, max_concurrent=config.resolved_max_concurrent(cluster_gpus()))
    try:
        # The data set travels once through Ray's object store; actors are reused across trials, so a
        # trial does not pay for a new worker process (imports, data) each time.
        trainable = tune.with_resources(tune.with_parameters(_trainable, settings=config.worker_settings(), data=data),
                                        {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial})
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=limiter, num_samples=remaining, time_budget_s=budget,
                                        reuse_actors=True, scheduler=driver.scheduler),
            run_config=tune.RunConfig(
                name=f"{config.study}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str(Path(config.run_dir, "ray").resolve()), verbose=0,
                callbacks=[ProgressCallback(progress, driver)] if progress else [], stop=InterruptStopper(driver),
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        with warnings.catch_warnings():  # Tune warns a scheduler needs unbuffered results: quiet_ray made them so
            warnings.filterwarnings("ignore", message=".*TUNE_RESULT_BUFFER_LENGTH.*")
            tuner.fit()
    finally:
        driver.stop_all()
        _DRIVERS.pop(id(driver), None)
