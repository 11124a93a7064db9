"""Nystromformer attention: landmarks, pseudo-inverse, exactness with m = N, conv residual, model build."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from search_spaces import Architecture, build_model
from search_spaces.attention.common import Rotary, TokenLayout, WithLayout
from search_spaces.attention.mhsa import MHSA
from search_spaces.attention.nystrom import NystromAttention, iterative_pinv, nystrom_attention, segment_means

C, H, N = 32, 4, 10


def count(mod):
    return sum(p.numel() for p in mod.parameters())


def test_segment_means():
    x = torch.randn(2, 3, 12, 5)
    torch.testing.assert_close(segment_means(x, 4), x.view(2, 3, 4, 3, 5).mean(dim=3))
    torch.testing.assert_close(segment_means(x, 12), x)
    torch.testing.assert_close(segment_means(x, 1), x.mean(dim=2, keepdim=True))
    # N = 10, m = 4: contiguous segments of 3, 2, 3, 2 tokens, every token in exactly one.
    x = torch.arange(10.0).view(1, 10, 1)
    torch.testing.assert_close(segment_means(x, 4).flatten(), torch.tensor([1.0, 3.5, 6.0, 8.5]))


def test_iterative_pinv_converges_to_inverse():
    g = torch.Generator().manual_seed(0)
    a = (torch.randn(3, 6, 6, generator=g, dtype=torch.float64) * 2).softmax(-1)
    inv = torch.linalg.inv(a)
    errs = [(iterative_pinv(a, it) - inv).abs().max().item() for it in (2, 6, 12)]
    assert errs[-1] < 1e-8, errs
    assert errs[0] > errs[1] > errs[2], errs
    # Rank-deficient input: the iteration reaches the Moore-Penrose pseudo-inverse (with many more
    # iterations, rounding noise in the null space is amplified again: about 1e-8 after 20, 2e-3 after 30).
    u = torch.randn(5, 2, generator=g, dtype=torch.float64)
    low = u @ u.T
    torch.testing.assert_close(iterative_pinv(low, 10), torch.linalg.pinv(low), atol=1e-9, rtol=1e-9)


def test_pinv_norms_are_per_matrix_so_images_are_independent():
    torch.manual_seed(0)
    mod = NystromAttention(C, H, num_landmarks=4).eval()
    x = torch.randn(3, N, C)
    x[1] *= 5  # a very different neighbour in the batch must not change image 0
    with torch.no_grad():
        flat = TokenLayout.flat(N)
        torch.testing.assert_close(mod(x, flat)[:1], mod(x[:1], flat), atol=1e-6, rtol=1e-5)


def _exact_pair(pinv_iterations, compact=False, layout=None, num_landmarks=N):
    torch.manual_seed(0)
    ref = MHSA(C, H, compact=compact)
    ny = NystromAttention(C, H, compact=compact, num_landmarks=num_landmarks, pinv_iterations=pinv_iterations)
    missing, unexpected = ny.load_state_dict(ref.state_dict(), strict=False)
    assert missing == ["conv.weight"] and unexpected == []
    with torch.no_grad():
        ny.conv.weight.zero_()
        x = torch.randn(2, N, C)
        return (ny(x, layout) - ref(x, layout)).abs().max().item()


def test_as_many_landmarks_as_tokens_is_exact_softmax_attention():
    # Measured on this setup: about 5e-3 after the paper's 6 iterations, 4e-4 after 10, 2e-6 after 20.
    err6, err10, err20 = (_exact_pair(it) for it in (6, 10, 20))
    assert err6 < 2e-2 and err20 < 1e-4, (err6, err10, err20)
    assert err20 < err10 < err6
    # num_landmarks larger than N is clamped to N.
    assert _exact_pair(20, num_landmarks=64) < 1e-4
    layout = TokenLayout(grid=(3, 3), num_prefix_tokens=1, rotary=Rotary("rope1d", C // H, (3, 3)))
    assert _exact_pair(20, compact=True, layout=layout) < 1e-4


def test_fewer_landmarks_approximate():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 32, 8) for _ in range(3))
    exact = F.scaled_dot_product_attention(q, k, v)
    approx = nystrom_attention(q, k, v, num_landmarks=8)
    rel = ((approx - exact).norm() / exact.norm()).item()
    assert rel < 1.0 and torch.isfinite(approx).all()


def test_conv_residual_is_depthwise_per_head_along_tokens():
    torch.manual_seed(0)
    ny = NystromAttention(C, H, num_landmarks=4, conv_kernel=33)
    assert ny.conv.weight.shape == (H, 1, 33, 1)
    x = torch.randn(2, 40, C)
    with torch.no_grad():
        flat = TokenLayout.flat(40)
        with_conv = ny(x, flat)
        q, k, v = ny.qkv(x)
        # Reference: each head's kernel slides along the tokens of each of its d channels, zero padded.
        vv = v.permute(0, 1, 3, 2).reshape(2, H * (C // H), 40)  # (B, H*d, N)
        w = ny.conv.weight[:, 0, :, 0].repeat_interleave(C // H, dim=0).unsqueeze(1)  # (H*d, 1, 33)
        conv = F.conv1d(vv, w, padding=16, groups=H * (C // H)).view(2, H, C // H, 40).permute(0, 1, 3, 2)
        ny_wo = NystromAttention(C, H, num_landmarks=4, conv_kernel=0)
        ny_wo.load_state_dict({k_: v_ for k_, v_ in ny.state_dict().items() if not k_.startswith("conv")})
        expected = ny_wo(x, flat) + conv.transpose(1, 2).reshape(2, 40, C) @ ny.proj.weight.T
        torch.testing.assert_close(with_conv, expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="odd"):
        NystromAttention(C, H, conv_kernel=32)


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_parameter_counts_and_compact_halves_attention(qkv_bias):
    b = 1 if qkv_bias else 0
    full = NystromAttention(C, H, qkv_bias=qkv_bias)
    compact = NystromAttention(C, H, compact=True, qkv_bias=qkv_bias)
    assert count(full) == 4 * C * C + 3 * b * C + C + H * 33
    assert count(compact) == 2 * C * C + b * C + C + H * 33
    assert count(NystromAttention(C, H, conv_kernel=0)) == 4 * C * C + 4 * C


def test_landmarks_clamped_to_short_sequences():
    mod = NystromAttention(C, H, num_landmarks=16)
    y = mod(torch.randn(2, 5, C), TokenLayout.flat(5))
    assert y.shape == (2, 5, C) and torch.isfinite(y).all()


def test_bf16_autocast():
    torch.manual_seed(0)
    mod = NystromAttention(C, H, num_landmarks=4)
    x = torch.randn(2, 20, C)
    flat = TokenLayout.flat(20)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = mod(x, flat)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), mod(x, flat), atol=0.05, rtol=0.05)


def test_macs_formula_matches_fvcore():
    from fvcore.nn import FlopCountAnalysis

    for compact, n, m in ((False, 40, 8), (True, 23, 5), (False, 6, 16)):
        mod = NystromAttention(C, H, compact=compact, num_landmarks=m)
        flops = FlopCountAnalysis(WithLayout(mod, TokenLayout.flat(n)), (torch.randn(1, n, C),))
        flops.unsupported_ops_warnings(False)
        flops.uncalled_modules_warnings(False)
        mm = min(m, n)
        formula = (2 if compact else 4) * n * C * C + 6 * n * mm * C + 2 * mm * mm * C + 4 * 6 * H * mm ** 3 + 33 * n * C
        assert flops.total() == mod.macs(TokenLayout.flat(n)) == formula


@pytest.mark.parametrize("kwargs", [dict(compact=True, pos_encoding="rope1d"), dict(pos_encoding="rope2d"), {}])
def test_builds_in_full_model(kwargs):
    torch.manual_seed(0)
    model = build_model(Architecture(attention="nystrom", **kwargs), img_size=16, in_chans=1)
    assert isinstance(model.blocks[0].attn, NystromAttention)  # 65 tokens, 16 uneven segments
    out = model(torch.randn(2, 1, 16, 16))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
