"""MaiT: multi-head self-attention where some heads carry a local 0/1 mask (arXiv 2207.03006)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function

from ..mechanisms.mait import (
    MAIT_MIN_WINDOW,
    MAIT_RATIO_TOLERANCE,
    MASK_LAYERS,
    MASK_RATIO_CHOICES,
    layer_mask_ratios,
    mait_hidden_fraction,
    mait_refusal,
    mait_window_for_ratio,
)
from ..registry import GeneError
from .common import TokenLayout, merge_heads
from .mhsa import MHSA

if TYPE_CHECKING:  # pragma: no cover
    from ..genes import Architecture

__all__ = ["MaiTAttention", "local_window_mask", "build", "MASK_RATIO_CHOICES", "MASK_LAYERS", "MAIT_MIN_WINDOW",
           "MAIT_RATIO_TOLERANCE", "mait_window_for_ratio", "mait_hidden_fraction", "mait_refusal", "layer_mask_ratios"]


@register_notrace_function  # built from Python ints: torch.fx keeps it as one call, not traced through
def local_window_mask(grid: tuple[int, int], window: int | None, num_prefix_tokens: int = 0,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """The 0/1 mask (N, N) of one head: 1 where query token i may score key token j.

    Patch i at (r_i, c_i) sees patch j when ``|r_i - r_j| <= window // 2`` and
    ``|c_i - c_j| <= window // 2`` (a square window centred on the query, clipped at the border).
    Prefix (class) tokens are outside the grid: their rows and columns are all ones. ``window=None``
    gives a global head (all ones).
    """
    rows, cols = grid
    n = num_prefix_tokens + rows * cols
    mask = torch.ones(n, n, device=device)
    if window is None:
        return mask
    r = torch.arange(rows, device=device).repeat_interleave(cols)
    c = torch.arange(cols, device=device).repeat(rows)
    half = window // 2
    local = ((r[:, None] - r[None, :]).abs() <= half) & ((c[:, None] - c[None, :]).abs() <= half)
    p = num_prefix_tokens
    mask[p:, p:] = local.to(mask.dtype)
    return mask


class MaiTAttention(MHSA):
    """Masked multi-head self-attention of MaiT ("MaiT: Leverage Attention Masks for More Efficient
    Image Transformers", arXiv 2207.03006).

    Equation (per head h, MaiT's multiplicative mask)::

        S_h = (Q_h K_h^T / sqrt(d)) * M_h        # element-wise product with a 0/1 mask, before softmax
        out_h = softmax(S_h) V_h                 # softmax over keys
        out = concat_h(out_h) W_o + b_o

    ``M_h`` is 1 inside a square window of side k_h around each patch on the R x C token grid and 0
    outside. Because the mask *multiplies* the scores, a hidden key gets logit 0, not minus infinity: it
    still receives weight ``exp(0) / Z`` and its value still reaches the output. A masked head whose
    local scores are low therefore falls back towards a uniform (global) average, as the paper intends.

    Mask ratio -> window: ``mask_ratios[h]`` is the fraction of key positions a head hides; it is mapped
    to the odd window k >= 3 whose hidden fraction on the layer's grid, measured on the real mask
    (border-clipped windows, class-token column counted as a visible key, :func:`mait_hidden_fraction`),
    is closest (:func:`mait_window_for_ratio`). Ratio 0 = a global head (mask of ones). The smallest
    window is 3x3 (the paper's); a ratio that no window >= 3x3 hides within 0.1 on the grid is refused
    with a ``GeneError`` naming the gene and the grid when the layer is built or its mask is made
    (:func:`mait_refusal`): on the space's grids 0.75, 0.9 and 0.95 on 4x4 (3x3 already hides only 57%
    there) and 0.95 on 7x7. The search never samples those (``SearchSpace.for_image`` asks
    ``mask_ratio_<R>x<C>_<i>`` with the reachable ratios on such grids).

    Prefix (class) tokens: the class-token *row* stays unmasked (the paper's choice: the class token
    gathers from every patch). We also keep the class-token *column* unmasked, i.e. every patch may
    always score the class token: the class token has no grid position, so no distance puts it outside
    a window, and hiding it would leave patches of masked heads unable to read the global summary.

    Masks are built lazily and cached per ``(grid, num_prefix_tokens, device)`` in a plain dict on the
    module (not a registered buffer), so the state dict holds only ``qkv`` and ``proj`` and is
    interchangeable with :class:`~search_spaces.attention.mhsa.MHSA`, which this class extends. With
    every ratio 0 the layer is exactly MHSA and uses ``F.scaled_dot_product_attention`` (fused kernels);
    otherwise the N x N score map is formed explicitly.

    Args:
        dim: C. num_heads: H (``len(mask_ratios)`` must equal H).
        mask_ratios: one ratio per head; 0 = global head.
        compact: Armour compact Q, K, V (see :class:`~.common.QKV`). qkv_bias: bias on the Q, K, V layer.
        attn_drop: dropout on the attention weights. proj_drop: dropout after the output projection.

    Shapes: ``x`` (B, N, C) -> (B, N, C), N = num_prefix_tokens + R C from ``layout``.
    Parameters: exactly MHSA's, 4C^2 + 4C (``compact``: 2C^2 + 2C); the masks add none.
    Multiply-adds per image: MHSA's, 4 N C^2 (2 N C^2 compact) for the projections + 2 N^2 C for scores
    and values (:meth:`macs`, inherited); the mask costs a further H N^2 element-wise products (not multiply-adds).
    Memory: the explicit path keeps B H N^2 scores (and weights) per layer, like unfused attention.

    Deliberate differences: none in the attention itself; the class-token column choice above is ours
    (the paper does not spell it out). Which layers carry masks is decided by the builder
    (:func:`layer_mask_ratios`).
    """

    def __init__(self, dim: int, num_heads: int, mask_ratios: tuple[float, ...], compact: bool = False,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        mask_ratios = tuple(float(r) for r in mask_ratios)
        if len(mask_ratios) != num_heads:
            raise ValueError(f"mask_ratios: need one ratio per head ({num_heads}), got {len(mask_ratios)}")
        if any(not (0.0 <= r < 1.0) for r in mask_ratios):
            raise ValueError(f"mask_ratios: each ratio must lie in [0, 1), got {mask_ratios}")
        super().__init__(dim, num_heads, compact=compact, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.mask_ratios = mask_ratios
        self._masks: dict[tuple, torch.Tensor] = {}

    @property
    def is_global(self) -> bool:
        """True when no head is masked (the layer is plain MHSA)."""
        return all(r == 0 for r in self.mask_ratios)

    def windows(self, grid: tuple[int, int], num_prefix_tokens: int = 1) -> tuple[int | None, ...]:
        """Window side per head on ``grid`` (``None`` for a global head).

        Raises:
            GeneError: a ratio out of reach on ``grid`` (:func:`mait_refusal`).
        """
        return tuple(mait_window_for_ratio(r, tuple(grid), num_prefix_tokens) for r in self.mask_ratios)

    def mask(self, layout: TokenLayout, device: torch.device | str | None = None) -> torch.Tensor:
        """The cached 0/1 masks (H, N, N) for ``layout`` on ``device`` (float32)."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        key = (tuple(layout.grid), layout.num_prefix_tokens, device)
        m = self._masks.get(key)
        if m is None:
            m = torch.stack([local_window_mask(layout.grid, w, layout.num_prefix_tokens, device)
                             for w in self.windows(layout.grid, layout.num_prefix_tokens)])
            self._masks[key] = m
        return m

    def attention_scores(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """Masked pre-softmax scores ``(Q K^T / sqrt(d)) * M``, shape (B, H, N, N)."""
        q, k, _ = self.qkv(x, layout)
        return self._scores(q, k, layout)

    def _scores(self, q: torch.Tensor, k: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        s = (q * self.scale) @ k.transpose(-2, -1)
        if not self.is_global:
            s = s * self.mask(layout, s.device).to(s.dtype)
        return s

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        if self.is_global:
            return super().forward(x, layout)
        q, k, v = self.qkv(x, layout)
        attn = self._scores(q, k, layout).softmax(dim=-1)
        if self.training and self.attn_drop:
            attn = F.dropout(attn, self.attn_drop)
        return self.proj_drop(self.proj(merge_heads(attn @ v)))


@register_notrace_function  # built from Python ints: torch.fx keeps it as one call, not traced through
def build(arch: Architecture, layer_index: int, layout: TokenLayout) -> MaiTAttention:
    """The layer; refuses (``GeneError``) a ratio of ``arch`` out of reach on the layout's grid."""
    for r in arch.mask_ratios:
        reason = mait_refusal(r, layout.grid, layout.num_prefix_tokens)
        if reason:
            raise GeneError(reason)
    return MaiTAttention(arch.embed_dim, arch.num_heads, mask_ratios=layer_mask_ratios(arch, layer_index),
                         compact=arch.compact)
