"""Every mechanism stays itself at every token count the space produces (issue 11).

Grids: patch sizes 2 and 4 on the proxy's 16 px and 28 px images (4x4, 8x8, 7x7, 14x14) and on a 112 px
deployment (28x28, 56x56), i.e. 16 to 3,136 patch tokens, with a class token (all mechanisms but QnA)
and without. For each embed_dim x num_heads of the default domain the real modules are built through the
registry (as the model builder builds them) and checked against the rule their docstrings state.
"""

from __future__ import annotations

import itertools
import math

import optuna
import pytest
import torch

from search_spaces import Architecture, GeneError, SearchSpace, build_model
from search_spaces.attention import build_attention
from search_spaces.attention.common import TokenLayout, WithLayout
from search_spaces.attention.linformer import LinformerAttention
from search_spaces.attention.mait import (
    MAIT_MIN_WINDOW,
    MASK_RATIO_CHOICES,
    MaiTAttention,
    local_window_mask,
    mait_hidden_fraction,
    mait_refusal,
)
from search_spaces.attention.mixer import TokenMixingMLP
from search_spaces.attention.nystrom import NystromAttention
from search_spaces.attention.performer import PerformerAttention
from search_spaces.attention.qna import QnAAttention
from search_spaces.genes import rules
from search_spaces.registry import get_mechanism
from search_spaces.stems import build_stem
from trainers.measure import count_module_flops

SPACE = SearchSpace()
#: (image side, patch size) pairs: the proxy's 16 and 28 px images and a 112 px deployment.
SHAPES = [(img, p) for img in (16, 28, 112) for p in SPACE.patch_size]
GRIDS = sorted({img // p for img, p in SHAPES})
SHAPE_CASES = list(itertools.product(SPACE.embed_dim, SPACE.num_heads))
RATIOS = [r for r in MASK_RATIO_CHOICES if r > 0]


def test_the_space_produces_the_grids_of_the_issue():
    assert GRIDS == [4, 7, 8, 14, 28, 56]


def _layouts():
    for g in GRIDS:
        for prefix in (0, 1):
            yield TokenLayout(grid=(g, g), num_prefix_tokens=prefix)


def _arch(attention: str, c: int, h: int, **genes) -> Architecture:
    return Architecture(attention=attention, embed_dim=c, num_heads=h, depth=1, **genes)


@pytest.mark.parametrize("stem", SPACE.stem)
@pytest.mark.parametrize("img, patch", SHAPES)
def test_stems_keep_total_stride_patch_size(stem, img, patch):
    module = build_stem(stem, (img, img), patch, 1, 32)
    with torch.no_grad():
        tokens = module(torch.zeros(1, 1, img, img))
    assert module.grid_size == (img // patch, img // patch)
    assert tokens.shape == (1, (img // patch) ** 2, 32)


def test_linformer_compresses_at_every_grid():
    for (c, h), layout in itertools.product(SHAPE_CASES, _layouts()):
        n = layout.num_tokens
        attn = build_attention(_arch("linformer", c, h), 0, layout)
        assert isinstance(attn, LinformerAttention)
        assert attn.k <= n / 2 and attn.k == min(64, n // 4), (c, h, n)
        assert attn.token_proj.shape == (attn.k, n)
        assert attn.macs(layout) < build_attention(_arch("mhsa", c, h), 0, layout).macs(layout)


def test_nystrom_landmarks_and_kernel_scale_with_the_grid():
    for (c, h), layout in itertools.product(SHAPE_CASES, _layouts()):
        n = layout.num_tokens
        attn = build_attention(_arch("nystrom", c, h), 0, layout)
        assert isinstance(attn, NystromAttention)
        m, s = attn.landmarks_for(n), attn.kernel_for(n)
        assert 1 <= m <= n / 2 and m == min(16, n // 8), (c, h, n)
        assert s % 2 == 1 and 3 <= s < n and s == min(33, max(3, 2 * (n // 32) + 1)), (c, h, n)
        assert attn.conv.weight.shape == (h, 1, 33, 1)  # one state-dict shape at every image size
        # No longer exact attention at a multiple of its cost (16 landmarks on 17 tokens: 8-26x its attention part).
        assert attn.macs(layout) < build_attention(_arch("mhsa", c, h), 0, layout).macs(layout), (c, h, n)
    # The paper's constants hold from their own scale on (16 landmarks, 33 taps at N = 1,025).
    big = build_attention(_arch("nystrom", 64, 2), 0, TokenLayout(grid=(32, 32), num_prefix_tokens=1))
    assert (big.landmarks_for(1025), big.kernel_for(1025)) == (16, 33)


@pytest.mark.parametrize("grid, prefix", [((4, 4), 1), ((14, 14), 0)])
def test_nystrom_uses_the_central_taps_and_its_macs_match_fvcore(grid, prefix):
    torch.manual_seed(0)
    layout = TokenLayout(grid=grid, num_prefix_tokens=prefix)
    arch = _arch("nystrom", 32, 2)
    attn = build_attention(arch, 0, layout).eval()
    n, s = layout.num_tokens, attn.kernel_for(layout.num_tokens)
    start = (33 - s) // 2
    x = torch.randn(2, n, 32)
    with torch.no_grad():
        ref = attn(x, layout)
        attn.conv.weight[:, :, :start] = 1e3  # taps outside the central s do not act ...
        attn.conv.weight[:, :, start + s:] = 1e3
        torch.testing.assert_close(attn(x, layout), ref)
        attn.conv.weight[:, :, start:start + s] = 0.0  # ... the central ones do
        assert not torch.allclose(attn(x, layout), ref)
    flops = count_module_flops(WithLayout(attn, layout), torch.randn(1, n, 32))
    assert flops == get_mechanism("nystrom").macs(arch, layout) == attn.macs(layout)


@pytest.mark.parametrize("compact", [False, True])
def test_performer_costs_less_than_mhsa_wherever_the_space_allows_it(compact):
    performer, mhsa = get_mechanism("performer"), get_mechanism("mhsa")
    for (c, h), layout in itertools.product(SHAPE_CASES, _layouts()):
        n = layout.num_tokens
        arch = _arch("performer", c, h, compact=compact)
        attn = build_attention(arch, 0, layout)
        m = attn.features_for(n)
        assert m == min(math.floor(arch.head_dim * math.log(arch.head_dim)), n // 4) <= n / 4
        assert attn.projection.shape == (attn.num_features, arch.head_dim)  # one shape at every image size
        macs = performer.macs(arch, layout)
        assert macs == attn.macs(layout)
        assert macs < mhsa.macs(_arch("mhsa", c, h, compact=compact), layout), (c, h, n, compact)


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("grid, prefix", [((4, 4), 1), ((8, 8), 0), ((28, 28), 1)])
def test_performer_macs_match_fvcore(compact, grid, prefix):
    layout = TokenLayout(grid=grid, num_prefix_tokens=prefix)
    arch = _arch("performer", 32, 2, compact=compact)
    attn = build_attention(arch, 0, layout)
    flops = count_module_flops(WithLayout(attn, layout), torch.randn(1, layout.num_tokens, 32))
    assert flops == get_mechanism("performer").macs(arch, layout)


def _relative_error(attn: PerformerAttention, x: torch.Tensor, layout: TokenLayout) -> float:
    with torch.no_grad():
        approx, exact = attn(x, layout), attn.exact_forward(x, layout)
    return ((approx - exact).norm() / exact.norm()).item()


def _performer_errors(c: int, h: int, img: int, patch: int, seeds=(0, 1, 2)) -> tuple[float, float, float]:
    """Mean FAVOR+ relative error of the first layer of a freshly built model (its real init and its
    real layer-normalised tokens): without compact, with compact, with compact but unscaled keys."""
    out = []
    for compact, unscaled in ((False, False), (True, False), (True, True)):
        errs = []
        for seed in seeds:
            torch.manual_seed(seed)
            model = build_model(_arch("performer", c, h, patch_size=patch, compact=compact), img_size=img,
                                in_chans=1).eval()
            attn = model.blocks[0].attn
            if unscaled:
                attn.key_scale = 1.0
            with torch.no_grad():
                x = model.blocks[0].norm1(model._embed(torch.randn(2, 1, img, img)))
            errs.append(_relative_error(attn, x, model.layout))
        out.append(sum(errs) / len(errs))
    return out[0], out[1], out[2]


@pytest.mark.parametrize("c, h, img, patch", [(64, 2, 16, 2), (64, 4, 16, 2), (32, 2, 28, 2)])
def test_compact_performer_keys_have_a_sane_scale(c, h, img, patch):
    plain, compact, unscaled = _performer_errors(c, h, img, patch)
    assert compact < 2 * plain, (plain, compact)
    assert unscaled > 4 * plain  # raw normalised slices as keys: the error this scale removes


def test_qna_window_stays_smaller_than_the_grid():
    for (c, h), g, k in itertools.product(SHAPE_CASES, GRIDS, SPACE.qna_window):
        layout = TokenLayout(grid=(g, g))  # QnA has no class token
        attn = build_attention(_arch("qna", c, h, qna_window=k, pos_encoding="none"), 0, layout)
        assert isinstance(attn, QnAAttention)
        assert attn.window < g and attn.window % 2 == 1 and attn.window <= k
        assert attn.window == k or g <= k  # clamped only where the gene would reach the grid's side
        assert attn.rel_bias.shape[-1] == attn.window
    # 5 and 7 on 4x4 build 3; on 7x7, 7 builds 5.
    assert build_attention(_arch("qna", 32, 2, qna_window=7, pos_encoding="none"), 0,
                           TokenLayout(grid=(7, 7))).window == 5


_MASK_FRACTIONS: dict[tuple[int, int, int], float] = {}


def _measured_hidden(grid: int, window: int, prefix: int) -> float:
    """Hidden fraction from the actual mask: zeros of the patch-query rows over all N keys."""
    key = (grid, window, prefix)
    if key not in _MASK_FRACTIONS:
        mask = local_window_mask((grid, grid), window, num_prefix_tokens=prefix)
        _MASK_FRACTIONS[key] = (1 - mask[prefix:]).mean().item()
    return _MASK_FRACTIONS[key]


def test_mait_windows_hide_their_ratio_or_are_refused():
    refused = set()
    for (c, h), g, r in itertools.product(SHAPE_CASES, GRIDS, RATIOS):
        layout = TokenLayout(grid=(g, g), num_prefix_tokens=1)  # MaiT models have a class token
        arch = _arch("mait", c, h, mask_ratios=(r,) * h)
        reason = mait_refusal(r, (g, g))
        if reason:
            with pytest.raises(GeneError, match=rf"^mask_ratios: {r:g} is out of reach on the {g}x{g} token grid"):
                build_attention(arch, 0, layout)
            refused.add((g, r))
            continue
        attn = build_attention(arch, 0, layout)
        assert isinstance(attn, MaiTAttention)
        for w in attn.windows((g, g), 1):
            assert w >= MAIT_MIN_WINDOW
            hidden = _measured_hidden(g, w, 1)
            assert abs(hidden - r) <= 0.1 + 1e-9, (g, r, w, hidden)
            assert hidden == pytest.approx(mait_hidden_fraction(w, (g, g), 1), abs=1e-6)
    # Out of reach: every ratio but 0.5 on the 4x4 grid, 0.95 on the 7x7 grid; nothing from 8x8 on.
    assert refused == {(4, 0.75), (4, 0.9), (4, 0.95), (7, 0.95)}


def test_mait_mapping_reaches_the_papers_3x3_on_14x14_and_never_1x1():
    assert MaiTAttention(32, 2, mask_ratios=(max(MASK_RATIO_CHOICES),) * 2).windows((14, 14)) == (3, 3)
    assert mait_hidden_fraction(3, (14, 14)) == pytest.approx(0.953, abs=1e-3)
    for g in (4, 7, 8, 14, 28):  # closed form against the mask, with and without class token (56: above)
        windows = range(3, 2 * g + 1, 2) if g <= 14 else (3, 7, 15, 55)
        for prefix, w in itertools.product((0, 1), windows):
            assert mait_hidden_fraction(w, (g, g), prefix) == pytest.approx(_measured_hidden(g, w, prefix), abs=1e-6)


def test_mait_refusal_in_a_model_names_the_gene_and_the_grid():
    arch = Architecture(attention="mait", num_heads=2, embed_dim=32, patch_size=4, mask_ratios=(0.9, 0.0))
    with pytest.raises(GeneError) as err:
        build_model(arch, img_size=16, in_chans=1)
    message = str(err.value)
    assert message.startswith("mask_ratios: 0.9 is out of reach on the 4x4 token grid") and len(message) <= 200
    assert "3x3" in message
    build_model(arch, img_size=32, in_chans=1)  # the same genes on an 8x8 grid build
    assert arch.canonical_key(16)  # the search's bookkeeping never raises for a refused ratio


@pytest.mark.parametrize("sizes", [(16,), (28,), (16, 112), (28, 112)])
def test_search_never_samples_a_refused_mait_ratio(sizes):
    """On the proxy's grids and, where a deployment target is set, on its grids too (a model is built at both)."""
    space = SearchSpace(attention=("mait",))
    for img in sizes:
        space = space.for_image(img)
    proxy = sizes[0]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=proxy))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        arch = space.suggest(trial)
        for img in sizes:
            grid = (img // arch.patch_size,) * 2
            assert all(mait_refusal(r, grid) is None for r in arch.mask_ratios), (img, arch.describe())
            assert arch.canonical_key(img)
        seen |= {k.rsplit("_", 1)[0] for k in trial.params if k.startswith("mask_ratio_")}
        assert space.contains(arch)
        assert space.suggest(optuna.trial.FixedTrial(space.to_params(arch))) == arch
        study.tell(trial, 0.0)
    # Only the grid that drops ratios (patch 4: 4x4 at 16 px, 7x7 at 28 px) takes a per-grid name, with the
    # ratios that remain there; the deployment's 28x28 and 56x56 grids drop none.
    small = "4x4" if proxy == 16 else "7x7"
    assert seen == {"mask_ratio", f"mask_ratio_{small}"}
    assert space.param_choices()[f"mask_ratio_{small}_0"] == ([0.0, 0.5] if proxy == 16 else [0.0, 0.5, 0.75, 0.9])
    assert space.param_choices()["mask_ratio_0"] == list(MASK_RATIO_CHOICES)


def test_a_refused_combination_lies_outside_the_image_space():
    arch = Architecture(attention="mait", num_heads=2, embed_dim=32, patch_size=4, mask_ratios=(0.9, 0.0))
    assert SearchSpace().contains(arch)
    assert SearchSpace().for_image(32).contains(arch)
    reason = SearchSpace().for_image(16).for_image(112).why_outside(arch)
    assert reason == "mask_ratios=0.9 cannot be built on the 4x4 token grid"


def test_mixer_token_mlp_is_no_bottleneck_at_the_proxy_and_linear_in_n():
    for (c, _h), layout in itertools.product(SHAPE_CASES, _layouts()):
        attn = build_attention(_arch("mixer", c, 2), 0, layout)
        assert isinstance(attn, TokenMixingMLP)
        assert attn.hidden == max(c // 2, 256)  # independent of N, as the paper's widths are
        if layout.num_tokens <= 257:  # every proxy grid (16 and 28 px): at least as wide as the tokens
            assert attn.hidden >= layout.num_tokens
        assert attn.macs(layout) == 2 * layout.num_tokens * attn.hidden * c  # linear in N
    assert TokenMixingMLP(768, 196).hidden == 384  # Mixer-B/16: the paper's C / 2


def test_fnet_branch_keeps_the_input_scale():
    for (c, _h), layout in itertools.product(SHAPE_CASES, _layouts()):
        attn = build_attention(_arch("fnet", c, 2), 0, layout)
        x = torch.nn.functional.layer_norm(torch.randn(2, layout.num_tokens, c), (c,))
        ratio = (attn(x, layout).pow(2).mean().sqrt() / x.pow(2).mean().sqrt()).item()
        assert 0.2 <= ratio <= 5, (c, layout.num_tokens, ratio)


def test_vitnas_space_states_every_token_count_rule():
    text = dict(rules())
    assert "min(64, floor(N/4))" in text["linformer at N tokens"]
    assert "min(16, floor(N/8))" in text["nystrom at N tokens"]
    assert "floor(N/4)" in text["performer at N tokens"] and "compact keys" in text["performer at N tokens"]
    assert "max(C/2, 256)" in text["mixer at N tokens"]
    assert "4x4" in text["qna_window"] and "refused" in text["mask_ratios"]
