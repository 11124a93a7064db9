"""Performer attention: FAVOR+ positive orthogonal random features (Choromanski et al., arXiv 2009.14794).

Used as one of the linear-attention variants of Vision Xformers (Jeevan and Sethi, arXiv 2107.02239).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..mechanisms.performer import default_num_features, performer_num_features
from .common import QKV, AttentionModule, TokenLayout, full_precision, merge_heads

if TYPE_CHECKING:  # pragma: no cover
    from ..genes import Architecture

__all__ = [
    "build",
    "PerformerAttention",
    "default_num_features",
    "performer_num_features",
    "orthogonal_gaussian_matrix",
    "positive_random_features",
    "favor_attention",
    "softmax_attention",
]

#: Weight std of a freshly initialised Q/K/V projection in a vitnas model (timm's ViT init,
#: ``trunc_normal_(std=0.02)``): compact keys are scaled by ``COMPACT_KEY_STD * sqrt(C)``, the RMS of such a
#: projection of a unit-RMS input.
COMPACT_KEY_STD = 0.02

#: Added to every random feature (after stabilisation) so no normaliser can reach zero; the value of
#: the original FAVOR+ release. It biases the kernel estimate by about this much relative to the largest
#: feature of a row, far below the Monte-Carlo error.
FEATURE_EPS = 1e-6


def orthogonal_gaussian_matrix(num_features: int, head_dim: int,
                               generator: torch.Generator | None = None) -> torch.Tensor:
    """Orthogonal random features (ORF, arXiv 2009.14794 section 2.4), shape (m, d), float32.

    Rows come in blocks of d mutually orthogonal directions, each block the Q factor of a Gaussian
    d x d matrix (sign-corrected so it is Haar distributed); the last block is truncated when m is not a
    multiple of d. Every row is then rescaled to the length of an independent Gaussian d-vector, so each
    row on its own is distributed as N(0, I_d) (needed for the estimator to stay unbiased) while rows of
    one block stay exactly orthogonal. Drawn on the CPU in float64 from ``generator`` (torch's global
    generator when ``None``).
    """
    if num_features < 1 or head_dim < 1:
        raise ValueError(f"performer: num_features and head_dim must be positive, got {num_features}, {head_dim}")
    blocks = []
    for _ in range(-(-num_features // head_dim)):
        gauss = torch.randn(head_dim, head_dim, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(gauss)
        q = q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0)  # column signs fixed by diag(R) >= 0
        blocks.append(q.T)
    directions = torch.cat(blocks, dim=0)[:num_features]
    lengths = torch.randn(num_features, head_dim, generator=generator, dtype=torch.float64).norm(dim=1)
    return (directions * lengths[:, None]).float().contiguous()


def positive_random_features(x: torch.Tensor, projection: torch.Tensor, is_query: bool,
                             eps: float = FEATURE_EPS) -> torch.Tensor:
    """FAVOR+ positive features of queries or keys (arXiv 2009.14794, Lemma 1).

    ``phi(x) = exp(w_r^T x' - |x'|^2 / 2) / sqrt(m)`` for r = 1..m with ``x' = x d^(-1/4)``, so that
    ``E[phi(q')^T phi(k')] = exp(q^T k / sqrt(d))``, the softmax kernel of scaled dot-product attention.

    Stabilisation: before the exponential a maximum is subtracted — per token over the features for
    queries, over all tokens and features of a (batch, head) for keys. Either is a constant factor of a
    query's row, or of every key of the head, and cancels between the numerator and the normaliser of
    :func:`favor_attention`. It is detached (its gradient cancels in the same way). ``eps`` is then
    added to every feature (see :data:`FEATURE_EPS`).

    Shapes: ``x`` (..., N, d), ``projection`` (m, d) -> (..., N, m).
    """
    d = x.shape[-1]
    m = projection.shape[0]
    x = x * d ** -0.25
    wx = torch.matmul(x, projection.t())  # (..., N, m)
    half_sq_norm = x.pow(2).sum(dim=-1, keepdim=True) / 2
    if is_query:
        shift = wx.amax(dim=-1, keepdim=True)
    else:
        shift = wx.amax(dim=(-2, -1), keepdim=True)
    return (torch.exp(wx - half_sq_norm - shift.detach()) + eps) * m ** -0.5


def favor_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, projection: torch.Tensor,
                    eps: float = FEATURE_EPS) -> torch.Tensor:
    """Bidirectional FAVOR+ (arXiv 2009.14794, eq. 4 with the positive features of Lemma 1).

    ``out = D^-1 (Q' ((K')^T V))`` with ``Q' = phi(Q)``, ``K' = phi(K)`` (N x m) and
    ``D = diag(Q' ((K')^T 1_N))``: linear in N, O(N m d) per head. Computed in the dtype of the inputs.

    Shapes: q, k, v (B, H, N, d), projection (m, d) -> (B, H, N, d).
    """
    phi_q = positive_random_features(q, projection, is_query=True, eps=eps)  # (B, H, N, m)
    phi_k = positive_random_features(k, projection, is_query=False, eps=eps)
    kv = torch.matmul(phi_k.transpose(-2, -1), v)  # (B, H, m, d)
    k_sum = phi_k.sum(dim=-2).unsqueeze(-1)  # (B, H, m, 1)
    numerator = torch.matmul(phi_q, kv)  # (B, H, N, d)
    normaliser = torch.matmul(phi_q, k_sum)  # (B, H, N, 1)
    return numerator / normaliser


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Exact ``softmax(Q K^T / sqrt(d)) V`` with an explicit N x N map (the reference FAVOR+ estimates).

    Shapes: q, k, v (B, H, N, d) -> (B, H, N, d).
    """
    scores = torch.matmul(q, k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    return torch.matmul(scores.softmax(dim=-1), v)


class PerformerAttention(AttentionModule):
    """Performer self-attention with FAVOR+ (Choromanski et al., arXiv 2009.14794), as in Vision Xformers.

    Per head, the softmax kernel ``exp(q^T k / sqrt(d))`` is replaced by an inner product of m positive
    orthogonal random features (Lemma 1; section 2.4), which makes attention linear in N::

        out_h = D^-1 phi(Q_h) (phi(K_h)^T V_h),  D = diag(phi(Q_h) phi(K_h)^T 1_N)

    (paper eq. 4, bidirectional). The random features are computed in float32 even under autocast
    (exponentials of bf16 logits lose too much); the result is cast back to the value dtype.

    The projection matrix (m, d) is shared by all heads and is a *persistent* buffer ``projection``:
    an exported state dict reproduces the model's outputs exactly. It is drawn once at construction from
    torch's global generator. With ``redraw=True`` a fresh matrix is drawn at every forward pass in
    training mode (the paper's feature redrawing); evaluation always uses the stored one.

    Args:
        dim: C. num_heads: H (d = C / H).
        compact: Armour compact Q/K/V projections (see :class:`~.common.QKV`).
        qkv_bias: bias of the Q/K/V projection.
        num_features: m (rows of the projection); default ``floor(d ln d)`` (the paper's choice; 44 for
            d = 16, 266 for d = 64).
        scale_with_tokens: use only the first ``min(num_features, floor(N / 4))`` rows at N tokens (the
            builder's choice; see below).
        redraw: redraw the projection at every training forward pass.

    Shapes: ``x`` (B, N, C) -> (B, N, C). Memory O(N m) per head instead of O(N^2).

    Parameters: 4C^2 + 4C (``qkv`` and ``proj``, the same names as :class:`~.mhsa.MHSA`), 2C^2 + 2C
    with ``compact`` (3C fewer, C fewer when compact, with ``qkv_bias=False``). The projection matrix is
    a buffer, not a parameter.

    Multiply-adds per image (matrix products only, as fvcore counts them), m the features used at N
    (:meth:`features_for`):
    ``4 N C^2 + 4 N m C + N m H`` (``2 N C^2 + 4 N m C + N m H`` compact) — projections, the feature maps
    of Q and K (N m C each), ``phi(K)^T V`` (N m C), ``phi(Q) (phi(K)^T V)`` (N m C) and the normaliser
    (N m H). The exponentials and the squared norms (O(N m H)) are elementwise and not counted.
    See :meth:`macs`.

    Number of features: the builder sets ``scale_with_tokens``, so that at N tokens the layer uses
    ``m = min(floor(d ln d), floor(N / 4))`` features (:func:`performer_num_features`): with m >= N / 2
    FAVOR+ would cost more than the exact attention it estimates, which the paper's m = floor(d ln d)
    does at the proxy's token counts. The buffer always holds the ``num_features`` (floor(d ln d)) rows
    and the layer uses its first m: the leading rows of an orthogonal random matrix are one too (whole
    orthogonal blocks, then a truncated one), and the state dict has the same shape at every image size,
    so a checkpoint loads at any other.

    Compact (Armour) keys: with ``compact`` the keys are the raw slices of the layer-normalised input,
    RMS about 1, where a freshly initialised key projection gives about ``0.02 sqrt(C)`` (0.11 to 0.2 for
    C = 32 to 96). The mean squared error of positive random features grows exponentially with the
    squared norms of queries and keys (arXiv 2009.14794, the variance of its positive estimator), so such
    keys made the estimate far worse: measured on the first layer of freshly built models (N = 17 to
    785, C = 32 to 96, H = 2 and 4, the paper's m), the relative error of FAVOR+ against exact attention
    was 34 to 74% with compact against 2 to 5% without. The layer therefore multiplies compact keys by
    the constant ``key_scale = 0.02 sqrt(C)`` (ours; no parameter): with it (and the m rule above) the
    error is 3 to 16% with compact against 3 to 11% without. For exact softmax attention the scale is
    only a rescaling of ``W_q`` (``q . (s k) = (s q) . k``); values are not scaled.

    Differences from the paper: the feature-wise stabilising maximum and the additive ``eps`` of the
    released FAVOR+ code (see :func:`positive_random_features`); the features are not redrawn unless
    ``redraw`` is set; the compact key scale above.
    """

    def __init__(self, dim: int, num_heads: int, compact: bool = False, qkv_bias: bool = True,
                 num_features: int | None = None, redraw: bool = False, scale_with_tokens: bool = False):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.qkv = QKV(dim, num_heads, compact=compact, qkv_bias=qkv_bias)
        #: Compact keys are raw slices of the normalised input (RMS ~1); scaled to the RMS of a freshly
        #: initialised key projection (see the class docstring). 1 without compact.
        self.key_scale = COMPACT_KEY_STD * math.sqrt(dim) if compact else 1.0
        self.proj = nn.Linear(dim, dim)
        self.head_dim = dim // num_heads
        self.num_features = num_features if num_features is not None else default_num_features(self.head_dim)
        if self.num_features < 1:
            raise ValueError(f"performer: num_features must be positive, got {self.num_features}")
        self.redraw = redraw
        self.scale_with_tokens = scale_with_tokens
        self.register_buffer("projection", orthogonal_gaussian_matrix(self.num_features, self.head_dim),
                             persistent=True)

    @torch.no_grad()
    def redraw_projection(self, generator: torch.Generator | None = None) -> None:
        """Draw a new orthogonal random projection in place (keeps the buffer's device and dtype)."""
        fresh = orthogonal_gaussian_matrix(self.num_features, self.head_dim, generator=generator)
        self.projection.copy_(fresh.to(self.projection.device, self.projection.dtype))

    def features_for(self, num_tokens: int) -> int:
        """m used at N = ``num_tokens``: ``num_features``, or with ``scale_with_tokens``
        ``max(1, min(num_features, floor(N / 4)))`` (:func:`performer_num_features`)."""
        if not self.scale_with_tokens:
            return self.num_features
        return max(1, min(self.num_features, num_tokens // 4))

    def macs(self, layout: TokenLayout) -> int:
        """Analytic multiply-adds per image for N = ``layout.num_tokens`` (see the class docstring)."""
        n, c, h = layout.num_tokens, self.dim, self.num_heads
        m = self.features_for(n)
        return self.qkv.macs(n) + n * c * c + 4 * n * m * c + n * m * h

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_features: int | None = None
                ) -> torch.Tensor:
        projection = self.projection if num_features is None else self.projection[:num_features]
        with full_precision(q):
            out = favor_attention(q.float(), k.float(), v.float(), projection.float())
        return out.to(v.dtype)

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        if self.redraw and self.training:
            self.redraw_projection()
        q, k, v = self.qkv(x, layout)
        if self.key_scale != 1.0:
            k = k * self.key_scale
        # Under torch.fx the token count is symbolic: the layout's N (a Python int) decides m.
        n = layout.num_tokens if isinstance(x, torch.fx.Proxy) else x.shape[1]
        m = self.features_for(n)
        return self.proj(merge_heads(self._attend(q, k, v, None if m == self.num_features else m)))

    def exact_forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """The same layer with exact softmax attention in place of FAVOR+ (for approximation tests)."""
        q, k, v = self.qkv(x, layout)
        if self.key_scale != 1.0:
            k = k * self.key_scale
        return self.proj(merge_heads(softmax_attention(q, k, v)))


def build(arch: Architecture, layer_index: int, layout: TokenLayout) -> PerformerAttention:
    return PerformerAttention(arch.embed_dim, arch.num_heads, compact=arch.compact, scale_with_tokens=True)
