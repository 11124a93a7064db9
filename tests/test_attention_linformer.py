"""Linformer attention: identity projection equals MHSA, fixed token count, parameters, model build."""

from __future__ import annotations

import pytest
import torch

from search_spaces import Architecture, build_model
from search_spaces.attention.common import Rotary, TokenLayout
from search_spaces.attention.linformer import LinformerAttention
from search_spaces.attention.mhsa import MHSA

C, H, N = 32, 4, 10
FLAT = TokenLayout.flat(N)


def count(mod):
    return sum(p.numel() for p in mod.parameters())


@pytest.mark.parametrize("rotary", [False, True])
@pytest.mark.parametrize("compact", [False, True])
def test_identity_projection_equals_mhsa(rotary, compact):
    torch.manual_seed(0)
    layout = TokenLayout(grid=(3, 3), num_prefix_tokens=1,
                         rotary=Rotary("rope1d", C // H, (3, 3)) if rotary else None)
    ref = MHSA(C, H, compact=compact)
    lin = LinformerAttention(C, H, num_tokens=N, k=N, compact=compact)
    missing, unexpected = lin.load_state_dict(ref.state_dict(), strict=False)
    assert missing == ["token_proj"] and unexpected == []
    with torch.no_grad():
        lin.token_proj.copy_(torch.eye(N))
    x = torch.randn(3, N, C)
    with torch.no_grad():
        torch.testing.assert_close(lin(x, layout), ref(x, layout), atol=1e-5, rtol=1e-5)


def test_token_permutation_projection_also_equals_mhsa():
    # Softmax attention does not care about the order of keys/values: any permutation matrix works.
    torch.manual_seed(0)
    ref = MHSA(C, H)
    lin = LinformerAttention(C, H, num_tokens=N, k=N)
    lin.load_state_dict(ref.state_dict(), strict=False)
    with torch.no_grad():
        lin.token_proj.copy_(torch.eye(N)[torch.randperm(N)])
    x = torch.randn(2, N, C)
    with torch.no_grad():
        torch.testing.assert_close(lin(x, FLAT), ref(x, FLAT), atol=1e-5, rtol=1e-5)


def test_keys_and_values_share_one_projection_of_clamped_length():
    lin = LinformerAttention(C, H, num_tokens=N)  # default k = min(64, N // 4): compresses at every N
    assert lin.k == N // 4 and lin.token_proj.shape == (N // 4, N)
    lin = LinformerAttention(C, H, num_tokens=N, k=64)  # an explicit k is clamped to N
    assert lin.k == N and lin.token_proj.shape == (N, N)
    lin = LinformerAttention(C, H, num_tokens=100, k=16)
    assert lin.token_proj.shape == (16, 100)
    assert [n for n, _ in lin.named_parameters() if "token" in n] == ["token_proj"]
    # With k = 1 there is a single projected key: its softmax weight is 1 for every query, so every
    # token receives the same value (E V) and all output rows are equal.
    torch.manual_seed(0)
    lin = LinformerAttention(C, H, num_tokens=N, k=1)
    y = lin(torch.randn(2, N, C), FLAT)
    assert y.shape == (2, N, C)
    torch.testing.assert_close(y, y[:, :1].expand_as(y))


def test_wrong_token_count_raises():
    lin = LinformerAttention(C, H, num_tokens=N)
    with pytest.raises(ValueError, match="built for 10 tokens, got 12"):
        lin(torch.randn(1, 12, C), TokenLayout.flat(12))


def test_invalid_arguments_raise():
    with pytest.raises(ValueError):
        LinformerAttention(C, H, num_tokens=0)
    with pytest.raises(ValueError):
        LinformerAttention(C, H, num_tokens=N, k=0)


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_parameter_counts_and_compact_halves_attention(qkv_bias):
    b = 1 if qkv_bias else 0
    k = 8
    full = LinformerAttention(C, H, num_tokens=N, k=k, qkv_bias=qkv_bias)
    compact = LinformerAttention(C, H, num_tokens=N, k=k, compact=True, qkv_bias=qkv_bias)
    assert count(full) == 4 * C * C + 3 * b * C + C + k * N
    assert count(compact) == 2 * C * C + b * C + C + k * N
    assert compact(torch.randn(2, N, C), FLAT).shape == (2, N, C)


@pytest.mark.parametrize("compact", [False, True])
def test_macs_formula_matches_project_flop_count(compact):
    from trainers.measure import count_flops

    lin = LinformerAttention(C, H, num_tokens=N, k=8, compact=compact)
    assert lin.macs(FLAT) == (2 if compact else 4) * N * C * C + 4 * N * 8 * C

    class Wrap(torch.nn.Module):  # count_flops feeds (1, *shape): a (1, 1, N, C) "image"
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(x[:, 0], FLAT)

    assert count_flops(Wrap(), (1, N, C)) == lin.macs(FLAT)


def test_projection_init_keeps_key_scale():
    torch.manual_seed(0)
    lin = LinformerAttention(C, H, num_tokens=400, k=64)
    std = lin.token_proj.std().item()
    assert abs(std - 400 ** -0.5) < 0.1 * 400 ** -0.5


@pytest.mark.parametrize("kwargs", [dict(compact=True, pos_encoding="rope1d"), dict(pos_encoding="rope2d"), {}])
def test_builds_in_full_model(kwargs):
    torch.manual_seed(0)
    model = build_model(Architecture(attention="linformer", **kwargs), img_size=16, in_chans=1)
    attn = model.blocks[0].attn
    assert isinstance(attn, LinformerAttention) and attn.num_tokens == 65
    # The builder's generic init must not wipe the token projection.
    assert attn.token_proj.std().item() > 0.05
    out = model(torch.randn(2, 1, 16, 16))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert attn.token_proj.grad is not None and torch.isfinite(attn.token_proj.grad).all()
