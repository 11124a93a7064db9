"""FNet Fourier mixing: no parameters, equals an explicit DFT-matrix computation, dtypes, model build."""

from __future__ import annotations

import math

import pytest
import torch

from search_spaces import Architecture, GeneError, build_model
from search_spaces.attention.common import TokenLayout
from search_spaces.attention.fnet import FNetMixing


def dft_matrix(n: int) -> torch.Tensor:
    j = torch.arange(n, dtype=torch.float64)
    return torch.exp(-2j * math.pi * torch.outer(j, j) / n)  # complex128, F[a, b] = e^{-2 pi i a b / n}


def test_has_no_parameters_or_state():
    mod = FNetMixing(16)
    assert sum(p.numel() for p in mod.parameters()) == 0
    assert len(mod.state_dict()) == 0


@pytest.mark.parametrize("n, c", [(10, 16), (7, 12), (65, 8)])
def test_matches_explicit_dft_matrices(n, c):
    torch.manual_seed(0)
    x = torch.randn(3, n, c)
    # Paper eq. 3: y = Re(F_seq (X F_hidden)) — DFT over the hidden axis, then over the tokens — with the
    # orthonormal scaling 1 / sqrt(N C) (the documented deviation for the pre-norm block).
    xc = x.to(torch.complex128)
    expected = (dft_matrix(n) @ (xc @ dft_matrix(c).T)).real / math.sqrt(n * c)
    y = FNetMixing(c)(x, TokenLayout.flat(n))
    assert y.shape == x.shape and y.dtype == torch.float32
    torch.testing.assert_close(y.double(), expected, atol=1e-4, rtol=1e-5)


def test_mixes_every_token_and_channel():
    x = torch.zeros(1, 6, 4)
    x[0, 2, 1] = 1.0  # a single impulse reaches every output position
    y = FNetMixing(4)(x, TokenLayout.flat(6))
    assert (y.abs() > 1e-6).sum() >= 12
    # A constant input maps onto the zero-frequency bin only.
    y = FNetMixing(4)(torch.ones(1, 6, 4), TokenLayout.flat(6))
    expected = torch.zeros(1, 6, 4)
    expected[0, 0, 0] = 24.0 / math.sqrt(24)  # orthonormal DFT: sum / sqrt(N C)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=0)


def test_low_precision_inputs_and_autocast():
    torch.manual_seed(0)
    x = torch.randn(2, 9, 12)
    layout = TokenLayout.flat(9)
    ref = FNetMixing(12)(x, layout)
    y16 = FNetMixing(12)(x.bfloat16(), layout)
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), ref, atol=0.3, rtol=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya = FNetMixing(12)(x, layout)
    assert ya.dtype == torch.float32
    torch.testing.assert_close(ya, ref)


def test_gradient_flows():
    x = torch.randn(2, 5, 6, requires_grad=True)
    FNetMixing(6)(x, TokenLayout.flat(5)).pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_macs_formula_matches_project_flop_count():
    from trainers.measure import count_flops

    assert FNetMixing(64).macs(TokenLayout.flat(64)) == 64 * 64 * 12

    class Wrap(torch.nn.Module):  # count_flops feeds (1, *shape): a (1, 1, N, C) "image"
        def forward(self, x):
            return FNetMixing(16)(x[:, 0], TokenLayout.flat(20))

    assert count_flops(Wrap(), (1, 20, 16)) == FNetMixing(16).macs(TokenLayout.flat(20))


def test_builds_in_full_model_and_rejects_rope():
    torch.manual_seed(0)
    model = build_model(Architecture(attention="fnet"), img_size=16, in_chans=1)
    assert isinstance(model.blocks[0].attn, FNetMixing)
    out = model(torch.randn(2, 1, 16, 16))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(GeneError):
        Architecture(attention="fnet", pos_encoding="rope1d")
