"""vitnas search space: genes, their domains and rules, the attention zoo, its registry
(:mod:`search_spaces.registry`) and the model builder.

Importing this package registers the ``nas_vit`` model with timm (it imports torch and timm), so that
``import search_spaces, timm; timm.create_model("local-dir:DIR")`` loads an export. The genes, the
registry and the search space themselves need neither: the ``vitnas`` command line sets
``VITNAS_DEFER_MODEL=1`` while it runs, and then the model builder (:mod:`search_spaces.model`, which
registers ``nas_vit``) loads the first time ``NasViT`` or ``build_model`` is used.
"""

from __future__ import annotations

import os
from typing import Any

from . import registry
from .genes import ATTENTIONS, Architecture, GeneError, applicable_genes
from .presets import PRESETS, get_preset
from .space import SearchSpace, SpaceError

__all__ = [
    "ATTENTIONS", "Architecture", "GeneError", "applicable_genes", "NasViT", "build_model",
    "PRESETS", "get_preset", "SearchSpace", "SpaceError", "registry",
]

#: Environment variable that defers the import of the model builder (and of torch and timm) until first use.
DEFER_MODEL_ENV = "VITNAS_DEFER_MODEL"


def __getattr__(name: str) -> Any:
    if name in ("NasViT", "build_model"):
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'search_spaces' has no attribute {name!r}")


if os.environ.get(DEFER_MODEL_ENV) != "1":
    from .model import NasViT, build_model  # registers nas_vit with timm
