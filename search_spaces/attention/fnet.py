"""FNet token mixing: the real part of a 2-D discrete Fourier transform (Lee-Thorp et al., arXiv 2105.03824)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from .common import AttentionModule, TokenLayout, full_precision

if TYPE_CHECKING:  # pragma: no cover
    from ..genes import Architecture

__all__ = ["FNetMixing", "build"]


class FNetMixing(AttentionModule):
    """FNet Fourier mixing in place of attention (Lee-Thorp et al., arXiv 2105.03824, eq. 3)::

        y = Re(FFT_seq(FFT_hidden(x)))

    a 1-D DFT along the channels, then one along the tokens (prefix tokens included), keeping the real
    part. No parameters, no queries or keys (so no rotary encoding), any N.

    Normalisation (a deliberate difference): the transform is the orthonormal one, ``torch.fft.fft2(...,
    norm="ortho")``, i.e. the paper's unnormalised DFT divided by ``sqrt(N C)``. FNet puts its mixing in a
    *post*-LN residual block, ``LN(x + mix(x))`` ("Add & Normalize" after the Fourier sublayer, arXiv
    2105.03824, Figure 1), where the scale of the mixing is normalised away after the sum; vitnas's block
    is pre-norm (``x + mix(LN(x))``) with no norm after the branch, and the unnormalised DFT of a unit-RMS
    input has RMS about ``0.7 sqrt(N C)``: measured, the branch output was 16 to 97 times its input's
    RMS for the proxy's N = 17 to 197 and C = 32 to 96 (111 to 194 times at 112 px, N = 785), swamping the
    residual. With the orthonormal DFT the real part keeps 0.69 to 0.71 of the input RMS at every N and C
    measured (the DFT preserves the norm; the real part carries about half the energy).
    Only a constant factor differs, so what the layer mixes is the paper's.

    The transform runs in float32 with autocast disabled (``torch.fft`` has no bf16 kernels and only
    power-of-two half-precision ones on CUDA); the result is cast back to the input dtype. Unlike the
    paper's TPU setup, no DFT-matrix multiplication is used: ``torch.fft.fft2`` over the last two axes.

    Args:
        dim: C (kept for the common constructor shape; the layer works for any C).

    Shapes: ``x`` (B, N, C) -> (B, N, C). Parameters: 0.

    Multiply-adds per image: ``N C log2(N C)`` = ``N C (log2 N + log2 C)``, the usual radix-2 count of a
    transform of size N C, the convention of vitnas's fvcore handle for ``aten::fft_fft2``
    (``trainers.measure``); fvcore's default handles count nothing for it. The orthonormal scaling is
    element-wise and not counted. See :meth:`macs`.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def macs(self, layout: TokenLayout) -> int:
        """Analytic multiply-adds of the 2-D FFT per image, ``N C log2(N C)`` rounded down."""
        n, c = layout.num_tokens, self.dim
        return int(n * c * math.log2(n * c))

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        with full_precision(x):
            y = torch.fft.fft2(x.float(), dim=(-2, -1), norm="ortho").real
        return y.to(x.dtype)


def build(arch: Architecture, layer_index: int, layout: TokenLayout) -> FNetMixing:
    return FNetMixing(arch.embed_dim)
