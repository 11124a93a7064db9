"""The whole attention zoo through the builder: every valid gene combination trains; DeiT parity with timm;
RoPE is relative; Armour's compact halves the attention parameters; the stems have their papers' shapes."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from search_spaces import Architecture, GeneError, NasViT
from search_spaces.attention import build_attention
from search_spaces.attention.common import Rotary, TokenLayout
from search_spaces.genes import ATTENTIONS, POS_ENCODINGS, QKV_ATTENTIONS, STEMS
from search_spaces.stems import ConvBNStem, ConvStem, build_stem

C, H, IMG, P = 16, 2, 16, 4
#: Attention-specific genes that a tiny model needs (2 heads).
_EXTRA = {"mait": {"mask_ratios": (0.5, 0.0)}, "qna": {"qna_window": 3}, "refiner": {"refiner_expansion": 2}}


def _valid_combinations() -> list[Architecture]:
    """Every attention x pos_encoding x stem the gene rules allow (+ compact for Q/K/V attention)."""
    archs = []
    for attention, pos, stem in itertools.product(ATTENTIONS, POS_ENCODINGS, STEMS):
        for compact in ((False, True) if attention in QKV_ATTENTIONS else (False,)):
            try:
                archs.append(Architecture(attention=attention, embed_dim=C, depth=1, num_heads=H, mlp_ratio=2.0,
                                          patch_size=P, pos_encoding=pos, stem=stem, compact=compact,
                                          **_EXTRA.get(attention, {})))
            except GeneError:
                continue
    return archs


COMBINATIONS = _valid_combinations()


def _id(a: Architecture) -> str:
    return "-".join([a.attention, a.pos_encoding, a.stem] + (["compact"] if a.compact else []))


def test_combinations_cover_the_rules():
    # 6 Q/K/V mechanisms x 5 encodings x 3 stems x 2 (compact); qna, fnet, mixer x 3 encodings x 3 stems.
    assert len(COMBINATIONS) == 6 * 5 * 3 * 2 + 3 * 3 * 3
    assert {a.attention for a in COMBINATIONS} == set(ATTENTIONS)
    assert not any(a.pos_encoding.startswith("rope") and a.attention not in QKV_ATTENTIONS for a in COMBINATIONS)


@pytest.mark.parametrize("arch", COMBINATIONS, ids=_id)
def test_every_valid_combination_trains(arch):
    torch.manual_seed(0)
    model = NasViT(arch, img_size=IMG, in_chans=1, num_classes=4)
    x = torch.randn(4, 1, IMG, IMG)
    y = torch.tensor([0, 1, 2, 3])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    losses = []
    for step in range(6):  # 5 AdamW steps, then one more forward to read the final loss
        logits = model(x)
        assert logits.shape == (4, 4)
        loss = F.cross_entropy(logits, y)
        assert torch.isfinite(loss)
        losses.append(loss.item())
        if step == 5:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step == 0:
            # Every trainable parameter of the attention layer gets a finite gradient.
            for name, p in model.blocks[0].attn.named_parameters():
                assert p.grad is not None, name
                assert torch.isfinite(p.grad).all(), name
        opt.step()
    assert losses[-1] < losses[0], losses


def test_mhsa_at_deit_tiny_shape_has_timm_vit_tiny_parameter_count():
    import timm

    arch = Architecture(attention="mhsa", embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0, patch_size=16,
                        pos_encoding="learned", stem="patch")
    ours = NasViT(arch, img_size=224, in_chans=3, num_classes=1000)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_ref = sum(p.numel() for p in ref.parameters())
    assert ours.cls_token is not None and ours.pos_embed.shape == (1, 197, 192)
    assert n_ours == n_ref == 5_717_416


def _rotated_scores(rot: Rotary, q: torch.Tensor, k: torch.Tensor, n: int) -> torch.Tensor:
    """scores[m, j] = rot(q at position m) . rot(k at position j), for the same q and k at every position."""
    qs = rot.rotate(q.expand(1, 1, n, -1).clone(), 0)[0, 0]
    ks = rot.rotate(k.expand(1, 1, n, -1).clone(), 0)[0, 0]
    return qs @ ks.T


def test_rope1d_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    d, grid = 8, (4, 5)
    n = grid[0] * grid[1]
    rot = Rotary("rope1d", d, grid)
    q, k = torch.randn(d), torch.randn(d)
    s = _rotated_scores(rot, q, k, n)
    for m, j in itertools.product(range(n), range(n)):
        for shift in (1, 3, 7):
            if m + shift < n and j + shift < n:
                torch.testing.assert_close(s[m + shift, j + shift], s[m, j], atol=1e-5, rtol=1e-5)
    # ... and they do depend on it (the encoding is not a no-op), and equal q.k at equal positions.
    assert (s[0, 1:] - s[0, 0]).abs().max() > 1e-3
    torch.testing.assert_close(s.diagonal(), torch.full((n,), float(q @ k)), atol=1e-5, rtol=1e-5)


def test_rope2d_scores_depend_only_on_relative_position_per_axis():
    torch.manual_seed(0)
    d, (rows, cols) = 8, (4, 5)
    rot = Rotary("rope2d", d, (rows, cols))
    q, k = torch.randn(d), torch.randn(d)
    s = _rotated_scores(rot, q, k, rows * cols).view(rows, cols, rows, cols)
    for r1, c1, r2, c2 in itertools.product(range(rows), range(cols), range(rows), range(cols)):
        for dr, dc in ((1, 0), (0, 1), (2, 3)):
            if max(r1, r2) + dr < rows and max(c1, c2) + dc < cols:
                torch.testing.assert_close(s[r1 + dr, c1 + dc, r2 + dr, c2 + dc], s[r1, c1, r2, c2],
                                           atol=1e-5, rtol=1e-5)
    # Both axes matter: moving the key along a row or along a column changes the score.
    assert abs(float(s[0, 0, 0, 1] - s[0, 0, 0, 0])) > 1e-3
    assert abs(float(s[0, 0, 1, 0] - s[0, 0, 0, 0])) > 1e-3
    # rope2d is not rope1d: a shift by one row is not a shift by `cols` flattened positions.
    rot1 = Rotary("rope1d", d, (rows, cols))
    s1 = _rotated_scores(rot1, q, k, rows * cols).view(rows, cols, rows, cols)
    assert not torch.allclose(s, s1, atol=1e-4)


def test_rotary_leaves_prefix_tokens_alone():
    rot = Rotary("rope1d", 8, (2, 2))
    x = torch.randn(2, 3, 5, 8)
    out = rot.rotate(x, num_prefix_tokens=1)
    torch.testing.assert_close(out[:, :, 0], x[:, :, 0])
    assert not torch.allclose(out[:, :, 2:], x[:, :, 2:])


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_compact_halves_mhsa_attention_parameters():
    c = 64
    layout = TokenLayout(grid=(4, 4), num_prefix_tokens=1)
    full = build_attention(Architecture(attention="mhsa", embed_dim=c, num_heads=4), 0, layout)
    compact = build_attention(Architecture(attention="mhsa", embed_dim=c, num_heads=4, compact=True), 0, layout)
    assert _n_params(full) == 4 * c * c + 4 * c
    assert _n_params(compact) == 2 * c * c + 2 * c
    assert 2 * _n_params(compact) == _n_params(full)


@pytest.mark.parametrize("attention", sorted(QKV_ATTENTIONS))
def test_compact_drops_key_and_value_projections(attention):
    c = 32
    layout = TokenLayout(grid=(4, 4), num_prefix_tokens=1)
    extra = {"mait": {"mask_ratios": (0.5, 0.0, 0.5, 0.0)}, "refiner": {"refiner_expansion": 3}}.get(attention, {})
    arch = Architecture(attention=attention, embed_dim=c, num_heads=4, **extra)
    full = build_attention(arch, 0, layout)
    compact = build_attention(arch.replace(compact=True), 0, layout)
    # W_k and W_v with their biases: 2 C^2 + 2 C fewer parameters; everything else unchanged.
    assert _n_params(full) - _n_params(compact) == 2 * c * c + 2 * c


# ---------------------------------------------------------------------- stems
def test_conv_stem_follows_vision_xformers_hybrid():
    stem = ConvStem((16, 16), 2, 3, 64)
    convs = [m for m in stem.convs if isinstance(m, torch.nn.Conv2d)]
    assert [(m.in_channels, m.out_channels) for m in convs] == [(3, 16), (16, 32), (32, 64)]
    assert all(m.kernel_size == (3, 3) and m.stride == (1, 1) and m.bias is not None for m in convs)
    assert len(stem.convs) == 3  # no activation or normalisation between the convolutions
    assert stem(torch.randn(2, 3, 16, 16)).shape == (2, 64, 64) and stem.grid_size == (8, 8)
    # Patch size 1 (the paper's CIFAR setting): the feature map is the token sequence, no projection.
    stem1 = ConvStem((8, 8), 1, 3, 64)
    assert stem1.patchify is None and stem1(torch.randn(1, 3, 8, 8)).shape == (1, 64, 64)


@pytest.mark.parametrize("patch_size, widths", [(1, []), (2, [64]), (4, [32, 64]), (16, [8, 16, 32, 64])])
def test_conv_bn_stem_follows_early_convolutions(patch_size, widths):
    img = max(16, patch_size)
    stem = ConvBNStem((img, img), patch_size, 1, 64)
    convs = [m for m in stem.convs if isinstance(m, torch.nn.Conv2d)]
    assert [m.out_channels for m in convs[:-1]] == widths  # doubling, the last 3x3 block already at C
    assert all(m.kernel_size == (3, 3) and m.stride == (2, 2) for m in convs[:-1])
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in stem.convs) == len(widths)
    assert sum(isinstance(m, torch.nn.ReLU) for m in stem.convs) == len(widths)
    assert convs[-1].kernel_size == (1, 1) and convs[-1].out_channels == 64
    g = img // patch_size
    assert stem(torch.randn(2, 1, img, img)).shape == (2, g * g, 64) and stem.grid_size == (g, g)


def test_build_stem_rejects_unknown_names():
    with pytest.raises(ValueError, match="^stem: unknown value 'resnet'"):
        build_stem("resnet", (16, 16), 4, 1, 32)
