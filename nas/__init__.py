"""vitnas search: the Optuna study and its storage, the Ray Tune fan-out, export and the CLI."""

from .export import ExportError, export_trial
from .search import SAMPLERS, SearchConfig, SearchError, TrialEvent, run_search
from .study import (
    DEFAULT_STORAGE,
    OBJECTIVES,
    StudyError,
    front_records,
    hypervolume,
    load_study,
    pareto_front,
    trial_record,
)

__all__ = [
    "ExportError", "export_trial", "SAMPLERS", "SearchConfig", "SearchError", "TrialEvent", "run_search",
    "DEFAULT_STORAGE", "OBJECTIVES", "StudyError", "front_records", "hypervolume", "load_study", "pareto_front",
    "trial_record",
]
