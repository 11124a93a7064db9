"""Where a study lives: opening its storage by URL, creating or loading it against its record, the lease that
lets one search drive it, and failing the trials a killed search left running.

The Optuna study in an SQLAlchemy URL is the single source of truth of a search (docs/design.md). Ray-free and
torch-free: the CLI's storage-only commands, the dashboards and export use this layer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from .. import objectives
from . import optuna_adapter
from .record import META_KEY, StudyMeta, StudyMetaError, mirror_driver, read_meta, write_meta

__all__ = ["DEFAULT_STORAGE", "StudyError", "display_url", "sqlite_path", "open_storage", "create_or_load_study",
           "load_study", "mark_interrupted", "StudyLease"]

DEFAULT_STORAGE = "sqlite:///runs/vitnas.db"

# Optuna's per-study and per-trial INFO lines stay out of the user's terminal: vitnas shows its own progress.
optuna.logging.set_verbosity(optuna.logging.WARNING)

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
        return optuna_adapter.BulkRDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as exc:  # sqlalchemy ArgumentError/OperationalError, missing drivers, corrupt files
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise StudyError(f"storage: cannot open {display_url(url)!r}: {detail[:200]}") from None


def create_or_load_study(storage: optuna.storages.BaseStorage, name: str,
                         sampler: optuna.samplers.BaseSampler | None = None, meta: StudyMeta | None = None,
                         derive: Callable[[StudyMeta], dict[str, Any]] | None = None) -> optuna.Study:
    """Create the study ``name`` with vitnas' objectives (:mod:`nas.objectives`) and the record ``meta``, or
    load it if it exists and its record agrees with ``meta`` (:meth:`StudyMeta.mismatch`: one comparison).

    ``derive(record)`` returns the record's derived fields (``{"hv_bounds": ...}``) that are costly to
    compute; it is called only when the record lacks one of them (a new study, or one made by an older vitnas,
    which is migrated: its missing fields are filled in and the record version written).

    Raises:
        StudyError: the existing study has other objectives, other settings (the message names the first
            field that differs) or was written by a newer vitnas.
    """
    existing = {s.study_name for s in optuna.storages.get_storage(storage).get_all_studies()}  # names only: no trial read
    if name in existing:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        if list(study.directions) != objectives.directions():
            raise StudyError(f"study: {name!r} exists with other objectives; choose another --study")
        if meta is None:
            return study
        try:
            stored = read_meta(study)
        except StudyMetaError as exc:
            raise StudyError(str(exc)) from None
        diff = stored.mismatch(meta, lenient=study.user_attrs.get(META_KEY) is None)
        if diff is not None:
            key, was, now = diff
            if key.startswith("space."):
                raise StudyError(f"config: study {name!r} was searched with {key[6:]}={was}, not {now}; "
                                 "use the same search space (config) or another study")
            raise StudyError(f"study: {name!r} was created with {key}={was!r}, not {now!r}; use the same settings "
                             "or another --study")
        filled = stored.replace(**{k: v for k, v in vars(meta).items() if getattr(stored, k) is None and v is not None})
        _complete(study, filled, derive, force=study.user_attrs.get(META_KEY) is None or filled != stored)
        return study
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, directions=objectives.directions())
    optuna_adapter.set_metric_names(study, list(objectives.names()))
    if meta is not None:
        _complete(study, meta, derive, force=True)
    return study


def _complete(study: optuna.Study, meta: StudyMeta, derive: Callable[[StudyMeta], dict[str, Any]] | None,
              force: bool) -> None:
    """Write ``meta`` with its derived fields filled in, when anything is new (``force``) or derived.

    Raises:
        StudyError: the storage cannot be written (a read-only file or URL, a locked database).
    """
    if derive is not None and meta.hv_bounds is None:
        meta = meta.replace(**derive(meta))
        force = True
    if not force:
        return
    from sqlalchemy.exc import SQLAlchemyError

    try:
        write_meta(study, meta)
    except (optuna.exceptions.StorageInternalError, SQLAlchemyError) as exc:
        cause = exc.__cause__ or exc
        detail = str(getattr(cause, "orig", None) or cause).strip().splitlines()
        raise StudyError(f"storage: cannot write study {study.study_name!r} ({detail[0][:200] if detail else exc}); "
                         "a search needs a writable database") from None


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
        self._engine = optuna_adapter.engine_of(storage) if storage is not None else optuna_adapter.study_engine(study)
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
            mirror_driver(self.study, {**self.me, "heartbeat": now})
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
                mirror_driver(self.study, None)
        except Exception:  # noqa: BLE001 - a row left behind is taken over once its pid is gone
            pass


    @staticmethod
    def _first_line(exc: BaseException) -> str:
        text = str(getattr(exc, "orig", None) or exc).strip()
        return text.splitlines()[0][:200] if text else exc.__class__.__name__

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
