"""FNet token mixing: the real part of a 2-D discrete Fourier transform (Lee-Thorp et al., arXiv 2105.03824)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import TokenLayout

__all__ = ["FNetMixing"]


class FNetMixing(nn.Module):
    """FNet Fourier mixing in place of attention (Lee-Thorp et al., arXiv 2105.03824, eq. 3)::

        y = Re(FFT_seq(FFT_hidden(x)))

    a 1-D DFT along the channels, then one along the tokens (prefix tokens included), keeping the real
    part. No parameters, no queries or keys (so no rotary encoding), any N.

    The transform runs in float32 with autocast disabled (``torch.fft`` has no bf16 kernels and only
    power-of-two half-precision ones on CUDA); the result is cast back to the input dtype. Unlike the
    paper's TPU setup, no DFT-matrix multiplication is used: ``torch.fft.fft2`` over the last two axes.

    Args:
        dim: C (kept for the common constructor shape; the layer works for any C).

    Shapes: ``x`` (B, N, C) -> (B, N, C). Parameters: 0.

    Multiply-adds per image: none that fvcore counts (the FFT is not a matrix product; fvcore reports
    0). Analytically a radix-2 FFT of the N x C array costs about ``2 N C (log2 N + log2 C)`` real
    multiply-adds (N C log2(N C) / 2 complex butterflies, 4 real multiply-adds each) — see :meth:`macs`.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def macs(self, num_tokens: int) -> int:
        """Analytic real multiply-adds of the 2-D FFT per image (fvcore counts 0), rounded down."""
        n, c = num_tokens, self.dim
        return int(2 * n * c * (math.log2(n) + math.log2(c)))

    def forward(self, x: torch.Tensor, layout: TokenLayout | None = None) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = torch.fft.fft2(x.float(), dim=(-2, -1)).real
        return y.to(x.dtype)
