"""Linformer attention: keys and values projected along the token axis (Wang et al., arXiv 2006.04768)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..mechanisms.linformer import LINFORMER_MAX_K, linformer_k
from .common import QKV, AttentionModule, TokenLayout, check_num_tokens, merge_heads

if TYPE_CHECKING:  # pragma: no cover
    from ..genes import Architecture

__all__ = ["LinformerAttention", "LINFORMER_MAX_K", "linformer_k", "build"]

class LinformerAttention(AttentionModule):
    """Linformer self-attention (Wang et al., arXiv 2006.04768, eq. 7), as Vision Xformers uses it.

    Per head::

        head_h = softmax(Q_h (E K_h)^T / sqrt(d)) (E V_h)

    where ``E`` (k x N, the parameter ``token_proj``) projects the N keys and the N values of every head
    onto k rows. The paper's eq. 7 allows separate E (keys) and F (values); here keys and values share
    one matrix (the paper's "key-value sharing", section 4, as Vision Xformers, arXiv 2107.02239, uses
    it), shared by all heads and not by layers. The softmax part runs through
    ``torch.nn.functional.scaled_dot_product_attention``. Cost O(N k) per head instead of O(N^2).

    Projected length: the paper constant k = 64 belongs to 1,025 tokens; the builder scales it with the
    token count, ``k = min(64, floor(N / 4))`` (:func:`linformer_k`, with its sources), so E always
    compresses (k <= N / 4): 4 at N = 17, 16 at N = 65, 49 at N = 197, 64 from N = 256 on.

    ``E`` is tied to the token count N the layer was built for (prefix tokens included); a different N
    at forward (or in the layout given to :meth:`macs`) raises ``ValueError``. Initialised N(0, 1/N) so
    that ``E K`` keeps the scale of the keys (the paper does not say how E is initialised).

    Args:
        dim: C. num_heads: H. num_tokens: N.
        k: projected length; ``None`` (the builder's choice) applies :func:`linformer_k`, ``k = min(64,
            floor(N / 4))``; an explicit k is clamped to ``min(k, N)``.
        compact: Armour compact Q/K/V projections (see :class:`~.common.QKV`). qkv_bias: Q/K/V bias.

    Shapes: ``x`` (B, N, C) -> (B, N, C).

    Parameters: 4C^2 + 4C + kN (``qkv``, ``proj`` with the names of :class:`~.mhsa.MHSA`, and
    ``token_proj``); 2C^2 + 2C + kN with ``compact``.

    Multiply-adds per image: ``4 N C^2 + 4 N k C`` (``2 N C^2 + 4 N k C`` compact) — projections, E K and
    E V (N k C each), scores and weighted values (N k C each). See :meth:`macs`. fvcore's default
    handles do not count ``scaled_dot_product_attention`` (2 N k C here); vitnas's
    ``trainers.measure.count_flops`` adds a handle for it and matches the formula.
    """

    def __init__(self, dim: int, num_heads: int, num_tokens: int, k: int | None = None, compact: bool = False,
                 qkv_bias: bool = True):
        super().__init__()
        if k is None and num_tokens >= 1:
            k = linformer_k(num_tokens)
        if num_tokens < 1 or k is None or k < 1:
            raise ValueError(f"linformer: num_tokens and k must be positive, got {num_tokens}, {k}")
        self.dim = dim
        self.num_heads = num_heads
        self.num_tokens = num_tokens
        self.k = min(k, num_tokens)
        self.qkv = QKV(dim, num_heads, compact=compact, qkv_bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.token_proj = nn.Parameter(torch.empty(self.k, num_tokens))
        self.reset_parameters_extra()

    def reset_parameters_extra(self) -> None:
        """Initialise ``token_proj`` (E) as N(0, 1/N); the model builder calls this after its own init."""
        nn.init.normal_(self.token_proj, std=1.0 / math.sqrt(self.num_tokens))

    def macs(self, layout: TokenLayout) -> int:
        """Analytic multiply-adds per image (see the class docstring).

        Raises:
            ValueError: ``layout`` has a token count other than the built one.
        """
        check_num_tokens("linformer", "its token projection", self.num_tokens, layout.num_tokens)
        n, c, k = self.num_tokens, self.dim, self.k
        return self.qkv.macs(n) + n * c * c + 4 * n * k * c

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        check_num_tokens("linformer", "its token projection", self.num_tokens, x.shape[1])
        n = self.num_tokens
        if layout.rotary is None and not self.qkv.compact:
            # Fast path: one token-axis GEMM over the fused keys and values, before splitting heads.
            b, _, c = x.shape
            h = self.num_heads
            qkv = self.qkv.qkv(x)  # (B, N, 3C)
            q = qkv[..., :c].view(b, n, h, c // h).transpose(1, 2)
            kv = torch.matmul(self.token_proj.to(qkv.dtype), qkv[..., c:])  # (B, k, 2C)
            k, v = kv.view(b, self.k, 2, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)
        else:  # rotary keys must be rotated per head before the projection; compact keys are x itself
            q, k, v = self.qkv(x, layout)
            e_t = self.token_proj.t().to(k.dtype)  # (N, k); the batched operand goes first (fvcore counts it)
            k = torch.matmul(k.transpose(-2, -1), e_t).transpose(-2, -1)  # (B, H, k, d)
            v = torch.matmul(v.transpose(-2, -1), e_t).transpose(-2, -1)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(merge_heads(out))


def build(arch: Architecture, layer_index: int, layout: TokenLayout) -> LinformerAttention:
    n = layout.num_tokens
    return LinformerAttention(arch.embed_dim, arch.num_heads, num_tokens=n, k=linformer_k(n), compact=arch.compact)
