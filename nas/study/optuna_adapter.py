"""The one module that reaches into Optuna past its public API, and why (docs/design.md, "Dependencies").

Optuna documents ``Study``, ``Trial``, ``FrozenTrial`` and the storages' public methods; what vitnas needs
beyond them is here, each use commented, so a new Optuna release that moves something breaks this module
and its test (tests/test_adapters.py, run on the newest release CI resolves), not the search:

- :class:`BulkRDBStorage` reads trials with one ``SELECT`` per table of Optuna's RDB schema
  (``optuna.storages._rdb.models``) instead of one ORM object per row: about six times faster, which keeps a
  10,000-trial study readable in seconds. It overrides ``RDBStorage._get_trials`` (the method every trial
  read goes through) and falls back to Optuna's own reader on any error, so a schema change costs speed,
  never results.
- :func:`read_trials` needs the storage behind a study (``Study._storage``, possibly inside Optuna's
  ``_CachedStorage`` as ``_backend``) and the FrozenTrial's storage id (``FrozenTrial._trial_id``), which
  Optuna keeps private; the study id comes from the public ``get_study_id_from_name``.
- :func:`engine_of` finds the SQLAlchemy engine of an RDB storage (``RDBStorage.engine`` is a public
  attribute; the cache wrapper's ``_backend`` is not), for vitnas' own lease table in the study's database.
- :func:`set_metric_names` calls the experimental ``Study.set_metric_names`` with its warning silenced.
- :func:`sampled_by_nsga2` reads the system attribute NSGA-II marks its trials with (not a documented key).
- :func:`import_importance` imports ``optuna.importance`` without loading scikit-learn, which Optuna imports
  there only for evaluators vitnas does not use (PED-ANOVA needs none), so the dashboard starts fast.
"""

from __future__ import annotations

import datetime as _dt
import sys
import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["BulkRDBStorage", "read_trials", "engine_of", "study_engine", "set_metric_names", "import_importance",
           "NSGA2_GENERATION_KEY", "sampled_by_nsga2"]

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


def _storage_of(study: optuna.Study) -> Any:
    # Private: Optuna exposes no public handle on a study's storage.
    return getattr(study, "_storage", None)


def _unwrap(storage: Any) -> Any:
    # Private: Optuna's _CachedStorage keeps the RDB storage it wraps as ``_backend``.
    return getattr(storage, "_backend", None)


def _rdb_backend(study: optuna.Study) -> Any:
    """The :class:`optuna.storages.RDBStorage` behind ``study`` (possibly inside Optuna's cache), or None."""
    storage = _storage_of(study)
    for _ in range(3):
        if isinstance(storage, optuna.storages.RDBStorage):
            return storage
        storage = _unwrap(storage)
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
            return _bulk_read(rdb, rdb.get_study_id_from_name(study.study_name), states, user_attrs)
        except Exception:  # noqa: BLE001 - Optuna's own (slower) reader is always right
            pass
    trials = study.get_trials(deepcopy=False, states=states)
    if not user_attrs:
        trials = [_without_user_attrs(t) for t in trials]
    return sorted(trials, key=lambda t: t.number)


def _without_user_attrs(t: FrozenTrial) -> FrozenTrial:
    return FrozenTrial(number=t.number, state=t.state, value=None, values=t.values, datetime_start=t.datetime_start,
                       datetime_complete=t.datetime_complete, params={}, distributions={}, user_attrs={},
                       system_attrs=t.system_attrs, intermediate_values={}, trial_id=t._trial_id)  # private: no public storage id


def with_values(t: FrozenTrial, values: list[float]) -> FrozenTrial:
    """A copy of ``t`` with other objective values (a design's confirmed accuracy in place of its proxy's), for
    choosing a front; the copy is never stored."""
    return FrozenTrial(number=t.number, state=t.state, value=None, values=list(values), datetime_start=t.datetime_start,
                       datetime_complete=t.datetime_complete, params=t.params, distributions=t.distributions,
                       user_attrs=t.user_attrs, system_attrs=t.system_attrs, intermediate_values=t.intermediate_values,
                       trial_id=t._trial_id)  # private: no public storage id


def _bulk_read(rdb: optuna.storages.RDBStorage, study_id: int, states: Any, user_attrs: bool,
               included_trial_ids: set[int] | None = None, trial_id_greater_than: int = -1) -> list[FrozenTrial]:
    """The trials of ``study_id`` as ``RDBStorage._get_trials`` returns them (same filters, by trial id)."""
    import json

    import sqlalchemy as sa
    from optuna.distributions import json_to_distribution
    from optuna.storages._rdb import models as m  # private: the schema of the installed Optuna

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


def engine_of(storage: Any) -> Any:
    """The SQLAlchemy engine behind an Optuna storage (RDB, possibly cached), or None (an in-memory storage)."""
    for _ in range(3):
        if storage is None:
            return None
        engine = getattr(storage, "engine", None)
        if engine is not None:
            return engine
        storage = _unwrap(storage)
    return None


def study_engine(study: optuna.Study) -> Any:
    """The SQLAlchemy engine of ``study``'s storage, or None."""
    return engine_of(_storage_of(study))


#: The system attribute NSGA-II (Optuna's ``NSGAIISampler``) writes on every trial it samples, with the
#: trial's generation. Not a documented API: a release that renames it makes :func:`sampled_by_nsga2` false.
NSGA2_GENERATION_KEY = "NSGAIISampler:generation"


def sampled_by_nsga2(trial: FrozenTrial) -> bool:
    """Whether Optuna's NSGA-II sampled ``trial`` (it marks the trials it handles with their generation)."""
    return NSGA2_GENERATION_KEY in trial.system_attrs


def set_metric_names(study: optuna.Study, names: list[str]) -> None:
    """``study.set_metric_names(names)`` (experimental in Optuna; its warning is silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(names)


def import_importance() -> None:
    """Import ``optuna.importance`` as Optuna does where scikit-learn is not installed (an optional dependency
    of Optuna): importing it loads its fANOVA module, which imports scikit-learn (1-1.5 s on a 2-core
    machine), while the dashboard's gene importances use PED-ANOVA, which needs none of it. In this process
    fANOVA is then unavailable; nothing in vitnas uses it. Where Optuna changes how it imports scikit-learn,
    the import falls back to the ordinary one; a scikit-learn already loaded is left as it is."""
    if "optuna.importance" in sys.modules or "sklearn" in sys.modules:
        return
    sys.modules["sklearn"] = None  # type: ignore[assignment]  # "import sklearn" raises ImportError meanwhile
    try:
        import optuna.importance  # noqa: F401
    except ImportError:
        pass
    finally:
        if sys.modules.get("sklearn", 0) is None:
            del sys.modules["sklearn"]
    if "optuna.importance" not in sys.modules:
        import optuna.importance  # noqa: F401, F811
