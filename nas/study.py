"""The Optuna study: the single source of truth of a search.

Objectives (in this order, described in :mod:`nas.objectives`): ``accuracy`` (maximise, validation top-1
fraction), ``params`` (minimise, trainable parameters), ``throughput`` (maximise, inference images/s).
Metric names are set on the study so ``optuna-dashboard`` and ``optuna.visualization`` read it too.
Everything else a trial produces is a user attribute of its Optuna trial (see :data:`TRIAL_ATTRS`).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search_spaces import Architecture

from . import objectives

__all__ = [
    "OBJECTIVES", "DIRECTIONS", "DEFAULT_STORAGE", "StudyError", "open_storage", "create_or_load_study",
    "load_study", "get_trial", "pareto_front", "front_records", "trial_record", "mark_interrupted",
    "hypervolume", "reference_point", "knee_trial", "pick_trial",
]

optuna.logging.set_verbosity(optuna.logging.WARNING)

#: Metric names and Optuna directions, as loaded from :data:`nas.objectives.OBJECTIVES_SPEC` (kept for
#: importers; the functions here read :mod:`nas.objectives` when they are called).
OBJECTIVES: tuple[str, ...] = objectives.names()
DIRECTIONS: tuple[str, ...] = objectives.direction_names()
DEFAULT_STORAGE = "sqlite:///runs/vitnas.db"

#: User attributes of a trial: arch (genes dict), arch_key, preset, flops, peak_memory, curve (per-epoch
#: history), device, train_seconds, wall_seconds, weights (safetensors path), fail_reason, reused_from.
TRIAL_ATTRS = ("arch", "arch_key", "preset", "flops", "peak_memory", "curve", "device", "train_seconds",
               "wall_seconds", "weights", "fail_reason", "reused_from")


class StudyError(ValueError):
    """Unreadable storage, an unknown study or trial, or a study that does not fit the request."""


def display_url(url: str) -> str:
    """``url`` with any password masked (for messages and progress lines)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a parseable URL: show it as given
        return url


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for the SQLAlchemy ``url`` (``sqlite:///path.db``, ``postgresql://...``).

    For SQLite the parent folder is created, and a busy timeout lets concurrent writers wait instead of
    failing on a locked file.

    Raises:
        StorageError-like :class:`StudyError`: the URL is malformed or the database cannot be opened.
    """
    if not isinstance(url, str) or "://" not in url:
        raise StudyError(f"storage: {url!r} is not an SQLAlchemy URL; use sqlite:///path.db or postgresql://user@host/db")
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            try:
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StudyError(f"storage: cannot create the folder for {path!r} ({exc.strerror})") from None
        if "timeout=" not in url:  # sqlite:///x.db?timeout=5 sets it explicitly
            engine_kwargs["connect_args"] = {"timeout": 60}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as exc:  # sqlalchemy ArgumentError/OperationalError, missing drivers, corrupt files
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise StudyError(f"storage: cannot open {display_url(url)!r}: {detail[:200]}") from None


def create_or_load_study(storage: optuna.storages.BaseStorage, name: str,
                         sampler: optuna.samplers.BaseSampler | None = None,
                         attrs: dict[str, Any] | None = None) -> optuna.Study:
    """Create the study ``name`` with vitnas' objectives (:mod:`nas.objectives`), or load it if it exists.

    ``attrs`` (data set, image size, ...) are stored as study user attributes on creation; when the study
    exists, each given attribute that the study already holds must match.

    Raises:
        StudyError: the existing study has other objectives or other settings in ``attrs``.
    """
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    if name in existing:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        if list(study.directions) != objectives.directions():
            raise StudyError(f"study: {name!r} exists with other objectives; choose another --study")
        for key, value in (attrs or {}).items():
            stored = study.user_attrs.get(key)
            if stored is not None and stored != value:
                raise StudyError(
                    f"study: {name!r} was created with {key}={stored!r}, not {value!r}; use the same settings or another --study"
                )
        return study
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, directions=objectives.directions())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(objectives.names()))
    for key, value in (attrs or {}).items():
        study.set_user_attr(key, value)
    return study


def load_study(storage_url: str, name: str) -> optuna.Study:
    """Load an existing study.

    Raises:
        StudyError: unreadable storage or no study called ``name`` (the message lists the studies).
    """
    if storage_url.startswith("sqlite:///"):
        path = storage_url[len("sqlite:///"):].split("?")[0]
        if path and path != ":memory:" and not Path(path).expanduser().is_file():
            raise StudyError(f"storage: no database at {path!r}; run `vitnas search` first or pass --storage")
    storage = open_storage(storage_url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if name not in names:
        known = ", ".join(names) if names else "none"
        raise StudyError(f"study: no study {name!r} in {display_url(storage_url)}; studies there: {known}")
    return optuna.load_study(study_name=name, storage=storage)


def get_trial(study: optuna.Study, number: int, *, finished: bool = False) -> FrozenTrial:
    """Trial ``number`` of ``study``.

    Raises:
        StudyError: no such trial, or (with ``finished``) the trial did not complete.
    """
    trials = study.get_trials(deepcopy=False)
    match = [t for t in trials if t.number == number]
    if not match:
        last = trials[-1].number if trials else None
        allowed = f"0..{last}" if last is not None else "none yet"
        raise StudyError(f"trial: study {study.study_name!r} has no trial {number}; trials: {allowed}")
    trial = match[0]
    if finished and trial.state != TrialState.COMPLETE:
        reason = trial.user_attrs.get("fail_reason")
        extra = f" ({reason})" if reason else ""
        raise StudyError(f"trial: trial {number} is {trial.state.name.lower()}{extra}; choose a complete trial")
    return trial


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto-optimal complete trials (Optuna's ``best_trials``), by trial number."""
    return sorted(study.best_trials, key=lambda t: t.number)


def trial_record(trial: FrozenTrial) -> dict[str, Any]:
    """One JSON-able record of a trial: number, state, objectives, FLOPs, genes and its other attributes."""
    attrs = trial.user_attrs
    return {
        "trial": trial.number,
        "state": trial.state.name,
        **objectives.record(trial.values),
        "flops": attrs.get("flops"),
        "peak_memory": attrs.get("peak_memory"),
        "preset": attrs.get("preset"),
        "arch": attrs.get("arch"),
        "device": attrs.get("device"),
        "wall_seconds": attrs.get("wall_seconds"),
        "fail_reason": attrs.get("fail_reason"),
        "reused_from": attrs.get("reused_from"),
    }


def knee_trial(study: optuna.Study) -> FrozenTrial:
    """The front member closest to the ideal point: the usual "knee" pick of a Pareto front.

    Each objective is scaled to [0, 1] over the front in its better direction (on a log scale where
    :mod:`nas.objectives` says so: params and throughput span orders of magnitude); the knee is the
    member with the smallest Euclidean distance to (1, ..., 1) (:func:`nas.objectives.knee_distances`).
    Ties go to the lower trial number.

    Raises:
        StudyError: the study has no complete trial.
    """
    front = pareto_front(study)
    if not front:
        raise StudyError(f"trial: study {study.study_name!r} has no complete trial to pick from")
    return _knee(front)


def _knee(front: list[FrozenTrial]) -> FrozenTrial:
    dist = objectives.knee_distances([t.values for t in front])
    return front[min(range(len(front)), key=lambda i: (dist[i], front[i].number))]


def pick_trial(study: optuna.Study, pick: str) -> FrozenTrial:
    """A Pareto-front member: ``"knee"`` (:func:`knee_trial`) or the best in one objective, by name
    (``"accuracy"``, ``"params"``, ...). Ties go to the lower trial number.

    Raises:
        ValueError: ``pick`` is neither ``knee`` nor an objective.
        StudyError: the study has no complete trial.
    """
    allowed = ("knee", *objectives.names())
    if pick not in allowed:
        raise ValueError(f"pick: unknown value {pick!r}; allowed: {', '.join(allowed)}")
    front = pareto_front(study)
    if not front:
        raise StudyError(f"pick: study {study.study_name!r} has no complete trial yet")
    if pick == "knee":
        return _knee(front)
    k, o = objectives.names().index(pick), objectives.get(pick)
    return max(front, key=lambda t: (o.sign * t.values[k], -t.number))


def front_records(study: optuna.Study) -> list[dict[str, Any]]:
    """:func:`trial_record` of every Pareto-front member, sorted by the first objective (accuracy), best first."""
    first = objectives.primary()
    return sorted((trial_record(t) for t in pareto_front(study)), key=lambda r: -first.sign * r[first.name])


def describe_arch(attrs: dict[str, Any]) -> str:
    """Short description of a trial's genes from its ``arch`` user attribute."""
    arch = attrs.get("arch")
    try:
        return Architecture.from_dict(arch).describe() if arch else "?"
    except ValueError:
        return "?"


def mark_interrupted(study: optuna.Study, storage: optuna.storages.BaseStorage,
                     reason: str = "interrupted") -> list[int]:
    """Fail every trial of ``study`` left RUNNING by a dead search process, storing ``reason`` as its
    ``fail_reason``. ``storage`` is the storage the study was opened on (:func:`open_storage`).

    Call it only when no other process is running trials of this study (the driver holds the
    :class:`StudyLease`). Returns the trial numbers.
    """
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return []
    # No Optuna trial object exists in this process for a trial another process left RUNNING, so the
    # storage's public API sets its reason and state (``Study.tell`` could fail it, but the reason cannot
    # be attached to a finished trial).
    study_id = storage.get_study_id_from_name(study.study_name)
    numbers = []
    for t in running:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        numbers.append(t.number)
    return numbers


class StudyLease:
    """Marks a study as driven by this process, so a second ``vitnas search`` on it is refused instead of
    failing the first one's running trials as "interrupted".

    The lease is the study user attribute ``driver`` = {host, pid, heartbeat (Unix seconds)}, renewed
    every ``renew`` seconds by a daemon thread and removed by :meth:`release`. A lease is free when it is
    missing, when its process is gone (same host: the pid no longer exists, e.g. after SIGKILL), or when
    its heartbeat is older than ``stale`` seconds (another host).

    Raises:
        StudyError: another live process holds the lease (the message says which and how to proceed).
    """

    def __init__(self, study: optuna.Study, stale: float = 120.0, renew: float = 20.0) -> None:
        import os
        import socket
        import threading
        import time

        self.study, self._time = study, time.time
        self.me = {"host": socket.gethostname(), "pid": os.getpid()}
        held = study.user_attrs.get("driver")
        if held and {k: held.get(k) for k in ("host", "pid")} != self.me:
            age = time.time() - float(held.get("heartbeat", 0))
            alive = age < stale
            if held.get("host") == self.me["host"]:
                try:
                    os.kill(int(held["pid"]), 0)
                except (OSError, ValueError, TypeError):
                    alive = False
            if alive:
                raise StudyError(
                    f"study: {study.study_name!r} is being searched by pid {held.get('pid')} on {held.get('host')} "
                    f"(last seen {age:.0f} s ago); wait for it to finish or stop it first"
                )
        self._beat()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(renew,), daemon=True, name="vitnas-lease")
        self._thread.start()

    def _beat(self) -> None:
        self.study.set_user_attr("driver", {**self.me, "heartbeat": self._time()})

    def _run(self, renew: float) -> None:
        while not self._stop.wait(renew):
            try:
                self._beat()
            except Exception:  # noqa: BLE001 - a missed heartbeat only shortens the lease
                pass

    def release(self) -> None:
        """Stop renewing and remove the lease (only if it is still ours)."""
        self._stop.set()
        self._thread.join(timeout=5)
        held = self.study.user_attrs.get("driver") or {}
        if {k: held.get(k) for k in ("host", "pid")} == self.me:
            self.study.set_user_attr("driver", None)


def reference_point(params_max: float = 5e6, throughput_min: float = 0.0, **worst: float) -> list[float]:
    """Fixed reference point for hypervolume in its minimisation form and units
    (:func:`nas.objectives.reference_point`): (-accuracy, params in millions, -throughput in thousands of
    images/s). ``worst`` gives the reference value of any other objective by name, in its own unit.

    Defaults: accuracy 0, 5 M parameters, 0 images/s.
    """
    return objectives.reference_point(params=params_max, throughput=throughput_min, **worst)


def hypervolume(trials: list[FrozenTrial], ref: list[float] | None = None) -> float:
    """Hypervolume dominated by the complete ``trials`` w.r.t. ``ref`` (:func:`nas.objectives.hypervolume`,
    exact).

    Objectives are taken in minimisation form and readable units (:func:`nas.objectives.hv_vector`):
    (-accuracy, params / 1e6, -throughput / 1e3); points that do not dominate ``ref`` add nothing. Units:
    accuracy x M params x k img/s (:func:`nas.objectives.hv_units`). With the default reference a model
    with accuracy 1, no parameters and 1,000 img/s scores 5.
    """
    ref = ref or reference_point()
    pts = [objectives.hv_vector(t.values) for t in trials
           if t.state == TrialState.COMPLETE and t.values and all(math.isfinite(v) for v in t.values)]
    return objectives.hypervolume(pts, ref)


def study_status(study: optuna.Study) -> dict[str, Any]:
    """Counts of trials by state (complete, running, failed, queued, pruned), the front size, the current
    hypervolume (w.r.t. :func:`reference_point`) and the failure reasons by count."""
    trials = study.get_trials(deepcopy=False)
    count = lambda state: sum(1 for t in trials if t.state == state)  # noqa: E731
    reasons: dict[str, int] = {}
    for t in trials:
        if t.state == TrialState.FAIL:
            r = t.user_attrs.get("fail_reason", "unknown")
            reasons[r] = reasons.get(r, 0) + 1
    front = pareto_front(study) if count(TrialState.COMPLETE) else []
    return {
        "study": study.study_name,
        "complete": count(TrialState.COMPLETE), "running": count(TrialState.RUNNING),
        "failed": count(TrialState.FAIL), "queued": count(TrialState.WAITING), "pruned": count(TrialState.PRUNED),
        "front_size": len(front), "hypervolume": hypervolume(front), "reference_point": reference_point(),
        "fail_reasons": reasons, "dataset": study.user_attrs.get("dataset"),
    }
