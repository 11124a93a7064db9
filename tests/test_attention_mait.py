"""MaiT attention (arXiv 2207.03006): multiplicative local masks, class token, equivalence with MHSA."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from search_spaces import Architecture, build_model
from search_spaces.attention.common import Rotary, TokenLayout
from search_spaces.attention.mait import MaiTAttention, local_window_mask
from search_spaces.attention.mhsa import MHSA
from search_spaces.genes import mait_window_for_ratio


def _pair(ratios, dim=16, heads=4, compact=False, seed=0):
    torch.manual_seed(seed)
    mhsa = MHSA(dim, heads, compact=compact)
    mait = MaiTAttention(dim, heads, mask_ratios=ratios, compact=compact)
    mait.load_state_dict(mhsa.state_dict())          # same parameter names: interchangeable
    return mhsa.eval(), mait.eval()


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("prefix", [0, 1])
def test_all_global_equals_mhsa(compact, prefix):
    mhsa, mait = _pair((0, 0, 0, 0), compact=compact)
    layout = TokenLayout(grid=(3, 4), num_prefix_tokens=prefix)
    x = torch.randn(2, layout.num_tokens, 16)
    torch.testing.assert_close(mait(x, layout), mhsa(x, layout), rtol=0, atol=0)
    assert set(mait.state_dict()) == set(mhsa.state_dict())


def test_all_global_equals_mhsa_with_rotary():
    mhsa, mait = _pair((0, 0, 0, 0))
    layout = TokenLayout(grid=(4, 4), num_prefix_tokens=1, rotary=Rotary("rope2d", 4, (4, 4)))
    x = torch.randn(2, 17, 16)
    torch.testing.assert_close(mait(x, layout), mhsa(x, layout), rtol=0, atol=0)


def test_scores_zero_outside_window_and_unchanged_inside():
    torch.manual_seed(0)
    grid, ratios = (8, 8), (0.9, 0.0, 0.75, 0.5)
    m = MaiTAttention(16, 4, mask_ratios=ratios).eval()
    layout = TokenLayout(grid=grid, num_prefix_tokens=1)
    x = torch.randn(2, 65, 16)
    s = m.attention_scores(x, layout)
    q, k, _ = m.qkv(x, layout)
    raw = q @ k.transpose(-2, -1) / 4 ** 0.5
    wins = m.windows(grid)
    assert wins == tuple(mait_window_for_ratio(r, grid) for r in ratios) == (3, None, 5, 7)
    rows, cols = torch.arange(64) // 8, torch.arange(64) % 8
    for h, w in enumerate(wins):
        half = 64 if w is None else w // 2
        inside = ((rows[:, None] - rows[None]).abs() <= half) & ((cols[:, None] - cols[None]).abs() <= half)
        got, want = s[:, h, 1:, 1:], raw[:, h, 1:, 1:]
        torch.testing.assert_close(got[:, inside], want[:, inside])
        assert torch.all(got[:, ~inside] == 0)
    # Class-token row and column stay unmasked in every head.
    torch.testing.assert_close(s[:, :, 0, :], raw[:, :, 0, :])
    torch.testing.assert_close(s[:, :, :, 0], raw[:, :, :, 0])


def test_forward_is_softmax_of_masked_scores():
    """Explicit path: output = proj(softmax(S * M) V), with the mask built independently here."""
    torch.manual_seed(0)
    grid = (8, 9)
    m = MaiTAttention(16, 4, mask_ratios=(0.75, 0.5, 0.0, 0.9)).eval()
    layout = TokenLayout(grid=grid, num_prefix_tokens=1)
    x = torch.randn(2, 73, 16)
    q, k, v = m.qkv(x, layout)
    mask = torch.ones(4, 73, 73)
    for h, r in enumerate(m.mask_ratios):
        w = mait_window_for_ratio(r, grid)
        if w is None:
            continue
        for i in range(72):
            for j in range(72):
                if abs(i // 9 - j // 9) > w // 2 or abs(i % 9 - j % 9) > w // 2:
                    mask[h, 1 + i, 1 + j] = 0
    attn = ((q @ k.transpose(-2, -1)) / 2.0 * mask).softmax(-1)
    want = m.proj((attn @ v).transpose(1, 2).reshape(2, 73, 16))
    torch.testing.assert_close(m(x, layout), want)
    # The global head of a mixed layer agrees with plain attention for that head.
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close((m.attention_scores(x, layout).softmax(-1) @ v)[:, 2], plain[:, 2])


def test_multiplicative_mask_semantics():
    """A far token does not change a masked row's scores, but its value still counts (logit 0, weight > 0)."""
    torch.manual_seed(0)
    m = MaiTAttention(8, 1, mask_ratios=(0.9,)).eval()   # 8x8 grid -> a 3x3 window
    layout = TokenLayout(grid=(8, 8), num_prefix_tokens=0)
    assert m.windows((8, 8), 0) == (3,)
    x = torch.randn(1, 64, 8)
    x2 = x.clone()
    x2[0, 63] += 3.0
    s1, s2 = m.attention_scores(x, layout), m.attention_scores(x2, layout)
    torch.testing.assert_close(s1[0, 0, 0], s2[0, 0, 0], rtol=0, atol=0)       # row of patch 0
    w = s1[0, 0, 0].softmax(-1)
    hidden = torch.ones(64, dtype=torch.bool)
    hidden[[0, 1, 8, 9]] = False                                                # the corner's clipped 3x3 window
    assert torch.allclose(w[hidden], w[hidden][0].expand(60)) and w[63] > 0    # hidden: equal weight exp(0)
    assert not torch.allclose(m(x, layout)[0, 0], m(x2, layout)[0, 0])


def test_local_window_mask_and_cache():
    mask = local_window_mask((3, 3), 3, num_prefix_tokens=1)
    assert mask.shape == (10, 10)
    assert torch.all(mask[0] == 1) and torch.all(mask[:, 0] == 1)
    assert mask[1 + 0, 1 + 8] == 0 and mask[1 + 4].sum() == 10                 # corner vs centre patch
    assert mask[1 + 0, 1:].sum() == 4                                           # corner sees 2x2 patches
    m = MaiTAttention(8, 2, mask_ratios=(0.5, 0.0))
    layout = TokenLayout(grid=(4, 4), num_prefix_tokens=1)
    m(torch.randn(1, 17, 8), layout)
    m(torch.randn(1, 17, 8), layout)
    assert len(m._masks) == 1
    m(torch.randn(1, 26, 8), TokenLayout(grid=(5, 5), num_prefix_tokens=1))
    assert len(m._masks) == 2
    assert not any("mask" in k for k in m.state_dict())
    with pytest.raises(ValueError):
        MaiTAttention(8, 2, mask_ratios=(0.5,))


def test_macs_match_flop_counter():
    m = MaiTAttention(16, 4, mask_ratios=(0.5, 0.0, 0.0, 0.9))
    layout = TokenLayout(grid=(8, 8), num_prefix_tokens=1)
    with FlopCounterMode(display=False) as fc:
        m(torch.randn(1, 65, 16), layout)
    assert fc.get_total_flops() == 2 * m.macs(layout)
    # All heads global: the layer takes F.scaled_dot_product_attention. On the CPU that dispatches to
    # aten._scaled_dot_product_flash_attention_for_cpu, for which torch <= 2.14 registers no FLOP formula
    # (it counts 0 for the whole attention). The math backend decomposes into the real batched matmuls,
    # which every torch version counts, so the check stays the real products on every version.
    g = MaiTAttention(16, 4, mask_ratios=(0, 0, 0, 0), compact=True)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        g(torch.randn(1, 65, 16), layout)
    assert fc.get_total_flops() == 2 * g.macs(layout)


def test_gradients_flow():
    m = MaiTAttention(16, 4, mask_ratios=(0.9, 0.75, 0.5, 0.0))
    x = torch.randn(2, 65, 16, requires_grad=True)
    m(x, TokenLayout(grid=(8, 8), num_prefix_tokens=1)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("mask_layers", ["all", "paper"])
def test_builds_in_full_model_forward_backward(mask_layers):
    torch.manual_seed(0)
    arch = Architecture(attention="mait", mask_ratios=(0.9, 0.5, 0.0, 0.75), mask_layers=mask_layers,
                        pos_encoding="rope2d", depth=3)
    model = build_model(arch, img_size=16, in_chans=1)
    out = model(torch.randn(2, 1, 16, 16))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert isinstance(model.blocks[0].attn, MaiTAttention)
    if mask_layers == "paper":
        assert model.blocks[-1].attn.is_global
