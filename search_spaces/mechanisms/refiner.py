"""Refiner: attention expansion and distributed local attention over the maps (arXiv 2106.03714): the
registry's spec and the expansion gene.

The layer: :class:`search_spaces.attention.refiner.RefinerAttention`.
"""

from __future__ import annotations

from ..registry import GeneSpec, MechanismSpec, or_list

__all__ = ["REFINER_EXPANSIONS", "MECHANISM"]

#: Domain of the attention-expansion ratio r (the paper's models use 3 and 6).
REFINER_EXPANSIONS: tuple[int, ...] = (1, 2, 3, 4, 6)

MECHANISM = MechanismSpec(
    name="refiner", order=2, module="search_spaces.attention.refiner:RefinerAttention",
    build="search_spaces.attention.refiner:build", explicit_map=True,
    summary="Refiner: expansion and local convolution of the attention maps (arXiv 2106.03714)",
    genes=(
        GeneSpec(name="refiner_expansion", choices=REFINER_EXPANSIONS, neutral=None, item="expansion",
                 label=lambda arch: f"r{arch.refiner_expansion}",
                 rule=f"{{owners}} only (required): {or_list(REFINER_EXPANSIONS)}"),
    ),
)
