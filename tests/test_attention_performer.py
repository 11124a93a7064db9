"""Performer (FAVOR+) attention: random features, approximation quality, weights, export, model build."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from search_spaces import Architecture, build_model
from search_spaces.attention.common import Rotary, TokenLayout, WithLayout
from search_spaces.attention.mhsa import MHSA
from search_spaces.attention.performer import (
    PerformerAttention,
    default_num_features,
    favor_attention,
    orthogonal_gaussian_matrix,
    positive_random_features,
    softmax_attention,
)

C, H, N = 32, 4, 10
FLAT = TokenLayout.flat(N)


def test_default_num_features_is_d_ln_d():
    assert default_num_features(16) == math.floor(16 * math.log(16)) == 44
    assert default_num_features(64) == 266
    assert default_num_features(1) == 1
    assert PerformerAttention(64, 4).num_features == 44
    assert PerformerAttention(64, 4, num_features=10).projection.shape == (10, 16)


def test_orthogonal_blocks_and_gaussian_lengths():
    d, m = 8, 20  # two full blocks of 8 and a truncated one of 4
    w = orthogonal_gaussian_matrix(m, d, generator=torch.Generator().manual_seed(0))
    assert w.shape == (m, d) and w.dtype == torch.float32 and w.is_contiguous()
    unit = w / w.norm(dim=1, keepdim=True)
    for start, stop in ((0, 8), (8, 16), (16, 20)):
        gram = unit[start:stop] @ unit[start:stop].T
        torch.testing.assert_close(gram, torch.eye(stop - start), atol=1e-5, rtol=0)
    # Row lengths follow a chi distribution with d degrees of freedom: E|w|^2 = d.
    big = orthogonal_gaussian_matrix(4000, d, generator=torch.Generator().manual_seed(1))
    assert abs(big.pow(2).sum(dim=1).mean().item() - d) < 0.3


def test_positive_features_estimate_softmax_kernel_and_are_positive():
    g = torch.Generator().manual_seed(0)
    d, m = 4, 4096
    q = torch.randn(1, 1, 6, d, generator=g, dtype=torch.float64) * 0.5
    k = torch.randn(1, 1, 6, d, generator=g, dtype=torch.float64) * 0.5
    w = orthogonal_gaussian_matrix(m, d, generator=g).double()
    pq = positive_random_features(q, w, is_query=True, eps=0.0)
    pk = positive_random_features(k, w, is_query=False, eps=0.0)
    assert (pq > 0).all() and (pk > 0).all()
    # The stabilising shifts only rescale rows (queries) and the whole matrix (keys): normalised rows
    # of the kernel estimate are the softmax weights.
    est = pq @ pk.transpose(-2, -1)
    est = est / est.sum(-1, keepdim=True)
    exact = (q @ k.transpose(-2, -1) / math.sqrt(d)).softmax(-1)
    assert (est - exact).abs().max() < 0.02


def test_approximation_error_falls_with_number_of_features():
    d, n, seeds = 4, 16, 24
    errors = []
    for m in (16, 64, 256, 1024):
        total = 0.0
        for seed in range(seeds):
            g = torch.Generator().manual_seed(seed)
            q = torch.randn(1, 2, n, d, generator=g) * 0.5
            k = torch.randn(1, 2, n, d, generator=g) * 0.5
            v = torch.randn(1, 2, n, d, generator=g)
            w = orthogonal_gaussian_matrix(m, d, generator=g)
            exact = softmax_attention(q, k, v)
            total += ((favor_attention(q, k, v, w) - exact).norm() / exact.norm()).item()
        errors.append(total / seeds)
    for coarse, fine in zip(errors, errors[1:]):
        assert fine < coarse * 1.05, errors
    assert errors[-1] < 0.5 * errors[0], errors
    assert errors[-1] < 0.15, errors


def test_shares_weight_names_with_mhsa_and_exact_path_matches():
    torch.manual_seed(0)
    ref = MHSA(C, H)
    perf = PerformerAttention(C, H, num_features=2048)
    missing, unexpected = perf.load_state_dict(ref.state_dict(), strict=False)
    assert missing == ["projection"] and unexpected == []
    x = torch.randn(2, N, C)
    with torch.no_grad():
        torch.testing.assert_close(perf.exact_forward(x, FLAT), ref(x, FLAT), atol=1e-5, rtol=1e-5)
        approx, exact = perf(x, FLAT), ref(x, FLAT)
    assert ((approx - exact).norm() / exact.norm()).item() < 0.1


def test_rotary_layout_is_applied():
    torch.manual_seed(0)
    rot = Rotary("rope1d", C // H, (3, 3))
    layout = TokenLayout(grid=(3, 3), num_prefix_tokens=1, rotary=rot)
    ref = MHSA(C, H)
    perf = PerformerAttention(C, H)
    perf.load_state_dict(ref.state_dict(), strict=False)
    x = torch.randn(2, 10, C)
    with torch.no_grad():
        torch.testing.assert_close(perf.exact_forward(x, layout), ref(x, layout), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(perf(x, layout), perf(x, FLAT))


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_compact_halves_attention_parameters(qkv_bias):
    b = 1 if qkv_bias else 0
    full = PerformerAttention(C, H, qkv_bias=qkv_bias)
    compact = PerformerAttention(C, H, compact=True, qkv_bias=qkv_bias)
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert count(full) == 4 * C * C + 3 * b * C + C
    assert count(compact) == 2 * C * C + b * C + C
    assert "projection" not in dict(full.named_parameters())
    y = compact(torch.randn(2, N, C), FLAT)
    assert y.shape == (2, N, C)


def test_state_dict_round_trips_through_safetensors(tmp_path):
    torch.manual_seed(1)
    a = PerformerAttention(C, H).eval()
    torch.manual_seed(2)
    b = PerformerAttention(C, H).eval()
    x = torch.randn(2, N, C)
    assert not torch.equal(a(x, FLAT), b(x, FLAT))
    sd = a.state_dict()
    assert "projection" in sd and sd["projection"].is_contiguous() and sd["projection"].dtype == torch.float32
    save_file(sd, tmp_path / "w.safetensors")
    b.load_state_dict(load_file(tmp_path / "w.safetensors"))
    with torch.no_grad():
        assert torch.equal(a(x, FLAT), b(x, FLAT))


def test_redraw_only_in_training():
    torch.manual_seed(0)
    mod = PerformerAttention(C, H, redraw=True)
    x = torch.randn(1, N, C)
    before = mod.projection.clone()
    mod.eval()
    mod(x, FLAT)
    assert torch.equal(mod.projection, before)
    mod.train()
    mod(x, FLAT)
    assert not torch.equal(mod.projection, before)
    fixed = PerformerAttention(C, H)
    before = fixed.projection.clone()
    fixed.train()
    fixed(x, FLAT)
    assert torch.equal(fixed.projection, before)


def test_large_logits_stay_finite_and_bf16_autocast_works():
    torch.manual_seed(0)
    mod = PerformerAttention(C, H)
    with torch.no_grad():
        mod.qkv.qkv.weight.mul_(20)  # logits of several hundred: unstabilised exp() would overflow
    x = torch.randn(2, N, C, requires_grad=True)
    y = mod(x, FLAT)
    assert torch.isfinite(y).all()
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    mod = PerformerAttention(C, H)
    x = torch.randn(2, N, C)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = mod(x, FLAT)
    assert torch.isfinite(y16).all()
    torch.testing.assert_close(y16.float(), mod(x, FLAT), atol=0.05, rtol=0.05)


def test_macs_formula_matches_fvcore():
    from fvcore.nn import FlopCountAnalysis

    for compact in (False, True):
        mod = PerformerAttention(C, H, compact=compact)
        flops = FlopCountAnalysis(WithLayout(mod, FLAT), (torch.randn(1, N, C),))
        flops.unsupported_ops_warnings(False)
        flops.uncalled_modules_warnings(False)
        m = mod.num_features
        assert flops.total() == mod.macs(FLAT) == (2 if compact else 4) * N * C * C + 4 * N * m * C + N * m * H


@pytest.mark.parametrize("kwargs", [dict(compact=True, pos_encoding="rope1d"), dict(pos_encoding="rope2d"), {}])
def test_builds_in_full_model(kwargs):
    torch.manual_seed(0)
    model = build_model(Architecture(attention="performer", **kwargs), img_size=16, in_chans=1)
    assert isinstance(model.blocks[0].attn, PerformerAttention)
    out = model(torch.randn(2, 1, 16, 16))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
