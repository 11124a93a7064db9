"""MLP-Mixer token mixing: explicit computation, channel sharing, fixed token count, model build."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from search_spaces import Architecture, build_model
from search_spaces.attention.common import TokenLayout, WithLayout
from search_spaces.attention.mixer import TokenMixingMLP

C, N = 16, 10
FLAT = TokenLayout.flat(N)


def test_hidden_width_and_parameter_count():
    mod = TokenMixingMLP(C, N, min_hidden=1)  # the paper's D_S = C / 2 alone
    assert mod.hidden == C // 2
    assert sum(p.numel() for p in mod.parameters()) == 2 * N * (C // 2) + C // 2 + N
    assert mod.mlp.fc1.weight.shape == (C // 2, N) and mod.mlp.fc2.weight.shape == (N, C // 2)
    assert TokenMixingMLP(768, 196).hidden == 384  # Mixer-B/16: C = 768, D_S = 384 >= N: the paper's width
    assert TokenMixingMLP(512, 49).hidden == 256  # Mixer-S/32
    assert TokenMixingMLP(1, N, min_hidden=1).hidden == 1
    assert TokenMixingMLP(C, N, hidden_ratio=2.0, min_hidden=1).hidden == 2 * C
    # Floored at 256, Mixer-S's width, whatever N (no bottleneck at the proxy's <= 197 tokens; linear in N).
    assert TokenMixingMLP(C, N).hidden == TokenMixingMLP(C, 3136).hidden == 256
    assert TokenMixingMLP(1024, N).hidden == 512  # Mixer-L: C / 2 above the floor


def test_matches_explicit_per_channel_mlp():
    torch.manual_seed(0)
    mod = TokenMixingMLP(C, N)
    x = torch.randn(3, N, C)
    w1, b1, w2, b2 = mod.mlp.fc1.weight, mod.mlp.fc1.bias, mod.mlp.fc2.weight, mod.mlp.fc2.bias
    expected = torch.empty_like(x)
    for b in range(3):
        for i in range(C):  # paper eq. 1: the same MLP on every column X[:, i]
            expected[b, :, i] = w2 @ F.gelu(w1 @ x[b, :, i] + b1) + b2
    with torch.no_grad():
        torch.testing.assert_close(mod(x, FLAT), expected, atol=1e-5, rtol=1e-5)


def test_weights_shared_across_channels():
    # Permuting the channels permutes the output the same way: no per-channel weights.
    torch.manual_seed(0)
    mod = TokenMixingMLP(C, N)
    x = torch.randn(2, N, C)
    perm = torch.randperm(C)
    with torch.no_grad():
        torch.testing.assert_close(mod(x[..., perm], FLAT), mod(x, FLAT)[..., perm])
    # ... but it does mix tokens: a change in one token moves the others.
    x2 = x.clone()
    x2[:, 3] += 1.0
    with torch.no_grad():
        assert (mod(x2, FLAT)[:, 0] - mod(x, FLAT)[:, 0]).abs().max() > 1e-6


def test_wrong_token_count_raises():
    mod = TokenMixingMLP(C, N)
    with pytest.raises(ValueError, match="built for 10 tokens, got 9"):
        mod(torch.randn(1, 9, C), TokenLayout.flat(9))
    with pytest.raises(ValueError):
        TokenMixingMLP(C, 0)


def test_macs_formula_matches_fvcore():
    from fvcore.nn import FlopCountAnalysis

    mod = TokenMixingMLP(C, N)
    flops = FlopCountAnalysis(WithLayout(mod, FLAT), (torch.randn(1, N, C),))
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    assert mod.hidden == max(C // 2, 256) == 256
    assert flops.total() == mod.macs(FLAT) == 2 * N * 256 * C


def test_builds_in_full_model():
    torch.manual_seed(0)
    model = build_model(Architecture(attention="mixer", pos_encoding="sincos2d"), img_size=16, in_chans=1)
    attn = model.blocks[0].attn
    assert isinstance(attn, TokenMixingMLP) and attn.num_tokens == 65 and attn.hidden == 256  # max(C/2, 256)
    out = model(torch.randn(2, 1, 16, 16))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
