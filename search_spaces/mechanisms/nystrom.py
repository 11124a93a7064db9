"""Nystromformer: a landmark approximation of the softmax map (arXiv 2102.03902): the registry's spec and the
rules for the landmarks and the value convolution.

The layer: :class:`search_spaces.attention.nystrom.NystromAttention`.
"""

from __future__ import annotations

from ..registry import MechanismSpec

__all__ = ["NYSTROM_MAX_LANDMARKS", "NYSTROM_MAX_KERNEL", "nystrom_landmarks", "nystrom_conv_kernel", "MECHANISM"]

#: Vision Xformers' landmark count and value-convolution length (arXiv 2107.02239, at N = 1,025), reached
#: from N = 128 and N = 512 tokens on respectively.
NYSTROM_MAX_LANDMARKS = 16
NYSTROM_MAX_KERNEL = 33


def nystrom_landmarks(num_tokens: int) -> int:
    """Landmarks m for N = ``num_tokens``: ``m = min(16, max(1, floor(N / 8)))``.

    Source: Nystromformer (arXiv 2102.03902, section 4) pre-trains with m = 64 landmarks on n = 512
    tokens, one landmark per 8 tokens; Vision Xformers (arXiv 2107.02239) keeps 16 landmarks at N = 1,025.
    Sixteen landmarks at 17 tokens are about one token each (exact softmax attention at several times its
    cost); with this rule m <= N / 8 (2 at N = 17, 8 at N = 65), and the 16 hold from N = 128 on.
    """
    return min(NYSTROM_MAX_LANDMARKS, max(1, num_tokens // 8))


def nystrom_conv_kernel(num_tokens: int) -> int:
    """Length s of the depthwise value convolution for N = ``num_tokens``: ``s = min(33, 2 floor(N / 32) + 1)``,
    at least 3 (odd, so the output keeps length N).

    Source: Vision Xformers (arXiv 2107.02239) uses s = 33 at N = 1,025 tokens, the default of the
    nystrom-attention package it builds on. The scaling is ours: a half-width of N / 32 tokens, which
    reaches those 33 taps at N = 512 and keeps them above. 33 taps at 17 to 65 tokens would span the
    whole sequence; with this rule s = 3 up to N = 63 (shorter than any N of the space, which starts at
    17), 13 at N = 197, 33 from N = 512 on.
    """
    return min(NYSTROM_MAX_KERNEL, max(3, 2 * (num_tokens // 32) + 1))


MECHANISM = MechanismSpec(
    name="nystrom", order=6, module="search_spaces.attention.nystrom:NystromAttention",
    build="search_spaces.attention.nystrom:build",
    summary="Nystromformer: landmark approximation of the softmax map (arXiv 2102.03902)",
    scaling="m = min(16, floor(N/8)) landmarks (Nystromformer: 64 at n = 512, arXiv 2102.03902) and a value "
            "convolution of min(33, 2 floor(N/32) + 1) >= 3 taps (Vision Xformers: 33 at N = 1,025)",
)
