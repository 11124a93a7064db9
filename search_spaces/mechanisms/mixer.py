"""MLP-Mixer's token mixing in place of attention (arXiv 2105.01601): the registry's spec.

The layer: :class:`search_spaces.attention.mixer.TokenMixingMLP`.
"""

from __future__ import annotations

from ..registry import MechanismSpec

__all__ = ["MECHANISM"]

MECHANISM = MechanismSpec(
    name="mixer", order=8, module="search_spaces.attention.mixer:TokenMixingMLP",
    build="search_spaces.attention.mixer:build", has_qkv=False, fixed_tokens=True,
    uses_heads=False, summary="MLP-Mixer token mixing in place of attention (arXiv 2105.01601)",
    scaling="token-MLP width D_S = max(C/2, 256), independent of N as in the paper (so the cost stays linear "
            "in N); 256 is its smallest width (Mixer-S), at least N on every proxy grid (arXiv 2105.01601, "
            "section 2 and Table 1)",
)
