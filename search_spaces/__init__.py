"""vitnas search space: genes, their domains and rules, the attention zoo, its registry
(:mod:`search_spaces.registry`) and the model builder.

Importing this package registers the ``nas_vit`` model with timm.
"""

from . import registry
from .genes import ATTENTIONS, Architecture, GeneError, applicable_genes
from .model import NasViT, build_model
from .presets import PRESETS, get_preset
from .space import SearchSpace, SpaceError

__all__ = [
    "ATTENTIONS", "Architecture", "GeneError", "applicable_genes", "NasViT", "build_model",
    "PRESETS", "get_preset", "SearchSpace", "SpaceError", "registry",
]
