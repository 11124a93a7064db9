"""FNet: the real part of a 2-D Fourier transform in place of attention (arXiv 2105.03824): the registry's
spec.

The layer: :class:`search_spaces.attention.fnet.FNetMixing`.
"""

from __future__ import annotations

from ..registry import MechanismSpec

__all__ = ["MECHANISM"]

MECHANISM = MechanismSpec(
    name="fnet", order=7, module="search_spaces.attention.fnet:FNetMixing", build="search_spaces.attention.fnet:build",
    has_qkv=False, uses_heads=False,
    summary="FNet: real part of a 2-D Fourier transform in place of attention (arXiv 2105.03824)",
    scaling="orthonormal 2-D DFT (the paper's divided by sqrt(N C)): in vitnas's pre-norm block the paper's "
            "unnormalised one grows as sqrt(N C) (16-97x its input at 17-197 tokens; FNet is post-LN, arXiv 2105.03824)",
)
