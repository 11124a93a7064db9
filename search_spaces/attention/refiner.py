"""Refiner: attention expansion and distributed local attention over the maps (arXiv 2106.03714)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .common import QKV, AttentionModule, TokenLayout, merge_heads

if TYPE_CHECKING:  # pragma: no cover
    from ..genes import Architecture

__all__ = ["RefinerAttention", "build"]



class RefinerAttention(AttentionModule):
    """Self-attention whose attention maps are refined before they weigh the values (Refiner,
    "Refiner: Refining Self-attention for Vision Transformers", arXiv 2106.03714).

    Equation, as the paper describes the refiner (A_h is an N x N map, r the expansion ratio)::

        A_h  = softmax(Q_h K_h^T / sqrt(d))                     h = 1..H
        E_e  = sum_h W_exp[e, h] A_h                            e = 1..rH   (attention expansion, 1x1)
        E'_e = D_e (*) E_e                                      k x k depthwise conv over each N x N map,
                                                                zero padding k // 2 ("distributed local
                                                                attention")
        R_h  = sum_e W_red[h, e] E'_e                           (attention reduction, 1x1, rH -> H)
        out  = concat_h(R_h V_h) W_o + b_o

    The refined maps are used as they are (no renormalisation after the refinement). The convolution
    runs over the whole N x N map, prefix (class-token) rows and columns included, exactly as if the map
    were an N x N image; this is how both the paper's figure and the released code treat it.

    Initialisation (:meth:`reset_parameters_extra`): the refiner starts close to the identity, so the
    layer starts close to MHSA: ``W_exp`` copies head h to its r expanded maps, ``D`` is a centred delta
    kernel, ``W_red`` averages the r copies back; small noise (std 0.02) on ``W_exp`` and ``D`` breaks the
    symmetry between the copies. The refiner parameters live directly on this module (not in child
    layers) so timm's generic ViT init does not overwrite them.

    Args:
        dim: C. num_heads: H. expansion: r (>= 1; the gene takes 1, 2, 3, 4, 6).
        compact: Armour compact Q, K, V (see :class:`~.common.QKV`). qkv_bias: bias on the Q, K, V layer.
        kernel_size: k of the depthwise convolution (odd; 3 in the paper).
        attn_drop: dropout on the softmax maps. proj_drop: dropout after the output projection.

    Parameters: 4C^2 + 4C (``qkv``, ``proj``; 2C^2 + 2C compact) + 2 r H^2 (``expand``, ``reduce``)
    + r H k^2 (``depthwise``); no biases in the refiner.
    Multiply-adds per image (:meth:`macs`): 4 N C^2 (2 N C^2 compact) + 2 N^2 C (scores, values)
    + N^2 (2 r H^2 + r H k^2) for the refiner.
    Memory: the expanded maps are r H N^2 per image and several such tensors are kept for the backward
    pass, so activation memory grows as r * H * N^2 per layer (no fused attention kernel is possible).

    Shapes: ``x`` (B, N, C) -> (B, N, C); maps (B, H, N, N) -> (B, rH, N, N) -> (B, H, N, N).

    How the released code (github.com/zhoudaquan/Refiner_ViT) differs from this paper version:
    - Blocks alternate: "shared" blocks compute no new map but refine the previous block's map and only
      project values; the other blocks add the previous map (scaled) to their own softmax map.
    - The refiner there is an inverted-residual stack with BatchNorm after the expansion, the depthwise
      and the reduction convolutions, ReLU6 after the first two, an identity residual around the stack
      and a further BatchNorm on the refined maps; with expansion 1 the expansion step is skipped.
    - There is no softmax (or any renormalisation) after the refinement — the same as here.
    - Q and K are each scaled by d^-1/4 and the block rescales its input and residual by 0.5 / 2.
    None of that is reproduced here; this layer is a drop-in block without cross-layer state.
    """

    def __init__(self, dim: int, num_heads: int, expansion: int, compact: bool = False, qkv_bias: bool = True,
                 kernel_size: int = 3, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if not isinstance(expansion, int) or expansion < 1:
            raise ValueError(f"refiner_expansion: must be a positive integer, got {expansion!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: must be a positive odd integer, got {kernel_size}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.expansion = expansion
        self.kernel_size = kernel_size
        self.qkv = QKV(dim, num_heads, compact=compact, qkv_bias=qkv_bias)
        hidden = expansion * num_heads
        self.expand = nn.Parameter(torch.empty(hidden, num_heads))          # 1x1 over heads, H -> rH
        self.depthwise = nn.Parameter(torch.empty(hidden, 1, kernel_size, kernel_size))
        self.reduce = nn.Parameter(torch.empty(num_heads, hidden))          # 1x1 over heads, rH -> H
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.reset_parameters_extra()

    @torch.no_grad()
    def reset_parameters_extra(self) -> None:
        """Near-identity refiner (see the class docstring); called again by the model after timm's init."""
        r, h, k = self.expansion, self.num_heads, self.kernel_size
        eye = torch.eye(h, dtype=self.expand.dtype, device=self.expand.device)
        self.expand.copy_(eye.repeat_interleave(r, dim=0))                  # expanded map e = h*r + j <- head h
        self.expand.add_(torch.randn_like(self.expand), alpha=0.02)
        self.depthwise.zero_()
        self.depthwise[:, 0, k // 2, k // 2] = 1.0
        self.depthwise.add_(torch.randn_like(self.depthwise), alpha=0.02)
        self.reduce.copy_(eye.repeat_interleave(r, dim=1) / r)

    def refine(self, attn: torch.Tensor) -> torch.Tensor:
        """Expansion, depthwise k x k convolution and reduction: (B, H, N, N) -> (B, H, N, N)."""
        e = torch.einsum("eh,bhij->beij", self.expand.to(attn.dtype), attn)
        e = F.conv2d(e, self.depthwise.to(e.dtype), padding=self.kernel_size // 2, groups=e.shape[1])
        return torch.einsum("he,beij->bhij", self.reduce.to(e.dtype), e)

    def attention_maps(self, x: torch.Tensor, layout: TokenLayout) -> tuple[torch.Tensor, torch.Tensor]:
        """The softmax maps and the refined maps, each (B, H, N, N) (no dropout)."""
        q, k, _ = self.qkv(x, layout)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return attn, self.refine(attn)

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        q, k, v = self.qkv(x, layout)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        if self.training and self.attn_drop:
            attn = F.dropout(attn, self.attn_drop)
        out = self.refine(attn) @ v
        return self.proj_drop(self.proj(merge_heads(out)))

    def macs(self, layout: TokenLayout) -> int:
        """Analytic multiply-adds for one image (products only; softmax excluded)."""
        n, c = layout.num_tokens, self.proj.in_features
        h, r, k = self.num_heads, self.expansion, self.kernel_size
        return self.qkv.macs(n) + n * c * c + 2 * n * n * c + n * n * (2 * r * h * h + r * h * k * k)

    @staticmethod
    def num_params(dim: int, num_heads: int, expansion: int, compact: bool = False, qkv_bias: bool = True,
                   kernel_size: int = 3) -> int:
        """Parameter count of a layer with these arguments (the formula of the class docstring)."""
        c, h, r = dim, num_heads, expansion
        qkv = (c * c + (c if qkv_bias else 0)) if compact else (3 * c * c + (3 * c if qkv_bias else 0))
        return qkv + c * c + c + 2 * r * h * h + r * h * kernel_size ** 2


def build(arch: Architecture, layer_index: int, layout: TokenLayout) -> RefinerAttention:
    return RefinerAttention(arch.embed_dim, arch.num_heads, expansion=arch.refiner_expansion, compact=arch.compact)
