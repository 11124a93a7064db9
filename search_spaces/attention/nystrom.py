"""Nystromformer attention: Nystrom approximation of the softmax map (Xiong et al., arXiv 2102.03902)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..mechanisms.nystrom import NYSTROM_MAX_KERNEL, NYSTROM_MAX_LANDMARKS, nystrom_conv_kernel, nystrom_landmarks
from .common import QKV, AttentionModule, TokenLayout, full_precision, merge_heads

if TYPE_CHECKING:  # pragma: no cover
    from ..genes import Architecture

__all__ = ["NystromAttention", "segment_means", "iterative_pinv", "nystrom_attention", "nystrom_landmarks",
           "nystrom_conv_kernel", "NYSTROM_MAX_LANDMARKS", "NYSTROM_MAX_KERNEL", "build"]


def _segment_matrix(num_tokens: int, num_segments: int, device, dtype) -> torch.Tensor:
    """(N, m) averaging matrix: column i holds 1/|S_i| on the tokens of segment S_i, 0 elsewhere.

    Token j belongs to segment ``floor(j m / N)``: m contiguous segments covering the sequence, of
    ``floor(N/m)`` or ``ceil(N/m)`` tokens each (all exactly N/m long when m divides N).
    """
    seg = torch.arange(num_tokens, device=device) * num_segments // num_tokens
    onehot = torch.nn.functional.one_hot(seg, num_segments).to(dtype)  # (N, m)
    return onehot / onehot.sum(dim=0, keepdim=True)


def segment_means(x: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Landmarks: means of ``num_segments`` contiguous segments along the token axis.

    Shapes: ``x`` (..., N, d) -> (..., m, d). Needs ``1 <= m <= N``.
    """
    n = x.shape[-2]
    avg = _segment_matrix(n, num_segments, x.device, x.dtype)
    # (..., d, N) @ (N, m): the batched operand first, so fvcore counts N m d per head.
    return torch.matmul(x.transpose(-2, -1), avg).transpose(-2, -1)


def iterative_pinv(a: torch.Tensor, iterations: int = 6) -> torch.Tensor:
    """Moore-Penrose pseudo-inverse by the iteration of Razavi et al. (Nystromformer eq. 16).

    ``Z_0 = A^T / (||A||_1 ||A||_inf)``, then
    ``Z_{j+1} = Z_j (13 I - A Z_j (15 I - A Z_j (7 I - A Z_j))) / 4``.
    The norms are taken per matrix (per image and head); the authors' released code takes the maxima
    over the whole batch, which makes one image's output depend on the others.

    Shapes: ``a`` (..., m, m) -> (..., m, m). 4 m^3 multiply-adds per matrix and iteration.
    """
    m = a.shape[-1]
    abs_a = a.abs()
    norm_1 = abs_a.sum(dim=-2).amax(dim=-1)  # largest column sum
    norm_inf = abs_a.sum(dim=-1).amax(dim=-1)  # largest row sum
    z = a.transpose(-2, -1) / (norm_1 * norm_inf)[..., None, None]
    eye = torch.eye(m, device=a.device, dtype=a.dtype)
    for _ in range(iterations):
        az = torch.matmul(a, z)
        z = 0.25 * torch.matmul(z, 13 * eye - torch.matmul(az, 15 * eye - torch.matmul(az, 7 * eye - az)))
    return z


def nystrom_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_landmarks: int,
                      pinv_iterations: int = 6) -> torch.Tensor:
    """Nystrom approximation of ``softmax(Q K^T / sqrt(d)) V`` (arXiv 2102.03902, eq. 14-15).

    ``F~ = softmax(Q K~^T / sqrt(d))`` (N x m), ``A~ = softmax(Q~ K~^T / sqrt(d))`` (m x m),
    ``B~ = softmax(Q~ K^T / sqrt(d))`` (m x N); out = ``F~ (A~^+ (B~ V))`` with ``A~^+`` from
    :func:`iterative_pinv` and the landmarks ``Q~``, ``K~`` the segment means of Q and K.
    ``num_landmarks`` is clamped to N.

    Shapes: q, k, v (B, H, N, d) -> (B, H, N, d).
    """
    n, d = q.shape[-2], q.shape[-1]
    m = num_landmarks if isinstance(n, torch.fx.Proxy) else max(1, min(num_landmarks, n))
    scale = d ** -0.5
    q_l = segment_means(q, m)
    k_l = segment_means(k, m)
    f = torch.matmul(q, k_l.transpose(-2, -1)).mul(scale).softmax(dim=-1)  # (B, H, N, m)
    a = torch.matmul(q_l, k_l.transpose(-2, -1)).mul(scale).softmax(dim=-1)  # (B, H, m, m)
    b = torch.matmul(q_l, k.transpose(-2, -1)).mul(scale).softmax(dim=-1)  # (B, H, m, N)
    bv = torch.matmul(b, v)  # (B, H, m, d)
    return torch.matmul(f, torch.matmul(iterative_pinv(a, pinv_iterations), bv))


class NystromAttention(AttentionModule):
    """Nystromformer self-attention (Xiong et al., arXiv 2102.03902, eq. 14-15, pinv eq. 16).

    Per head, the softmax map is approximated from m landmarks (segment means of queries and keys)::

        out_h = softmax(Q K~^T / sqrt(d)) pinv(softmax(Q~ K~^T / sqrt(d))) softmax(Q~ K^T / sqrt(d)) V
                + conv(V)

    with an iterative Moore-Penrose pseudo-inverse (``pinv_iterations`` steps) and, as in the paper's
    released model, a depthwise convolution of the values along the token axis added as a residual:
    one kernel of ``conv_kernel`` taps per head, shared by the head's d channels, zero padding
    ``conv_kernel // 2``, no bias (parameter ``conv``; ``conv_kernel=0`` drops it). Linear in N.
    The Nystrom part runs in float32 even under autocast (the pseudo-inverse iteration is sensitive).

    Landmarks: the sequence (prefix tokens included) is cut into m contiguous segments of
    ``floor(N/m)`` or ``ceil(N/m)`` tokens (exactly N/m when m divides N, the paper's case). This
    deliberately differs from the front zero-padding of lucidrains/nystrom-attention, where padded
    zero tokens enter the softmax kernels unless a mask is passed. ``num_landmarks`` is clamped to N;
    with m = N every landmark is one token and the result is exact softmax attention (up to the
    pseudo-inverse's convergence).

    Token-count rules (``scale_with_tokens``, the builder's choice): the paper constants m = 16 and
    s = 33 belong to N = 1,025 tokens; at N tokens the layer uses ``m = min(16, floor(N / 8))``
    landmarks (:func:`nystrom_landmarks`) and the central ``s = min(33, 2 floor(N / 32) + 1)`` taps, at
    least 3, of its stored 33-tap kernel (:func:`nystrom_conv_kernel`), so at every token count of the
    space there are at most N / 8 landmarks and the convolution is shorter than the sequence. The kernel
    is stored at its full 33 taps so that the state dict has one shape at every image size (a checkpoint
    loads at any other); below N = 512 its outer taps do not act (at most 30 H parameters).

    Args:
        dim: C. num_heads: H. compact: Armour compact Q/K/V (see :class:`~.common.QKV`). qkv_bias.
        num_landmarks: m (16 when not given). pinv_iterations: 6 in the paper. conv_kernel: odd kernel
            length (33 when not given; 0 drops the convolution).
        scale_with_tokens: apply the token-count rules above (with ``num_landmarks`` and ``conv_kernel``
            as the caps).

    Shapes: ``x`` (B, N, C) -> (B, N, C).

    Parameters: 4C^2 + 4C + H * conv_kernel (2C^2 + 2C + H * conv_kernel with ``compact``).

    Multiply-adds per image, with m and s the landmarks and taps used at N (:meth:`landmarks_for`,
    :meth:`kernel_for`), I = pinv_iterations:
    ``4 N C^2 + 6 N m C + 2 m^2 C + 4 I H m^3 + s N C`` (``2 N C^2`` instead of ``4 N C^2`` compact) —
    projections; segment means of Q and K (N m C each); the three score maps (N m C, m^2 C, N m C);
    ``B~ V`` (N m C); ``A~^+ (B~ V)`` (m^2 C); ``F~ (...)`` (N m C); the pseudo-inverse (4 m^3 per head
    and iteration); the convolution (s N C). See :meth:`macs`.
    """

    def __init__(self, dim: int, num_heads: int, compact: bool = False, qkv_bias: bool = True,
                 num_landmarks: int = 16, pinv_iterations: int = 6, conv_kernel: int | None = 33,
                 scale_with_tokens: bool = False):
        super().__init__()
        if num_landmarks < 1:
            raise ValueError(f"nystrom: num_landmarks must be positive, got {num_landmarks}")
        if pinv_iterations < 0:
            raise ValueError(f"nystrom: pinv_iterations must be >= 0, got {pinv_iterations}")
        if conv_kernel and conv_kernel % 2 == 0:
            raise ValueError(f"nystrom: conv_kernel must be odd (same-length output), got {conv_kernel}")
        self.dim = dim
        self.num_heads = num_heads
        self.num_landmarks = num_landmarks
        self.pinv_iterations = pinv_iterations
        self.conv_kernel = conv_kernel or 0
        self.scale_with_tokens = scale_with_tokens
        self.qkv = QKV(dim, num_heads, compact=compact, qkv_bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if self.conv_kernel:
            self.conv = nn.Conv2d(num_heads, num_heads, kernel_size=(self.conv_kernel, 1),
                                  padding=(self.conv_kernel // 2, 0), groups=num_heads, bias=False)
        else:
            self.conv = None

    def landmarks_for(self, num_tokens: int) -> int:
        """m used at N = ``num_tokens``: ``num_landmarks`` clamped to N, or with ``scale_with_tokens``
        ``min(num_landmarks, max(1, floor(N / 8)))`` (:func:`nystrom_landmarks`)."""
        if self.scale_with_tokens:
            return min(self.num_landmarks, max(1, num_tokens // 8))
        return max(1, min(self.num_landmarks, num_tokens))

    def kernel_for(self, num_tokens: int) -> int:
        """Taps s of the value convolution used at N = ``num_tokens`` (0: none): ``conv_kernel``, or with
        ``scale_with_tokens`` ``min(conv_kernel, max(3, 2 floor(N / 32) + 1))`` (:func:`nystrom_conv_kernel`),
        the central s taps of the stored kernel."""
        if not self.conv_kernel or not self.scale_with_tokens:
            return self.conv_kernel
        return min(self.conv_kernel, nystrom_conv_kernel(num_tokens))

    def macs(self, layout: TokenLayout) -> int:
        """Analytic multiply-adds per image for N = ``layout.num_tokens`` (see the class docstring)."""
        n, c, h = layout.num_tokens, self.dim, self.num_heads
        m = self.landmarks_for(n)
        total = self.qkv.macs(n) + n * c * c
        total += 6 * n * m * c + 2 * m * m * c + 4 * self.pinv_iterations * h * m ** 3
        return total + self.kernel_for(n) * n * c

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        q, k, v = self.qkv(x, layout)
        # Under torch.fx the token count is symbolic: the layout's N (a Python int) decides m and s.
        n = layout.num_tokens if isinstance(x, torch.fx.Proxy) else x.shape[1]
        with full_precision(q):
            out = nystrom_attention(q.float(), k.float(), v.float(), self.landmarks_for(n), self.pinv_iterations)
        out = out.to(v.dtype)
        if self.conv is not None:
            s = self.kernel_for(n)
            if s == self.conv_kernel:
                out = out + self.conv(v)  # (B, H, N, d): heads as channels, kernel along N
            else:  # the central s taps of the stored kernel
                start = (self.conv_kernel - s) // 2
                weight = self.conv.weight[:, :, start:start + s]
                out = out + F.conv2d(v, weight, padding=(s // 2, 0), groups=self.num_heads)
        return self.proj(merge_heads(out))


def build(arch: Architecture, layer_index: int, layout: TokenLayout) -> NystromAttention:
    return NystromAttention(arch.embed_dim, arch.num_heads, compact=arch.compact, scale_with_tokens=True)
