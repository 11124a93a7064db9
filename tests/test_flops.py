"""FLOPs: what ``trainers.measure`` reports for each attention mechanism agrees with the analytic
multiply-add count its module documents (fvcore convention: one multiply-add = 1; element-wise ops are
not counted)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from search_spaces import Architecture, build_model
from search_spaces.attention.common import WithLayout as _Attend
from search_spaces.genes import ATTENTIONS, QKV_ATTENTIONS
from search_spaces.stems import ConvBNStem, ConvStem
from trainers.measure import count_flops, count_module_flops

C, H, IMG = 32, 2, 16
_EXTRA = {"mait": {"mask_ratios": (0.5, 0.0)}, "qna": {"qna_window": 3}, "refiner": {"refiner_expansion": 3}}


def _documented_macs(attn: nn.Module, layout, arch: Architecture) -> int:
    """The module's own analytic count (every mechanism has ``macs(layout)``)."""
    return attn.macs(layout)


def _not_counted_by_fvcore(attn: nn.Module, layout, arch: Architecture) -> int:
    """Terms a module's formula includes that fvcore cannot see (element-wise products)."""
    if arch.attention == "qna":
        # QnA's macs() counts L N C for the element-wise weighting exp(s) * v (its docstring lists it);
        # fvcore counts no element-wise multiplication.
        return attn.num_queries * layout.num_tokens * arch.embed_dim
    return 0


CASES = [(a, compact) for a in ATTENTIONS for compact in ((False, True) if a in QKV_ATTENTIONS else (False,))]


@pytest.mark.parametrize("patch_size", [2, 4])
@pytest.mark.parametrize("attention, compact", CASES,
                         ids=[f"{a}{'-compact' if c else ''}" for a, c in CASES])
def test_attention_flops_match_the_documented_count(attention, compact, patch_size):
    arch = Architecture(attention=attention, embed_dim=C, depth=1, num_heads=H, patch_size=patch_size,
                        compact=compact, pos_encoding="learned", **_EXTRA.get(attention, {}))
    model = build_model(arch, img_size=IMG, in_chans=1, num_classes=10)
    attn, layout = model.blocks[0].attn, model.layout
    measured = count_module_flops(_Attend(attn, layout), torch.randn(1, layout.num_tokens, C))
    expected = _documented_macs(attn, layout, arch) - _not_counted_by_fvcore(attn, layout, arch)
    assert measured == expected > 0


@pytest.mark.parametrize("attention", ["mhsa", "performer", "nystrom"])
@pytest.mark.parametrize("pos", ["rope1d", "rope2d"])
def test_rotary_adds_no_multiply_adds(attention, pos):
    # RoPE is element-wise (fvcore does not count it): the count equals the learned-encoding one.
    counts = []
    for p in ("learned", pos):
        arch = Architecture(attention=attention, embed_dim=C, depth=1, num_heads=H, patch_size=4, pos_encoding=p)
        model = build_model(arch, img_size=IMG, in_chans=1, num_classes=10)
        counts.append(count_module_flops(_Attend(model.blocks[0].attn, model.layout),
                                         torch.randn(1, model.layout.num_tokens, C)))
    assert counts[0] == counts[1]


def test_attention_costs_scale_as_documented():
    # Quadratic MHSA vs linear FAVOR+: quadrupling N (patch 4 -> 2) grows the N^2 term 16x for MHSA only.
    def attn_flops(attention, patch_size):
        arch = Architecture(attention=attention, embed_dim=C, depth=1, num_heads=H, patch_size=patch_size)
        model = build_model(arch, img_size=64, in_chans=1, num_classes=10)
        return count_module_flops(_Attend(model.blocks[0].attn, model.layout),
                                  torch.randn(1, model.layout.num_tokens, C))

    # At 257 and 1,025 tokens Performer keeps all floor(d ln d) = 44 features (m = min(d ln d, N / 4)).
    n_small, n_big = 1 + 16 * 16, 1 + 32 * 32
    mhsa_growth = attn_flops("mhsa", 2) - attn_flops("mhsa", 4)
    assert mhsa_growth == 4 * (n_big - n_small) * C * C + 2 * (n_big ** 2 - n_small ** 2) * C
    perf_ratio = attn_flops("performer", 2) / attn_flops("performer", 4)
    assert perf_ratio == pytest.approx(n_big / n_small, rel=1e-9)  # linear in N


def test_count_flops_is_count_module_flops_on_one_image():
    arch = Architecture(attention="fnet", embed_dim=C, depth=2, num_heads=H, patch_size=4)
    model = build_model(arch, img_size=IMG, in_chans=1, num_classes=10)
    model.train()
    assert count_flops(model, (1, IMG, IMG)) == count_module_flops(model, torch.zeros(1, 1, IMG, IMG))
    assert model.training  # the training flag is restored


def test_conv_stem_flops():
    c, p, img = 32, 2, 16
    stem = ConvStem((img, img), p, 1, c)
    pixels, tokens = img * img, (img // p) ** 2
    expected = pixels * 9 * (1 * c // 4 + c // 4 * c // 2 + c // 2 * c) + tokens * c * c * p * p
    assert count_module_flops(stem, torch.zeros(1, 1, img, img)) == expected


def test_conv_bn_stem_flops():
    c, p, img = 32, 4, 16
    stem = ConvBNStem((img, img), p, 1, c)
    # Two stride-2 3x3 convolutions (1 -> 16 on 8x8, 16 -> 32 on 4x4), the 1x1 projection on 4x4;
    # fvcore counts an inference BatchNorm with affine parameters as 2 per element (scale, shift).
    convs = 8 * 8 * 9 * 1 * 16 + 4 * 4 * 9 * 16 * 32 + 4 * 4 * 32 * c
    norms = 2 * (8 * 8 * 16 + 4 * 4 * 32)
    assert count_module_flops(stem, torch.zeros(1, 1, img, img)) == convs + norms
