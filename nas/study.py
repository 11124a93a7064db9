"""The Optuna study: the single source of truth of a search.

Objectives (in this order, described in :mod:`nas.objectives`): ``accuracy`` (maximise, validation top-1
fraction), ``params`` (minimise, trainable parameters), ``throughput`` (maximise, inference images/s).
Metric names are set on the study so ``optuna-dashboard`` and ``optuna.visualization`` read it too.
Everything else a trial produces is a user attribute of its Optuna trial (see :data:`TRIAL_ATTRS`).
"""

from __future__ import annotations

import datetime as _dt
import math
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from . import objectives

__all__ = [
    "OBJECTIVES", "DIRECTIONS", "DEFAULT_STORAGE", "StudyError", "open_storage", "create_or_load_study",
    "load_study", "get_trial", "pareto_front", "nonfinite_trials", "front_records", "trial_record", "mark_interrupted",
    "hypervolume", "target_shape", "describe_shape", "is_infeasible", "knee_trial", "pick_trial",
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


def sqlite_path(url: str | None) -> Path | None:
    """The database file of an SQLite URL (any driver: ``sqlite:///x.db``, ``sqlite+pysqlite:///x.db?timeout=5``),
    or None for another database, an in-memory one or a URL SQLAlchemy cannot parse."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url) if url else None
    except Exception:  # noqa: BLE001 - not a URL: no file
        return None
    if parsed is None or parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser()


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for the SQLAlchemy ``url`` (``sqlite:///path.db``, ``postgresql://...``).

    For SQLite the parent folder is created, and a busy timeout lets concurrent writers wait instead of
    failing on a locked file.

    Raises:
        StudyError: the URL is malformed, the SQLite folder cannot be made, or the database cannot be opened.
    """
    if not isinstance(url, str) or "://" not in url:
        raise StudyError(f"storage: {url!r} is not an SQLAlchemy URL; use sqlite:///path.db or postgresql://user@host/db")
    engine_kwargs: dict[str, Any] = {}
    path = sqlite_path(url)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StudyError(f"storage: cannot create the folder for {str(path)!r} ({exc.strerror})") from None
    if url.startswith("sqlite") and "timeout=" not in url:  # sqlite:///x.db?timeout=5 sets it explicitly
            engine_kwargs["connect_args"] = {"timeout": 60}
    try:
        return BulkRDBStorage(url, engine_kwargs=engine_kwargs)
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
    existing = {s.study_name for s in optuna.storages.get_storage(storage).get_all_studies()}  # names only: no trial read
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
    path = sqlite_path(storage_url)
    if path is not None and not path.is_file():
        raise StudyError(f"storage: no database at {str(path)!r}; run `vitnas search` first or pass --storage")
    storage = open_storage(storage_url)
    names = [s.study_name for s in storage.get_all_studies()]  # names only: no trial is read
    if name not in names:
        known = ", ".join(names) if names else "none"
        raise StudyError(f"study: no study {name!r} in {display_url(storage_url)}; studies there: {known}")
    study = optuna.load_study(study_name=name, storage=storage)
    if list(study.directions) != objectives.directions():
        wanted = ", ".join(f"{n} ({d})" for n, d in zip(objectives.names(), objectives.direction_names(), strict=True))
        raise StudyError(f"study: {name!r} is not a vitnas study ({len(study.directions)} objective(s); vitnas "
                         f"studies have {wanted}); choose another --study")
    return study


class BulkRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage (SQLite, PostgreSQL, ...) whose trial reads are bulk ``SELECT``\\ s.

    :meth:`optuna.storages.RDBStorage._get_trials`, which every trial read goes through (including the
    incremental reads of Optuna's own trial cache, ``optuna.storages._CachedStorage``, that wraps this
    storage in a study), builds one ORM object per stored row; here the same rows are fetched with one
    ``SELECT`` per table of the installed Optuna's schema (checked by ``RDBStorage`` when it opens the
    database) and turned into the same :class:`~optuna.trial.FrozenTrial`\\ s directly: about six times
    faster, which is what keeps reading a 10,000-trial study within seconds. Writes are Optuna's. Any
    error falls back to Optuna's own reader.
    """

    def _get_trials(self, study_id: int, states: Any, included_trial_ids: set[int],
                    trial_id_greater_than: int) -> list[FrozenTrial]:
        try:
            return _bulk_read(self, study_id, states, True, included_trial_ids, trial_id_greater_than)
        except Exception:  # noqa: BLE001 - Optuna's own (slower) reader is always right, and raises its errors
            return super()._get_trials(study_id, states, included_trial_ids, trial_id_greater_than)


def _rdb_backend(study: optuna.Study) -> Any:
    """The :class:`optuna.storages.RDBStorage` behind ``study`` (possibly inside Optuna's cache), or None."""
    storage = getattr(study, "_storage", None)
    for _ in range(3):
        if isinstance(storage, optuna.storages.RDBStorage):
            return storage
        storage = getattr(storage, "_backend", None)
    return None


def read_trials(study: optuna.Study, states: tuple[TrialState, ...] | None = None, *,
                user_attrs: bool = True) -> list[FrozenTrial]:
    """Every trial of ``study`` (only ``states`` when given), by number, for read-only use.

    ``study.get_trials(deepcopy=False, states=states)``: through Optuna's trial cache, so a second call
    reads only new and unfinished trials. On an RDB storage, a read of some ``states`` only, or with
    ``user_attrs=False``, is one bulk pass of its own (see :class:`BulkRDBStorage`) that reads only the
    trials in ``states`` (Optuna's cache would read them all). ``user_attrs=False`` reads states,
    objectives and system attributes (Optuna's constraints) only, leaving user attributes, parameters and
    intermediate values empty: counts and the front of a large study without its curves and genes.
    """
    rdb = _rdb_backend(study)
    if (not user_attrs or states is not None) and rdb is not None:
        try:
            return _bulk_read(rdb, study._study_id, states, user_attrs)
        except Exception:  # noqa: BLE001 - Optuna's own (slower) reader is always right
            pass
    trials = study.get_trials(deepcopy=False, states=states)
    if not user_attrs:
        trials = [_without_user_attrs(t) for t in trials]
    return sorted(trials, key=lambda t: t.number)


def _without_user_attrs(t: FrozenTrial) -> FrozenTrial:
    return FrozenTrial(number=t.number, state=t.state, value=None, values=t.values, datetime_start=t.datetime_start,
                       datetime_complete=t.datetime_complete, params={}, distributions={}, user_attrs={},
                       system_attrs=t.system_attrs, intermediate_values={}, trial_id=t._trial_id)


def _bulk_read(rdb: optuna.storages.RDBStorage, study_id: int, states: Any, user_attrs: bool,
               included_trial_ids: set[int] | None = None, trial_id_greater_than: int = -1) -> list[FrozenTrial]:
    """The trials of ``study_id`` as ``RDBStorage._get_trials`` returns them (same filters, by trial id)."""
    import json

    import sqlalchemy as sa
    from optuna.distributions import json_to_distribution
    from optuna.storages._rdb import models as m

    trials_t, studies_t = m.TrialModel.__table__, m.StudyModel.__table__
    cond = trials_t.c.study_id == study_id
    if states is not None:
        cond = sa.and_(cond, trials_t.c.state.in_(list(states)))
    included = [i for i in (included_trial_ids or ()) if i <= trial_id_greater_than]
    if trial_id_greater_than > -1:
        newer = trials_t.c.trial_id > trial_id_greater_than
        cond = sa.and_(cond, sa.or_(trials_t.c.trial_id.in_(included), newer) if included else newer)
    ids = sa.select(trials_t.c.trial_id).where(cond).scalar_subquery()

    def rows(model: Any, *cols: str, order: str | None = None) -> list[Any]:
        t = model.__table__
        q = sa.select(t.c.trial_id, *(t.c[c] for c in cols)).where(t.c.trial_id.in_(ids))
        return conn.execute(q.order_by(t.c[order]) if order else q).all()

    with rdb.engine.connect() as conn:
        if conn.execute(sa.select(studies_t.c.study_id).where(studies_t.c.study_id == study_id)).first() is None:
            raise KeyError(study_id)  # Optuna's reader raises its own error for an unknown study
        base = conn.execute(sa.select(trials_t.c.trial_id, trials_t.c.number, trials_t.c.state,
                                      trials_t.c.datetime_start, trials_t.c.datetime_complete)
                            .where(cond).order_by(trials_t.c.trial_id)).all()
        if not base:
            return []
        values_rows = rows(m.TrialValueModel, "objective", "value", "value_type")
        system_rows = rows(m.TrialSystemAttributeModel, "key", "value_json")
        param_rows, user_rows, inter_rows = [], [], []
        if user_attrs:  # else: states, objectives and system attributes (constraints) only
            param_rows = rows(m.TrialParamModel, "param_name", "param_value", "distribution_json", order="param_id")
            user_rows = rows(m.TrialUserAttributeModel, "key", "value_json")
            inter_rows = rows(m.TrialIntermediateValueModel, "step", "intermediate_value", "intermediate_value_type")

    values: dict[int, dict[int, float]] = {}
    for tid, objective, value, vtype in values_rows:
        values.setdefault(tid, {})[objective] = m.TrialValueModel.stored_repr_to_value(value, vtype)
    dists: dict[str, Any] = {}  # a search space has few distinct distributions: parse each once
    params: dict[int, dict[str, Any]] = {}
    distributions: dict[int, dict[str, Any]] = {}
    for tid, name, value, dj in param_rows:
        d = dists.get(dj)
        if d is None:
            d = dists[dj] = json_to_distribution(dj)
        params.setdefault(tid, {})[name] = d.to_external_repr(value)
        distributions.setdefault(tid, {})[name] = d
    users: dict[int, dict[str, Any]] = {}
    for tid, key, vj in user_rows:
        users.setdefault(tid, {})[key] = json.loads(vj)
    systems: dict[int, dict[str, Any]] = {}
    for tid, key, vj in system_rows:
        systems.setdefault(tid, {})[key] = json.loads(vj)
    inter: dict[int, dict[int, float]] = {}
    for tid, step, value, vtype in inter_rows:
        inter.setdefault(tid, {})[step] = m.TrialIntermediateValueModel.stored_repr_to_intermediate_value(value, vtype)

    import time

    utc_here = time.timezone == 0 and not time.daylight  # the local time is UTC: nothing to convert

    def local(d: Any) -> Any:  # as TrialModel.datetime_start/complete: stored as naive UTC, returned as naive local
        if d is None or utc_here:
            return d
        return d.replace(tzinfo=_dt.UTC).astimezone().replace(tzinfo=None)

    out = []
    for tid, number, state, start, complete in base:
        v = values.get(tid)
        out.append(FrozenTrial(
            number=number, state=state, value=None, values=[v[k] for k in range(len(v))] if v else None,
            datetime_start=local(start), datetime_complete=local(complete), params=params.get(tid, {}),
            distributions=distributions.get(tid, {}), user_attrs=users.get(tid, {}), system_attrs=systems.get(tid, {}),
            intermediate_values=inter.get(tid, {}), trial_id=tid))
    return out


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
    """The Pareto-optimal complete trials (Optuna's ``best_trials``), by trial number.

    Complete trials with a non-finite objective value (inf, nan) are left out (:func:`nonfinite_trials`).
    """
    return _front_of(study.get_trials(deepcopy=False), study.directions)


def _front_of(trials: list[FrozenTrial], directions: Any) -> list[FrozenTrial]:
    left_out = {t.number for t in nonfinite_trials(trials)}
    finite = [t for t in trials if t.number not in left_out]
    return sorted(objectives.front_trials(finite, directions), key=lambda t: t.number)


def nonfinite_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The complete trials among ``trials`` with a non-finite objective value (left out of the front)."""
    return [t for t in trials if t.state == TrialState.COMPLETE and t.values
            and not all(math.isfinite(v) for v in t.values)]


def is_infeasible(trial: FrozenTrial) -> bool:
    """Whether ``trial`` breaks a budget (an Optuna constraint > 0)."""
    return any(v > 0 for v in trial.constraints.values())


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
        "target": attrs.get("target"),
        "budget_violations": attrs.get("budget_violations") or {},
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
        from search_spaces.genes import Architecture  # loaded only when genes are described (no torch)

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

    The lease is one row of the table ``vitnas_study_leases`` in the study's own database (study name,
    host, pid, a per-lease token, heartbeat in Unix seconds, version). Taking it is a compare-and-set: an
    ``INSERT`` when no row exists (the primary key lets one of two racers win) or an ``UPDATE ... WHERE
    version = <the version read>`` over a dead holder's row (one racer changes the row, the other's
    update matches nothing), so two searches started at the same instant never both hold it. The
    heartbeat is renewed every ``renew`` seconds by a daemon thread and the row is deleted by
    :meth:`release`. A lease is free when there is no row, when its process is gone (same host: the pid
    no longer exists, e.g. after SIGKILL), or when its heartbeat is older than ``stale`` seconds.

    The study user attribute ``driver`` = {host, pid, token, heartbeat} mirrors the holder for people and
    tools reading the study (written on acquisition, cleared on release); a live holder recorded there by
    an older vitnas is respected too.

    Raises:
        StudyError: another live process holds the lease (the message says which and how to proceed), or
        the database cannot be written (read-only file or URL).
    """

    TABLE = "vitnas_study_leases"
    _TABLES: dict[str, Any] = {}  # SQLAlchemy tables by name, made once per process

    def __init__(self, study: optuna.Study, stale: float = 120.0, renew: float = 20.0,
                 storage: optuna.storages.BaseStorage | None = None) -> None:
        import os
        import socket
        import threading
        import time
        import uuid

        self.study, self._time, self.stale = study, time.time, stale
        self.me: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}
        self.lost = False  # set when a heartbeat finds the row taken over by another process
        self._engine = StudyLease._engine_of(storage if storage is not None else study._storage)
        self._table = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self._engine is None:  # an in-memory study: no other process can drive it
            return
        self._table = StudyLease._lease_table(self.TABLE)
        try:
            self._acquire()
        except StudyError:
            raise
        except Exception as exc:  # noqa: BLE001 - SQLAlchemyError: read-only, locked or broken storage
            raise StudyError(f"storage: cannot lock study {study.study_name!r} for this search "
                             f"({StudyLease._first_line(exc)}); a search needs a writable database") from None
        self._thread = threading.Thread(target=self._run, args=(renew,), daemon=True, name="vitnas-lease")
        self._thread.start()

    # ------------------------------------------------------------------ acquisition
    def _alive(self, held: dict[str, Any]) -> tuple[bool, float]:
        import os

        age = self._time() - float(held.get("heartbeat") or 0)
        alive = age < self.stale
        if held.get("host") == self.me["host"]:
            try:
                os.kill(int(held["pid"]), 0)
            except (OSError, ValueError, TypeError, KeyError):
                alive = False
        return alive, age

    def _refuse(self, held: dict[str, Any], age: float) -> StudyError:
        return StudyError(
            f"study: {self.study.study_name!r} is being searched by pid {held.get('pid')} on {held.get('host')} "
            f"(last seen {age:.0f} s ago); wait for it to finish or stop it first"
        )

    def _acquire(self) -> None:
        import sqlalchemy as sa

        name, t = self.study.study_name, self._table
        StudyLease._create_table(self._engine, t)
        # A holder recorded only in the study attribute (an older vitnas): respect it while it is alive.
        legacy = self.study.user_attrs.get("driver")
        if isinstance(legacy, dict) and legacy.get("token") is None \
                and {k: legacy.get(k) for k in ("host", "pid")} != {k: self.me[k] for k in ("host", "pid")}:
            alive, age = self._alive(legacy)
            if alive:
                raise self._refuse(legacy, age)
        for _ in range(50):
            with self._engine.connect() as conn:
                row = conn.execute(sa.select(t).where(t.c.study_name == name)).mappings().first()
            now = self._time()
            if row is None:
                try:
                    with self._engine.begin() as conn:
                        conn.execute(sa.insert(t).values(study_name=name, **self.me, heartbeat=now, version=1))
                    break
                except sa.exc.IntegrityError:  # another process inserted first: read its row and decide again
                    continue
            held = dict(row)
            if held["token"] != self.me["token"]:
                alive, age = self._alive(held)
                if alive:
                    raise self._refuse(held, age)
            with self._engine.begin() as conn:  # compare-and-set over the row read above
                won = conn.execute(sa.update(t).where(t.c.study_name == name, t.c.version == held["version"])
                                   .values(**self.me, heartbeat=now, version=held["version"] + 1)).rowcount
            if won == 1:
                break
        else:
            raise StudyError(f"study: cannot lock {name!r}: the lease kept changing; try again")
        try:  # informational mirror for people and tools reading the study
            self.study.set_user_attr("driver", {**self.me, "heartbeat": now})
        except Exception:  # noqa: BLE001 - the lease row is what counts
            pass

    # ------------------------------------------------------------------ renewal and release
    def _beat(self) -> None:
        import sqlalchemy as sa

        t = self._table
        with self._engine.begin() as conn:
            n = conn.execute(sa.update(t).where(t.c.study_name == self.study.study_name,
                                                t.c.token == self.me["token"])
                             .values(heartbeat=self._time(), version=t.c.version + 1)).rowcount
        if n == 0:
            self.lost = True

    def _run(self, renew: float) -> None:
        while not self._stop.wait(renew):
            try:
                self._beat()
            except Exception:  # noqa: BLE001 - a missed heartbeat only shortens the lease
                pass

    def release(self) -> None:
        """Stop renewing and remove the lease (only if it is still ours)."""
        import sqlalchemy as sa

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._table is None:
            return
        t = self._table
        try:
            with self._engine.begin() as conn:
                conn.execute(sa.delete(t).where(t.c.study_name == self.study.study_name,
                                                t.c.token == self.me["token"]))
            held = self.study.user_attrs.get("driver") or {}
            if held.get("token") == self.me["token"]:
                self.study.set_user_attr("driver", None)
        except Exception:  # noqa: BLE001 - a row left behind is taken over once its pid is gone
            pass


    @staticmethod
    def _first_line(exc: BaseException) -> str:
        text = str(getattr(exc, "orig", None) or exc).strip()
        return text.splitlines()[0][:200] if text else exc.__class__.__name__

    @staticmethod
    def _engine_of(storage: Any) -> Any:
        """The SQLAlchemy engine behind an Optuna storage (RDB, possibly cached), or None."""
        for _ in range(3):
            if storage is None:
                return None
            engine = getattr(storage, "engine", None)
            if engine is not None:
                return engine
            storage = getattr(storage, "_backend", None)
        return None

    @staticmethod
    def _lease_table(name: str) -> Any:
        import sqlalchemy as sa

        if name not in StudyLease._TABLES:
            StudyLease._TABLES[name] = sa.Table(
                name, sa.MetaData(),
                sa.Column("study_name", sa.String(512), primary_key=True),
                sa.Column("host", sa.String(255), nullable=False),
                sa.Column("pid", sa.Integer, nullable=False),
                sa.Column("token", sa.String(64), nullable=False),
                sa.Column("heartbeat", sa.Float, nullable=False),
                sa.Column("version", sa.Integer, nullable=False),
            )
        return StudyLease._TABLES[name]

    @staticmethod
    def _create_table(engine: Any, table: Any) -> None:
        """Create the lease table if missing; a racing creator's table is as good as ours."""
        import sqlalchemy as sa

        if sa.inspect(engine).has_table(table.name):
            return
        try:
            table.create(engine, checkfirst=True)
        except sa.exc.SQLAlchemyError:
            if not sa.inspect(engine).has_table(table.name):
                raise


def hypervolume(trials: list[FrozenTrial], bounds: objectives.HVBounds | None = None) -> float:
    """Normalised hypervolume of the complete ``trials``: the fraction of the unit cube they dominate once
    each objective is mapped to [0, 1] by ``bounds`` (the study's stored bounds,
    :func:`nas.objectives.study_bounds`; default: the objectives' own), reference point the cube's worst
    corner (:func:`nas.objectives.normalised_hypervolume`). Non-finite trials are left out.
    """
    bounds = bounds or objectives.hv_bounds()
    rows = [t.values for t in trials if t.state == TrialState.COMPLETE and t.values]
    return objectives.normalised_hypervolume(rows, bounds)


def target_shape(study: optuna.Study) -> dict[str, Any]:
    """The deployment shape the study's params, FLOPs, throughput and memory belong to: ``img_size``,
    ``batch``, ``dtype`` (``auto``: bfloat16 on CUDA, float32 on the CPU); a study made before vitnas
    stored one measured at its data set's image size, batch 64."""
    attrs = study.user_attrs
    return dict(attrs.get("target") or {"img_size": attrs.get("img_size"), "batch": 64, "dtype": "auto"})


def describe_shape(shape: dict[str, Any]) -> str:
    """``112 px, batch 8, float32``: a shape in words (dtype ``auto``: float32 on the CPU, bfloat16 on CUDA)."""
    dtype = shape.get("dtype", "auto")
    dtype = "float32 on the CPU, bfloat16 on CUDA" if dtype == "auto" else dtype
    return f"{shape.get('img_size')} px, batch {shape.get('batch')}, {dtype}"


def study_status(study: optuna.Study) -> dict[str, Any]:
    """Counts of trials by state (complete, running, failed, queued, pruned), the front size, the current
    normalised hypervolume (:func:`hypervolume`, with the study's bounds), the failure reasons by count,
    the proxy and deployment shapes, the budgets and how many complete trials break them.

    Reads the objectives of every trial but the user attributes of the failed ones only
    (:func:`read_trials`), so a large study's curves and genes are never decoded here.
    """
    trials = read_trials(study, user_attrs=False)
    count = lambda state: sum(1 for t in trials if t.state == state)  # noqa: E731
    reasons: dict[str, int] = {}
    if count(TrialState.FAIL):
        for t in read_trials(study, (TrialState.FAIL,)):
            r = t.user_attrs.get("fail_reason", "unknown")
            reasons[r] = reasons.get(r, 0) + 1
    front = _front_of(trials, study.directions) if count(TrialState.COMPLETE) else []
    bounds = objectives.study_bounds(study.user_attrs)
    infeasible = sum(1 for t in trials if t.state == TrialState.COMPLETE and is_infeasible(t))
    return {
        "study": study.study_name,
        "complete": count(TrialState.COMPLETE), "running": count(TrialState.RUNNING),
        "failed": count(TrialState.FAIL), "queued": count(TrialState.WAITING), "pruned": count(TrialState.PRUNED),
        "front_size": len(front), "hypervolume": hypervolume(front, bounds),
        "hv_bounds": bounds.to_dict(), "fail_reasons": reasons, "dataset": study.user_attrs.get("dataset"),
        "proxy_img_size": study.user_attrs.get("img_size"), "target": target_shape(study),
        "budgets": study.user_attrs.get("budgets") or {}, "infeasible": infeasible,
    }


def trained_epochs(state: TrialState, attrs: dict[str, Any]) -> int:
    """Proxy epochs a trial that ended trained: its curve's length when COMPLETE (0 for a reused result),
    ``pruned_at_epoch`` when PRUNED, 0 otherwise."""
    if state == TrialState.PRUNED:
        return int(attrs.get("pruned_at_epoch") or 0)
    if state == TrialState.COMPLETE and "reused_from" not in attrs:
        return len(attrs.get("curve") or [])
    return 0
