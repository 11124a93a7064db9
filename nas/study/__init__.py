"""The study layer: the Optuna study as the single source of truth of a search, read and written without Ray
or torch (docs/design.md, "Layers").

- :mod:`nas.study.record`: :class:`StudyMeta`, the typed record of a study, and the one writer of vitnas'
  user attributes;
- :mod:`nas.study.storage`: storages by URL, creating or loading a study against its record, the lease;
- :mod:`nas.study.front`: trials for display, the Pareto front, knee and picks, hypervolume, status;
- :mod:`nas.study.optuna_adapter`: the only place vitnas uses Optuna past its public API, each use explained.

The dashboards and export use this layer; the search engine (:mod:`nas.engine`) writes through it.
"""

from __future__ import annotations

from .. import objectives
from .front import (
    confirmation,
    confirmations,
    describe_arch,
    describe_shape,
    front_records,
    get_trial,
    hypervolume,
    is_infeasible,
    knee_trial,
    nonfinite_trials,
    not_separated,
    pareto_front,
    pick_trial,
    read_trials,
    study_status,
    superseded,
    target_shape,
    trained_epochs,
    trial_record,
)
from .optuna_adapter import BulkRDBStorage
from .record import META_VERSION, StudyMeta, StudyMetaError, read_meta, set_trial_attrs, write_meta
from .storage import (
    DEFAULT_STORAGE,
    StudyError,
    StudyLease,
    create_or_load_study,
    display_url,
    load_study,
    mark_interrupted,
    open_storage,
    sqlite_path,
)

#: Metric names and Optuna directions, as :mod:`nas.objectives` declares them.
OBJECTIVES: tuple[str, ...] = objectives.names()
DIRECTIONS: tuple[str, ...] = objectives.direction_names()

__all__ = [
    "OBJECTIVES", "DIRECTIONS", "DEFAULT_STORAGE", "StudyError", "StudyMeta", "StudyMetaError", "META_VERSION",
    "open_storage", "create_or_load_study", "load_study", "get_trial", "pareto_front", "nonfinite_trials",
    "front_records", "trial_record", "mark_interrupted", "hypervolume", "target_shape", "describe_shape",
    "is_infeasible", "knee_trial", "pick_trial", "describe_arch", "study_status", "trained_epochs", "read_trials",
    "StudyLease", "BulkRDBStorage", "display_url", "sqlite_path", "read_meta", "write_meta", "set_trial_attrs",
    "confirmation", "confirmations", "not_separated", "superseded",
]
