"""The search: Ray Tune fans proxy-training trials out, Optuna decides what to try and keeps the front.

Python API (the CLI is a thin layer over it)::

    from nas import SearchConfig, run_search
    study = run_search(SearchConfig(study="digits", trials=12))

``ray.tune.Tuner`` runs the trials with ``OptunaSearch`` (define-by-run space from
:class:`search_spaces.SearchSpace`) over a multi-objective Optuna study kept in an SQLAlchemy storage.
Each trial reports its validation accuracy to Ray Tune after every epoch, then its three objectives; its
genes, FLOPs, memory, curve, device, wall time and (if it failed) the reason are stored as user
attributes of its Optuna trial, and its trained weights as safetensors in the run folder.

``trials`` is the number of *finished* (complete) trials the study should hold: running the same search
again continues a study to that target (trials left RUNNING by a killed process are failed with the
reason ``interrupted``). Identical genes are never trained twice in one study: a trial whose genes
match a complete trial reuses that trial's stored result (``reused_from``).
"""

from __future__ import annotations

import logging
import math
import os
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from search_spaces import Architecture, SearchSpace
from search_spaces.presets import PRESETS

from .study import (
    DEFAULT_STORAGE, OBJECTIVES, StudyError, StudyLease, create_or_load_study, mark_interrupted, open_storage,
)

__all__ = ["SAMPLERS", "SearchConfig", "SearchError", "RepeatedFailure", "run_search", "make_sampler", "TrialEvent"]

SAMPLERS: tuple[str, ...] = ("nsga2", "tpe", "random")


class SearchError(ValueError):
    """A search setting outside its allowed values (the message names the setting)."""


@dataclass
class SearchConfig:
    """Settings of one search (the CLI options of ``vitnas search``).

    Attributes:
        study: study name (also the run folder name under ``run_dir``).
        trials: target number of complete trials in the study (>= 1).
        epochs: proxy-training epochs per trial.
        dataset: ``digits``, ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100`` or ``imagefolder:PATH``.
        data_dir: folder of the torchvision data sets. download: allow torchvision to download.
        train_subset, val_subset: images per split used by the proxy (None: all).
        storage: SQLAlchemy URL of the Optuna storage (default ``sqlite:///runs/vitnas.db``).
        sampler: ``nsga2`` (default), ``tpe`` or ``random``; population_size: NSGA-II population (None:
            sized to the budget, between 4 and 50).
        seed: seeds the sampler and every trial's training.
        space: the search space (default :class:`SearchSpace`); config: a YAML/TOML file narrowing it.
        presets: enqueue the paper presets that lie in the space as the first trials.
        cpus_per_trial, gpus_per_trial: Ray resources per trial (fractions allowed for GPUs).
        max_concurrent: trials at once (0: one per GPU share when GPUs are used, else 1 so CPU
            throughput is measured on an idle machine).
        address: Ray cluster address (``auto`` or ``host:port``); None starts a local Ray.
        run_dir: folder for run data (weights, Ray results); default ``runs``.
        timeout: wall-clock budget in seconds for this invocation (None: none).
        batch_size, lr: proxy-training batch size and peak learning rate.
        max_failures_per_arch: genes that failed this many times are failed at once when proposed again
            (with the earlier reason) instead of being trained again.
        inject_faults: for testing the failure handling: trial number -> ``"nan"`` (the model's head is
            filled with NaN so the real training loop meets a NaN loss) or ``"raise"`` (the trial raises).
    """

    study: str = "digits"
    trials: int = 12
    epochs: int = 6
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    train_subset: int | None = None
    val_subset: int | None = None
    storage: str = DEFAULT_STORAGE
    sampler: str = "nsga2"
    population_size: int | None = None
    seed: int = 0
    space: SearchSpace = field(default_factory=SearchSpace)
    config: str | None = None
    presets: bool = True
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0
    address: str | None = None
    run_dir: str = "runs"
    timeout: float | None = None
    batch_size: int = 32
    lr: float = 3e-3
    max_failures_per_arch: int = 2
    inject_faults: dict[int, str] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise :class:`SearchError` naming the first setting outside its allowed values."""
        def positive_int(name: str, value: Any, minimum: int = 1) -> None:
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise SearchError(f"{name}: must be an integer >= {minimum}, got {value!r}")

        positive_int("trials", self.trials)
        positive_int("epochs", self.epochs)
        positive_int("batch_size", self.batch_size)
        positive_int("max_concurrent", self.max_concurrent, 0)
        if not self.study or not isinstance(self.study, str) or any(c in self.study for c in "/\\\0") or self.study.startswith("."):
            raise SearchError(f"study: {self.study!r} is not a usable name; use letters, digits, '-' and '_'")
        if self.sampler not in SAMPLERS:
            raise SearchError(f"sampler: unknown value {self.sampler!r}; allowed: {', '.join(SAMPLERS)}")
        if self.population_size is not None:
            positive_int("population_size", self.population_size, 2)
        for name in ("train_subset", "val_subset"):
            if getattr(self, name) is not None:
                positive_int(name, getattr(self, name))
        if not (isinstance(self.cpus_per_trial, (int, float)) and self.cpus_per_trial > 0):
            raise SearchError(f"cpus_per_trial: must be > 0, got {self.cpus_per_trial!r}")
        if not (isinstance(self.gpus_per_trial, (int, float)) and self.gpus_per_trial >= 0):
            raise SearchError(f"gpus_per_trial: must be >= 0 (fractions allowed), got {self.gpus_per_trial!r}")
        if self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise SearchError(f"gpus_per_trial: above 1 it must be a whole number, got {self.gpus_per_trial!r}")
        if self.timeout is not None and not (isinstance(self.timeout, (int, float)) and self.timeout > 0):
            raise SearchError(f"timeout: must be a positive number of seconds, got {self.timeout!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise SearchError(f"lr: must be a positive number, got {self.lr!r}")
        positive_int("max_failures_per_arch", self.max_failures_per_arch)
        for number, kind in self.inject_faults.items():
            if kind not in ("nan", "raise"):
                raise SearchError(f"inject_faults: trial {number}: unknown fault {kind!r}; allowed: nan, raise")

    def resolved_max_concurrent(self, gpus: float = 1.0) -> int:
        """Trials at once: ``max_concurrent`` if given; else one per GPU share of the ``gpus`` GPUs in the
        cluster when trials use GPUs; else 1 (CPU throughput is measured on an idle machine)."""
        if self.max_concurrent:
            return self.max_concurrent
        if self.gpus_per_trial > 0:
            return max(1, int(max(gpus, 1.0) / self.gpus_per_trial + 1e-9))
        return 1


def make_sampler(name: str, seed: int, trials: int, population_size: int | None = None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for ``name``.

    NSGA-II's population is sized to the budget (``trials // 3`` clamped to [4, 50]) unless given, so a
    small search runs several generations instead of one random one. TPE is Optuna's multi-objective TPE
    with the constant liar for concurrent trials.

    Raises:
        SearchError: unknown sampler name.
    """
    if name == "nsga2":
        pop = population_size or max(4, min(50, trials // 3))
        return optuna.samplers.NSGAIISampler(population_size=pop, seed=seed)
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                              n_startup_trials=5)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise SearchError(f"sampler: unknown value {name!r}; allowed: {', '.join(SAMPLERS)}")


@dataclass
class TrialEvent:
    """What the search tells its progress callback: ``kind`` is ``start``, ``epoch``, ``complete`` or ``fail``."""

    kind: str
    number: int
    arch: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


# ---------------------------------------------------------------------- the trial (runs in a Ray worker)
class RepeatedFailure(RuntimeError):
    """Genes that already failed ``max_failures_per_arch`` times are not trained again."""


def _failed_before(storage: optuna.storages.BaseStorage, study_id: int, arch_key: str, own_id: int) -> list:
    return [t for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.FAIL,))
            if t._trial_id != own_id and t.user_attrs.get("arch_key") == arch_key
            and t.user_attrs.get("fail_reason", "").split(":")[0] not in ("interrupted", "stopped", "RepeatedFailure")]


def _reusable(storage: optuna.storages.BaseStorage, study_id: int, arch_key: str, own_id: int):
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,)):
        if t._trial_id != own_id and t.user_attrs.get("arch_key") == arch_key and "reused_from" not in t.user_attrs:
            return t
    return None


def run_trial(config: dict[str, Any], settings: dict[str, Any], report: Callable[[dict[str, Any]], None],
              data: Any, device: str = "cpu") -> dict[str, Any]:
    """Evaluate the trial described by ``config`` (genes and Optuna ids) on ``data`` (an
    :class:`trainers.ImageData`) and ``device``, and store its attributes.

    ``report`` receives per-epoch results and then the final objectives. Raises whatever made the
    trial fail, after storing ``fail_reason``; the caller marks the trial failed.
    """
    import torch
    from safetensors.torch import save_model

    from trainers import ProxyConfig, evaluate_architecture

    storage = open_storage(settings["storage"])
    trial_id = config["optuna_trial_id"]
    number = config["optuna_trial_number"]
    set_attr = lambda k, v: storage.set_trial_user_attr(trial_id, k, v)  # noqa: E731
    try:
        arch = Architecture.from_dict(config["arch"])
        arch_key = arch.canonical_key(data.img_size)
        previous = _reusable(storage, settings["study_id"], arch_key, trial_id)
        if previous is not None:
            for key in ("flops", "peak_memory", "curve", "device", "train_seconds", "wall_seconds", "weights"):
                if key in previous.user_attrs:
                    set_attr(key, previous.user_attrs[key])
            set_attr("reused_from", previous.number)
            values = dict(zip(OBJECTIVES, previous.values))
            final = {**values, "flops": previous.user_attrs.get("flops"), "reused_from": previous.number}
            report(final)
            return final
        failures = _failed_before(storage, settings["study_id"], arch_key, trial_id)
        if len(failures) >= settings["max_failures_per_arch"]:
            last = failures[-1]
            raise RepeatedFailure(f"these genes failed {len(failures)} times (last: trial {last.number}, "
                                  f"{last.user_attrs.get('fail_reason', '?')}); not retried")
        fault = settings.get("inject_faults", {}).get(number)
        if fault == "raise":
            raise RuntimeError(f"injected fault in trial {number}")
        threads = max(1, int(settings["cpus_per_trial"]))
        torch.set_num_threads(threads)
        proxy = ProxyConfig(epochs=settings["epochs"], seed=settings["seed"], batch_size=settings["batch_size"],
                            lr=settings["lr"], device=device)
        curve: list[dict[str, float]] = []

        def on_epoch(epoch: int, record: dict[str, float]) -> None:
            curve.append(record)
            report({"epoch": epoch, "val_accuracy": record["val_accuracy"], "train_loss": record["train_loss"]})

        result = evaluate_architecture(arch, data, proxy, report=on_epoch,
                                       prepare=_poison if fault == "nan" else None)
        weights_dir = Path(settings["run_dir"]) / settings["study"] / "weights"
        weights_dir.mkdir(parents=True, exist_ok=True)
        weights = (weights_dir / f"trial_{number:05d}.safetensors").resolve()
        save_model(result.model.cpu(), str(weights))
        for key, value in (("flops", result.flops), ("peak_memory", result.peak_memory), ("curve", curve),
                           ("device", result.device), ("train_seconds", round(result.train_seconds, 3)),
                           ("wall_seconds", round(result.wall_seconds, 3)), ("weights", str(weights))):
            set_attr(key, value)
        final = {"accuracy": result.accuracy, "params": result.params, "throughput": result.throughput,
                 "flops": result.flops, "epoch": settings["epochs"]}
        report(final)
        return final
    except BaseException as exc:
        reason = f"{exc.__class__.__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".rstrip(": ")
        set_attr("fail_reason", reason[:500])
        set_attr("traceback", traceback.format_exc()[-4000:])
        raise
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _poison(model) -> None:
    """Fault injection: fill the classifier with NaN so training meets a real NaN loss."""
    import torch

    with torch.no_grad():
        model.get_classifier().weight.fill_(float("nan"))


def _ray_trainable(config: dict[str, Any], settings: dict[str, Any], data: Any) -> None:
    import ray
    from ray import tune

    # The trial's own device: a trial Ray gave no GPU trains on the CPU even on a GPU machine.
    device = "cuda" if ray.get_gpu_ids() else "cpu"
    run_trial(config, settings, lambda metrics: tune.report(metrics), data, device)


# ---------------------------------------------------------------------- the driver
class DefineByRun:
    """OptunaSearch's define-by-run space: samples genes, stores them on the trial, hands them to Ray.

    A module-level class (not a closure) because Ray pickles the searcher in its experiment state.
    """

    def __init__(self, space: SearchSpace, img_size: int) -> None:
        self.space = space
        self.img_size = img_size

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        arch = self.space.suggest(trial)
        real = getattr(trial, "ot_trial", trial)
        real.set_user_attr("arch", arch.to_dict())
        real.set_user_attr("arch_key", arch.canonical_key(self.img_size))
        return {"arch": arch.to_dict(), "optuna_trial_id": real._trial_id, "optuna_trial_number": real.number}


def _quiet_ray() -> None:
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # per-epoch reports carry only val_accuracy
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_RESULT_BUFFER_LENGTH", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1000")
    for name in ("ray", "ray.tune", "ray.train", "ray.data"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _check_space(storage: optuna.storages.BaseStorage, name: str, space: SearchSpace) -> None:
    """Refuse to continue a study with another search space (Optuna keeps one distribution per gene).

    Raises:
        StudyError: the stored space differs; the message names the first gene that differs.
    """
    if name not in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        return
    stored = optuna.load_study(study_name=name, storage=storage).user_attrs.get("space")
    if stored is None:
        return
    current = space.to_dict()
    for gene, values in current.items():
        if stored.get(gene) != values:
            raise StudyError(
                f"config: study {name!r} was searched with {gene}={stored.get(gene)}, not {values}; "
                "use the same --config or another --study"
            )


def _start_ray(config: SearchConfig) -> bool:
    """Start a local Ray, or join ``config.address``; True if this call initialised Ray.

    Raises:
        SearchError: the cluster at ``config.address`` cannot be reached.
    """
    _quiet_ray()
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                                  configure_logging=True)
    if config.address:
        host = config.address.split("://")[-1].rsplit(":", 1)[0]
        if host in ("127.0.0.1", "localhost"):
            # A loopback head: Ray would rewrite 127.0.0.1 to the machine's outward address; stay on loopback.
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
            kwargs["_node_ip_address"] = "127.0.0.1"
        try:
            ray.init(address=config.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise SearchError(f"address: cannot join the Ray cluster at {config.address!r} ({first})") from None
    else:
        ray.init(_node_ip_address="127.0.0.1", **kwargs)  # a local Ray talks over loopback only
    _quiet_ray()  # ray.init reconfigures its loggers
    return True


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


def run_search(config: SearchConfig, progress: Callable[[TrialEvent], None] | None = None) -> optuna.Study:
    """Run (or continue) a search until the study holds ``config.trials`` complete trials.

    Raises:
        SearchError, StudyError, SpaceError, DataError: bad settings, storage, space or data (checked
        before anything is written).
    """
    from trainers import load_dataset

    config.validate()
    space = SearchSpace.from_file(config.config) if config.config else config.space
    # Check the data before touching the study: a missing data set must not leave a half-made study.
    data = load_dataset(config.dataset, config.data_dir, train_subset=config.train_subset,
                        val_subset=config.val_subset, download=config.download)
    space = space.for_image(data.img_size)
    storage = open_storage(config.storage)
    # Join a cluster before touching the study, so a wrong --address changes nothing stored.
    ray_started = _start_ray(config) if config.address else False
    attrs = {"dataset": config.dataset, "img_size": data.img_size, "in_chans": data.in_chans,
             "num_classes": data.num_classes, "epochs": config.epochs, "train_subset": config.train_subset,
             "val_subset": config.val_subset, "batch_size": config.batch_size, "lr": config.lr}
    _check_space(storage, config.study, space)
    study = create_or_load_study(storage, config.study, attrs=attrs)
    lease = StudyLease(study)  # refuses a study another live search drives; renewed while we run
    try:
        return _drive(config, space, study, storage, data, ray_started, progress)
    finally:
        lease.release()


def _drive(config: SearchConfig, space: SearchSpace, study: optuna.Study, storage, data: Any, ray_started: bool,
           progress: Callable[[TrialEvent], None] | None) -> optuna.Study:
    import ray

    population = config.population_size or max(4, min(50, config.trials // 3))
    if "population_size" not in study.user_attrs:  # kept for the study's life: NSGA-II's generations rely on it
        study.set_user_attr("population_size", population)
    if "data_config" not in study.user_attrs:
        study.set_user_attr("data_config", {k: list(v) if isinstance(v, tuple) else v for k, v in data.data_config().items()})
        study.set_user_attr("space", space.to_dict())
    interrupted = mark_interrupted(study)
    if interrupted and progress:
        for n in interrupted:
            progress(TrialEvent("fail", n, reason="interrupted"))
    if config.presets:
        _enqueue_presets(study, space)
    complete = lambda: len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))  # noqa: E731
    if complete() >= config.trials:
        if ray_started:
            ray.shutdown()
        return study
    started_ray = ray_started or _start_ray(config)
    deadline = time.monotonic() + config.timeout if config.timeout else None
    try:
        stalled = 0
        # Failed trials do not count: run rounds until the target of complete trials is reached, the
        # time budget is spent, or two rounds in a row complete nothing (every proposal failing).
        while (remaining := config.trials - complete()) > 0:
            budget = None if deadline is None else deadline - time.monotonic()
            if budget is not None and budget <= 0:
                break
            before = complete()
            # Reseed per round from the study's size, so a continued study does not replay the
            # proposals of its first run (NSGA-II's first generation and random sampling are seeded).
            study.sampler = make_sampler(config.sampler, config.seed + len(study.trials), config.trials,
                                         study.user_attrs.get("population_size"))
            _run_tuner(config, space, study, storage, remaining, budget, progress, data)
            stalled = stalled + 1 if complete() == before else 0
            if stalled >= 2:
                if progress:
                    progress(TrialEvent("stalled", -1, reason="two rounds in a row completed no trial; stopping"))
                break
    finally:
        if started_ray:
            ray.shutdown()
    return study


def trial_settings(config: SearchConfig, study_id: int) -> dict[str, Any]:
    """The plain, picklable settings :func:`run_trial` reads (storage URL made absolute for Ray workers)."""
    settings = {
        "storage": config.storage, "study": config.study, "study_id": study_id, "dataset": config.dataset,
        "epochs": config.epochs, "seed": config.seed, "batch_size": config.batch_size, "lr": config.lr,
        "cpus_per_trial": config.cpus_per_trial, "run_dir": str(Path(config.run_dir).resolve()),
        "max_failures_per_arch": config.max_failures_per_arch, "inject_faults": dict(config.inject_faults),
    }
    # Relative SQLite paths must resolve the same way inside Ray workers (their cwd differs).
    if settings["storage"].startswith("sqlite:///") and not settings["storage"].startswith("sqlite:////"):
        settings["storage"] = "sqlite:///" + str(Path(settings["storage"][len("sqlite:///"):]).resolve())
    return settings


def _cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def _run_tuner(config: SearchConfig, space: SearchSpace, study: optuna.Study, storage, remaining: int,
               budget: float | None, progress: Callable[[TrialEvent], None] | None, data: Any) -> None:
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(DefineByRun(space, data.img_size), metric=list(OBJECTIVES), mode=["max", "min", "max"],
                            sampler=study.sampler, study_name=study.study_name, storage=storage)
    limiter = ConcurrencyLimiter(searcher, max_concurrent=config.resolved_max_concurrent(_cluster_gpus()))
    settings = trial_settings(config, study._study_id)
    try:
        # The data set travels once through Ray's object store; actors are reused across trials, so a
        # trial does not pay for a new worker process (imports, data) each time.
        trainable = tune.with_resources(tune.with_parameters(_ray_trainable, settings=settings, data=data),
                                        {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial})
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=limiter, num_samples=remaining, time_budget_s=budget,
                                        reuse_actors=True),
            run_config=tune.RunConfig(
                name=f"{config.study}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str(Path(config.run_dir, "ray").resolve()), verbose=0,
                callbacks=[_progress_callback(progress)] if progress else [],
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        tuner.fit()
    finally:
        # Trials Ray stopped (time budget) or lost are not left RUNNING.
        mark_interrupted(study, "stopped: the search ended before the trial finished")


#: Progress handlers by key: Ray pickles its callbacks, and a handler (holding a rich console) cannot be.
_PROGRESS_HANDLERS: dict[int, Callable[[TrialEvent], None]] = {}


def _progress_callback(progress: Callable[[TrialEvent], None]):
    """A ``ray.tune.Callback`` forwarding trial events to ``progress`` (kept out of Ray's pickles)."""
    from ray.tune import Callback

    class ProgressCallback(Callback):
        """Forwards Ray Tune trial events to the handler registered under ``key``."""

        def __init__(self, key: int) -> None:
            self.key = key

        def _emit(self, kind: str, trial, metrics: dict[str, Any] | None = None) -> None:
            handler = _PROGRESS_HANDLERS.get(self.key)
            if handler is None:
                return
            try:
                arch = Architecture.from_dict(trial.config["arch"]).describe()
            except Exception:  # noqa: BLE001 - display only
                arch = "?"
            handler(TrialEvent(kind, int(trial.config.get("optuna_trial_number", -1)), arch, metrics or {}))

        def on_trial_start(self, iteration, trials, trial, **info):
            self._emit("start", trial)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "accuracy" not in result:
                self._emit("epoch", trial, {"epoch": result.get("epoch"), "val_accuracy": result.get("val_accuracy")})

        def on_trial_complete(self, iteration, trials, trial, **info):
            r = trial.last_result or {}
            if r.get("accuracy") is None:  # stopped by the time budget before its final report
                self._emit("stopped", trial)
                return
            self._emit("complete", trial, {k: r.get(k) for k in ("accuracy", "params", "throughput", "flops", "reused_from")})

        def on_trial_error(self, iteration, trials, trial, **info):
            self._emit("fail", trial)

    ProgressCallback.__module__ = __name__
    ProgressCallback.__qualname__ = "ProgressCallback"
    globals()["ProgressCallback"] = ProgressCallback
    _PROGRESS_HANDLERS[id(progress)] = progress
    return ProgressCallback(id(progress))
