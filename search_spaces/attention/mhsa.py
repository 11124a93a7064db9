"""Multi-head self-attention (ViT, arXiv 2010.11929; DeiT, arXiv 2012.12877)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .common import QKV, AttentionModule, TokenLayout, merge_heads

if TYPE_CHECKING:  # pragma: no cover
    from ..genes import Architecture

__all__ = ["MHSA", "build"]


class MHSA(AttentionModule):
    """Multi-head self-attention, ``softmax(Q K^T / sqrt(d)) V`` per head, then the output projection.

    Source: Vaswani et al. (arXiv 1706.03762, eq. 1) as used by ViT (arXiv 2010.11929, eq. 5-7).
    Computed by ``torch.nn.functional.scaled_dot_product_attention`` so fused kernels (flash,
    memory-efficient) are used where the device has them.

    Shapes: ``x`` (B, N, C) -> (B, N, C); ``layout`` gives the rotary encoding, if any.
    Parameters: 4C^2 + 4C (``qkv`` and ``proj``), or 2C^2 + 2C with ``compact`` (Armour).
    Multiply-adds per image: 4 N C^2 (projections; 2 N C^2 when compact) + 2 N^2 C (scores and values).
    """

    def __init__(self, dim: int, num_heads: int, compact: bool = False, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = QKV(dim, num_heads, compact=compact, qkv_bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        q, k, v = self.qkv(x, layout)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(merge_heads(out)))

    def macs(self, layout: TokenLayout) -> int:
        """Analytic multiply-adds for one image: 4 N C^2 (2 N C^2 compact) + 2 N^2 C; softmax excluded."""
        n, c = layout.num_tokens, self.proj.in_features
        return self.qkv.macs(n) + n * c * c + 2 * n * n * c


def build(arch: Architecture, layer_index: int, layout: TokenLayout) -> MHSA:
    return MHSA(arch.embed_dim, arch.num_heads, compact=arch.compact)
