"""vitnas search: the Optuna study and its storage, the Ray Tune fan-out, export and the CLI.

The public names load on first use (PEP 562), so ``vitnas --help`` and the storage-only commands do not
import torch, timm or Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the submodule that defines it.
_EXPORTS = {
    "ExportError": "export", "export_trial": "export",
    "SAMPLERS": "engine.settings", "SearchConfig": "engine.settings", "SearchError": "engine.settings",
    "TrialEvent": "engine.settings",
    "run_search": "engine.search", "RetrainConfig": "engine.retrain", "run_retrain": "engine.retrain",
    "DEFAULT_STORAGE": "study", "OBJECTIVES": "study", "StudyError": "study", "front_records": "study",
    "hypervolume": "study", "load_study": "study", "pareto_front": "study", "trial_record": "study",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nas' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
