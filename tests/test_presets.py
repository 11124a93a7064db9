"""Paper presets: valid, inside the default search space, buildable for digits, and round-trip through
Optuna parameters; each keeps the choices that make it its paper's design."""

from __future__ import annotations

import optuna
import pytest
import torch

from search_spaces import PRESETS, Architecture, GeneError, SearchSpace, build_model, get_preset
from search_spaces.genes import QKV_ATTENTIONS

EXPECTED = {"deit", "mait", "refiner", "qna", "armour", "vix_performer", "vix_linformer", "vix_nystrom",
            "vix_fnet", "vix_hybrid", "mixer"}


def test_every_paper_has_a_preset():
    assert EXPECTED <= set(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_is_valid_and_inside_the_default_space(name):
    arch = PRESETS[name]
    assert isinstance(arch, Architecture)
    arch.validate()
    assert Architecture.from_json(arch.to_json()) == arch
    space = SearchSpace()
    assert space.contains(arch), space.why_outside(arch)
    assert space.for_image(16).contains(arch)
    # Small enough for a few seconds of proxy training on a CPU.
    assert arch.embed_dim <= 64 and arch.depth <= 4


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_builds_for_digits_and_runs(name):
    torch.manual_seed(0)
    model = build_model(name, img_size=16, in_chans=1, num_classes=10)
    assert model.arch == PRESETS[name]
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(3, 1, 16, 16))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trips_through_optuna_params(name):
    space = SearchSpace()
    arch = PRESETS[name]
    params = space.to_params(arch)
    assert space.suggest(optuna.trial.FixedTrial(params)) == arch


def test_presets_keep_their_papers_choices():
    p = PRESETS
    assert (p["deit"].attention, p["deit"].pos_encoding, p["deit"].stem, p["deit"].compact) == \
        ("mhsa", "learned", "patch", False)
    assert p["armour"] == p["deit"].replace(compact=True)
    assert p["mait"].mask_layers == "paper" and all(r > 0 for r in p["mait"].mask_ratios)
    assert p["refiner"].refiner_expansion == 3 and p["refiner"].stem == "conv_bn"
    assert p["qna"].qna_window == 3 and not p["qna"].class_token
    for name in ("vix_performer", "vix_linformer", "vix_nystrom", "vix_hybrid"):
        assert p[name].stem == "conv" and p[name].pos_encoding == "rope1d", name
        assert p[name].attention in QKV_ATTENTIONS and p[name].head_dim == 32, name
    assert p["vix_fnet"].attention == "fnet" and p["vix_fnet"].stem == "conv"
    assert p["vix_fnet"].pos_encoding in ("learned", "none")
    assert p["mixer"].attention == "mixer" and p["mixer"].pos_encoding == "none"
    # The ViX presets differ only in the attention mechanism (and the encoding where RoPE cannot apply).
    base = p["vix_hybrid"]
    for name in ("vix_performer", "vix_linformer", "vix_nystrom"):
        assert p[name].replace(attention="mhsa") == base, name


def test_unknown_preset_is_refused():
    with pytest.raises(GeneError, match="^preset: unknown name 'vit_huge'; allowed: deit"):
        get_preset("vit_huge")
