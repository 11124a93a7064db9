"""QnA: local attention with learned queries, computed with two depthwise convolutions (arXiv 2112.11435)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..mechanisms.qna import QNA_WINDOWS, qna_window_for_grid
from .common import AttentionModule, TokenLayout, full_precision

if TYPE_CHECKING:  # pragma: no cover
    from ..genes import Architecture

__all__ = ["QnAAttention", "QNA_WINDOWS", "qna_window_for_grid", "build"]

#: Floor on ``score - max`` before the exponential (see "Numerical stability" in the class docstring).
_EXP_FLOOR = -40.0


class QnAAttention(AttentionModule):
    """Query-and-Attend local attention (QnA, "Learned Queries for Efficient Local Attention",
    Arar, Shamir and Bermano, arXiv 2112.11435; official JAX code github.com/moabarar/qna).

    A few learned queries ``q_l`` (l = 1..L, ``num_queries``), shared by every window, replace the
    per-token queries. For output position p on the R x C grid, head h and query l, with ``W(p)`` the
    k x k window centred on p (clipped at the border) and ``o = j - p`` the offset of key j in it::

        s_lh(j)  = q_lh . k_h(j)                    k_h(j) = (x_j W_k)_h;  once per token, not per window
        a_lh(p,j) = exp(s_lh(j) + b_lh[o]) / sum_{j' in W(p)} exp(s_lh(j') + b_lh[o'])   windowed softmax
        y_lh(p)  = sum_{j in W(p)} w_lh[o] a_lh(p,j) v_h(j)                 learned per-offset weight w
        out(p)   = (sum_l concat_h y_lh(p)) W_o + b_o                        queries summed, then projected

    with ``b`` the relative-position bias per window offset (per query and head) and ``v = x W_v``.
    Because ``s`` does not depend on p, ``exp(s + b)`` factorises into ``exp(s(j)) * exp(b[o])`` and
    both sums over the window are depthwise convolutions of per-token maps:

        numerator   = conv_k( exp(s) * v,  kernel exp(b) * w )    (B, L*C, R, C') one channel per (l, h, d)
        denominator = conv_k( exp(s),      kernel exp(b) )        (B, L*H, R, C')
        y = numerator / denominator

    Zero padding (k // 2) makes the denominator sum only over positions that exist. No k x k
    neighbourhood is ever materialised: activation memory is O(B L C N), independent of the window.

    Queries (as the official code): each query is split into H heads, each head normalised to unit L2
    norm and divided by sqrt(d). Init (:meth:`reset_parameters_extra`, re-run by the model after timm's
    generic init): queries truncated normal with std sqrt(1/d); relative-position bias zeros (the official
    model passes its zero bias initialiser); per-offset weights normal with std 0.02 (official
    ``attn_scale='normal'``).

    Numerical stability: the scores are computed in float32 even under bf16/fp16 autocast, and so are the
    exponentials and the two convolutions (autocast disabled there). Before the exponential we subtract, per
    (image, head, query), the detached maximum of ``s`` over all tokens and, per (head, query), the
    maximum of ``b`` over offsets; both are constant inside every window, so they cancel between
    numerator and denominator and every exponential is <= 1. ``s - max`` is floored at -40: a window
    whose every score lies more than 40 below the image's maximum would otherwise underflow to 0 / 0;
    with the floor such a window degrades to position-bias weights instead of NaN. Windows whose best
    score is within ~20 of the maximum are unaffected (relative error < k^2 e^-20).

    Args:
        dim: C. num_heads: H (d = C / H). window: k, odd (the gene takes 3, 5, 7; the builder clamps it
            below the grid's side with :func:`qna_window_for_grid`, so the window never covers the grid).
        num_queries: L learned queries (2 in the paper and the official models).
        qkv_bias: bias on the value projection. The key projection has none: a key bias adds the same
            ``q_lh . b_k`` to every score of a (query, head) and cancels in the softmax.

    Shapes: ``x`` (B, N, C) with N = R C from ``layout`` -> (B, N, C). Requires
    ``layout.num_prefix_tokens == 0`` (a QnA model has no class token and pools by average).

    Parameters: ``key`` C^2, ``value`` C^2 (+ C), ``proj`` C^2 + C, ``query`` L C, ``rel_bias`` and
    ``offset_weight`` L H k^2 each: 3C^2 + 2C + L C + 2 L H k^2 (without value bias: one C less).
    Multiply-adds per image (:meth:`macs`): L C^2 (fusing the queries into the key projection,
    independent of N) + N C L H (scores) + 2 N C^2 (values, output projection)
    + N k^2 (L C + L H) (the two convolutions) + L N C (weighting exp(s) * v); exponentials, divisions
    and the sum over queries are not counted. fvcore (``trainers.measure.count_flops``) reports
    ``macs() - L N C``: it does not count the element-wise ``exp(s) * v`` product.

    Deliberate differences from the official code: biases on the value and output projections
    (official: none; pass ``qkv_bias=False`` for the value), the max subtraction and floor above (the
    official code exponentiates raw scores), output for a non-square R x C grid, stride 1 only (the
    official layer also downsamples with stride 2), and only the ``relative_pos`` bias and ``normal``
    per-offset weight variants.
    """

    def __init__(self, dim: int, num_heads: int, window: int, num_queries: int = 2, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads: embed_dim {dim} is not divisible by num_heads {num_heads}")
        if not isinstance(window, int) or window < 1 or window % 2 == 0:
            raise ValueError(f"qna_window: must be a positive odd integer, got {window!r}")
        if num_queries < 1:
            raise ValueError(f"num_queries: must be >= 1, got {num_queries}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window = window
        self.num_queries = num_queries
        self.query = nn.Parameter(torch.empty(num_queries, dim))
        self.rel_bias = nn.Parameter(torch.empty(num_queries, num_heads, window, window))
        self.offset_weight = nn.Parameter(torch.empty(num_queries, num_heads, window, window))
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.reset_parameters_extra()

    @torch.no_grad()
    def reset_parameters_extra(self) -> None:
        """Init of the learned queries, position bias and per-offset weights (see the class docstring)."""
        nn.init.trunc_normal_(self.query, std=math.sqrt(1.0 / self.head_dim), a=-2 * math.sqrt(1.0 / self.head_dim),
                              b=2 * math.sqrt(1.0 / self.head_dim))
        nn.init.zeros_(self.rel_bias)
        nn.init.normal_(self.offset_weight, std=0.02)

    def queries(self) -> torch.Tensor:
        """Per-head unit-norm queries divided by sqrt(d): (L, H, d)."""
        q = self.query.view(self.num_queries, self.num_heads, self.head_dim)
        return F.normalize(q, dim=-1, eps=1e-6) * self.head_dim ** -0.5

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """``s_lh(j) = q_lh . k_h(j)`` for every token: (B, N, C) -> (B, L, H, N) float32, once per token.

        The learned queries are folded into the key projection first (``q_lh W_k,h``, L H rows), so the
        per-token cost is N C L H and no key tensor is formed. Always float32 (autocast disabled): these
        are the logits of the exponentials, and their cost is small.
        """
        with full_precision(x):
            q = self.queries().float()
            w = self.key.weight.float().view(self.num_heads, self.head_dim, self.dim)  # (H, d, C_in)
            fused = torch.einsum("lhd,hdc->lhc", q, w).reshape(-1, self.dim)       # (L H, C_in)
            s = x.float() @ fused.t()                                               # (B, N, L H)
        return s.transpose(1, 2).reshape(x.shape[0], self.num_queries, self.num_heads, x.shape[1])

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        if layout.num_prefix_tokens:
            raise ValueError("attention: qna works on the token grid without a class token "
                             f"(num_prefix_tokens must be 0, got {layout.num_prefix_tokens})")
        if layout.rotary is not None:
            raise ValueError("pos_encoding: qna has no per-token queries; rotary encodings do not apply")
        b, n, c = x.shape
        rows, cols = layout.grid
        if not isinstance(n, torch.fx.Proxy) and n != rows * cols:  # shapes are symbolic under torch.fx
            raise ValueError(f"qna: {n} tokens do not fill the {rows}x{cols} grid")
        lq, h, d, k = self.num_queries, self.num_heads, self.head_dim, self.window
        s = self.scores(x)                                          # (B, L, H, N), float32
        v = self.value(x)                                           # (B, N, C)
        with full_precision(x):
            s = s.float()
            s = s - s.amax(dim=-1, keepdim=True).detach()
            e = s.clamp_min(_EXP_FLOOR).exp()                       # (B, L, H, N), in (0, 1]
            bias = self.rel_bias.float()
            bias = bias - bias.amax(dim=(-2, -1), keepdim=True).detach()
            kb = bias.clamp_min(_EXP_FLOOR).exp()                   # (L, H, k, k)
            kn = kb * self.offset_weight.float()
            # numerator input: exp(s) * v for each (query, head, channel): (B, L*C, R, C')
            vf = v.float().view(b, 1, n, h, d).permute(0, 1, 3, 4, 2)          # (B, 1, H, d, N)
            num_in = (e.unsqueeze(3) * vf).reshape(b, lq * c, rows, cols)
            num_kernel = kn.unsqueeze(2).expand(lq, h, d, k, k).reshape(lq * c, 1, k, k)
            num = F.conv2d(num_in, num_kernel, padding=k // 2, groups=lq * c)
            den = F.conv2d(e.reshape(b, lq * h, rows, cols), kb.reshape(lq * h, 1, k, k),
                           padding=k // 2, groups=lq * h)
            y = num.view(b, lq, h, d, n) / den.view(b, lq, h, 1, n)
            y = y.sum(dim=1)                                                  # sum over queries
        y = y.reshape(b, c, n).transpose(1, 2).to(v.dtype)                    # (B, N, C)
        return self.proj(y)

    def macs(self, layout: TokenLayout) -> int:
        """Analytic multiply-adds for one image (products only; exp, division and query sum excluded)."""
        n, c = layout.num_tokens, self.dim
        lq, h, k = self.num_queries, self.num_heads, self.window
        return lq * c * c + n * c * lq * h + 2 * n * c * c + n * k * k * (lq * c + lq * h) + lq * n * c


def build(arch: Architecture, layer_index: int, layout: TokenLayout) -> QnAAttention:
    return QnAAttention(arch.embed_dim, arch.num_heads, window=qna_window_for_grid(arch.qna_window, layout.grid))
