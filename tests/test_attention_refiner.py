"""Refiner attention (arXiv 2106.03714): expansion, depthwise map convolution, reduction."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from search_spaces import Architecture, build_model
from search_spaces.attention.common import Rotary, TokenLayout
from search_spaces.attention.mhsa import MHSA
from search_spaces.attention.refiner import RefinerAttention


def _identity_refiner(m: RefinerAttention) -> RefinerAttention:
    with torch.no_grad():
        m.expand.copy_(torch.eye(m.num_heads).repeat_interleave(m.expansion, dim=0))
        m.depthwise.zero_()
        m.depthwise[:, 0, m.kernel_size // 2, m.kernel_size // 2] = 1.0
        m.reduce.copy_(torch.eye(m.num_heads).repeat_interleave(m.expansion, dim=1) / m.expansion)
    return m


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("expansion", [1, 3])
def test_identity_refiner_equals_mhsa(compact, expansion):
    torch.manual_seed(0)
    mhsa = MHSA(16, 4, compact=compact).eval()
    ref = RefinerAttention(16, 4, expansion=expansion, compact=compact).eval()
    missing, unexpected = ref.load_state_dict(mhsa.state_dict(), strict=False)
    assert set(missing) == {"expand", "depthwise", "reduce"} and not unexpected
    _identity_refiner(ref)
    layout = TokenLayout(grid=(3, 4), num_prefix_tokens=1)
    x = torch.randn(2, 13, 16)
    torch.testing.assert_close(ref(x, layout), mhsa(x, layout), rtol=1e-5, atol=1e-6)


def test_identity_refiner_equals_mhsa_with_rotary():
    torch.manual_seed(0)
    mhsa = MHSA(16, 2).eval()
    ref = _identity_refiner(RefinerAttention(16, 2, expansion=1)).eval()
    ref.load_state_dict(mhsa.state_dict(), strict=False)
    layout = TokenLayout(grid=(4, 4), num_prefix_tokens=1, rotary=Rotary("rope1d", 8, (4, 4)))
    x = torch.randn(1, 17, 16)
    torch.testing.assert_close(ref(x, layout), mhsa(x, layout), rtol=1e-5, atol=1e-6)


def test_refine_matches_explicit_loops():
    """Expansion, k x k depthwise convolution with zero padding, reduction, checked entry by entry."""
    torch.manual_seed(0)
    h, r, k, n = 2, 2, 3, 5
    m = RefinerAttention(8, h, expansion=r, kernel_size=k)
    with torch.no_grad():
        for p in (m.expand, m.depthwise, m.reduce):
            p.copy_(torch.randn_like(p))
    a = torch.randn(1, h, n, n, dtype=torch.float64)
    got = m.double().refine(a)
    e = torch.zeros(r * h, n, n, dtype=torch.float64)
    for o in range(r * h):
        for hh in range(h):
            e[o] += m.expand[o, hh] * a[0, hh]
    c = torch.zeros_like(e)
    for o in range(r * h):
        for i in range(n):
            for j in range(n):
                for di in range(k):
                    for dj in range(k):
                        ii, jj = i + di - k // 2, j + dj - k // 2
                        if 0 <= ii < n and 0 <= jj < n:
                            c[o, i, j] += m.depthwise[o, 0, di, dj] * e[o, ii, jj]
    want = torch.einsum("he,eij->hij", m.reduce.detach(), c)
    torch.testing.assert_close(got[0], want)


def test_forward_uses_refined_maps():
    torch.manual_seed(0)
    m = RefinerAttention(16, 4, expansion=2).eval()
    layout = TokenLayout(grid=(3, 3), num_prefix_tokens=1)
    x = torch.randn(2, 10, 16)
    attn, refined = m.attention_maps(x, layout)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 4, 10))
    assert not torch.allclose(attn, refined)                    # near-identity init, but not identity
    _, _, v = m.qkv(x, layout)
    want = m.proj((refined @ v).transpose(1, 2).reshape(2, 10, 16))
    torch.testing.assert_close(m(x, layout), want)


@pytest.mark.parametrize("expansion,compact,bias,k", [(1, False, True, 3), (3, False, False, 3),
                                                      (6, True, True, 5), (4, True, False, 3)])
def test_param_count_formula(expansion, compact, bias, k):
    c, h = 24, 6
    m = RefinerAttention(c, h, expansion=expansion, compact=compact, qkv_bias=bias, kernel_size=k)
    n = sum(p.numel() for p in m.parameters())
    assert n == RefinerAttention.num_params(c, h, expansion, compact, bias, k)
    base = (2 if compact else 4) * c * c + (2 if compact else 4) * c - (0 if bias else (c if compact else 3 * c))
    assert n == base + 2 * expansion * h * h + expansion * h * k * k


def test_macs_match_flop_counter():
    m = RefinerAttention(16, 4, expansion=3)
    layout = TokenLayout(grid=(4, 4), num_prefix_tokens=1)
    with FlopCounterMode(display=False) as fc:
        m(torch.randn(1, 17, 16), layout)
    assert fc.get_total_flops() == 2 * m.macs(layout)


def test_gradients_reach_refiner():
    m = RefinerAttention(16, 4, expansion=2)
    x = torch.randn(2, 17, 16, requires_grad=True)
    m(x, TokenLayout(grid=(4, 4), num_prefix_tokens=1)).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_memory_grows_with_expansion():
    """The expanded maps are r H N^2: saved activations grow with r."""
    def saved(r):
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t
        m = RefinerAttention(16, 4, expansion=r)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            m(torch.randn(1, 65, 16), TokenLayout(grid=(8, 8), num_prefix_tokens=1))
        return total
    s1, s4 = saved(1), saved(4)
    assert s4 > s1 + 3 * 4 * 65 * 65 * 4          # at least one extra (3 H N^2) float32 map


def test_refiner_init_survives_model_init():
    model = build_model(Architecture(attention="refiner", refiner_expansion=2), img_size=16, in_chans=1)
    attn = model.blocks[0].attn
    assert isinstance(attn, RefinerAttention)
    # Near-identity after timm's generic init (which would otherwise leave 0.02-scale weights).
    assert (attn.depthwise[:, 0, 1, 1] - 1).abs().max() < 0.2
    torch.testing.assert_close(attn.reduce.sum(1), torch.ones(attn.num_heads))


@pytest.mark.parametrize("pos", ["learned", "rope2d"])
def test_builds_in_full_model_forward_backward(pos):
    torch.manual_seed(0)
    arch = Architecture(attention="refiner", refiner_expansion=3, pos_encoding=pos, compact=pos == "rope2d")
    model = build_model(arch, img_size=16, in_chans=1)
    out = model(torch.randn(2, 1, 16, 16))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert model.blocks[0].attn.expand.grad is not None


def test_bad_arguments():
    with pytest.raises(ValueError):
        RefinerAttention(16, 4, expansion=0)
    with pytest.raises(ValueError):
        RefinerAttention(16, 4, expansion=2, kernel_size=4)
