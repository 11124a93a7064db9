"""Multi-head self-attention (ViT, arXiv 2010.11929; DeiT, arXiv 2012.12877): the registry's spec.

The layer: :class:`search_spaces.attention.mhsa.MHSA`.
"""

from __future__ import annotations

from ..registry import MechanismSpec

__all__ = ["MECHANISM"]

MECHANISM = MechanismSpec(
    name="mhsa", order=0, module="search_spaces.attention.mhsa:MHSA", build="search_spaces.attention.mhsa:build",
    summary="ViT/DeiT multi-head self-attention (arXiv 2010.11929, 2012.12877)",
)
