"""The timm model contract, checked for every attention mechanism: the checks of timm's own
tests/test_models.py for ViT-like models (forward, backward, FX, default config, forward_intermediates,
features_only, gradient checkpointing), plus fine-tuning hooks (no_weight_decay, group_matcher with
timm's layer-decay optimiser) and loading a checkpoint at another image size, channel count and class count.
TorchScript is not supported (torch has deprecated it); nothing here scripts the model."""

import pytest
import timm
import torch
from timm.models import FeatureGraphNet, save_for_hf
from timm.optim import create_optimizer_v2

import search_spaces  # noqa: F401  (registers nas_vit)
from search_spaces import Architecture, registry

HEADS = 2


def _arch(name: str, **changes) -> Architecture:
    """A small valid architecture of mechanism ``name``: its required genes at their first value, per-head
    genes at their last (so MaiT heads are really masked)."""
    spec = registry.get_mechanism(name)
    genes = {g.name: tuple(g.choices[-1] for _ in range(HEADS)) if g.per_head else g.choices[0]
             for g in spec.genes if g.required or g.per_head}
    base = dict(attention=name, embed_dim=32, depth=3, num_heads=HEADS, mlp_ratio=2.0, patch_size=2)
    return Architecture(**{**base, **genes, **changes})


def _model(name: str, **kwargs) -> torch.nn.Module:
    kwargs = {"img_size": 16, "in_chans": 1, "num_classes": 10, **kwargs}
    return timm.create_model("nas_vit", arch=_arch(name).to_dict(), **kwargs)


MECHANISMS = registry.names()


@pytest.mark.parametrize("name", MECHANISMS)
def test_forward_backward_and_default_config(name):
    torch.manual_seed(0)
    model = _model(name, num_classes=42)
    x = torch.randn(2, 1, 16, 16)
    out = model(x)
    assert out.shape == (2, 42) and torch.isfinite(out).all()
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())

    model.eval()
    cfg = model.pretrained_cfg
    state = model.state_dict()
    assert model.head_hidden_size == model.num_features == 32
    assert timm.models.get_model_traits(model)["first_conv"] + ".weight" in state
    assert cfg["classifier"] + ".weight" in state
    feats = model.forward_features(x)
    assert feats.shape[-1] == model.num_features
    pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape == (2, model.head_hidden_size)
    model.reset_classifier(0)
    assert model.num_classes == 0 and model(x).shape == pre.shape
    headless = timm.create_model("nas_vit", arch=_arch(name).to_dict(), img_size=16, in_chans=1, num_classes=0)
    assert headless(x).shape == (2, headless.num_features)


@pytest.mark.parametrize("name", MECHANISMS)
def test_forward_intermediates_and_features_only(name):
    torch.manual_seed(0)
    model = _model(name).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert torch.allclose(final, model.forward_features(x))
        grid = model.layout.grid
        assert [t.shape for t in inter] == [(2, 32, *grid)] * 3
        assert [i["num_chs"] for i in model.feature_info] == [32] * 3
        assert all(i["reduction"] == 2 for i in model.feature_info)
        last2 = model.forward_intermediates(x, indices=2, output_fmt="NLC", intermediates_only=True)
        assert torch.equal(last2[-1], inter[-1].flatten(2).transpose(1, 2))
        picked = model.forward_intermediates(x, indices=[0, -1], norm=True, intermediates_only=True)
        assert len(picked) == 2 and torch.allclose(picked[1], model.norm(inter[-1].flatten(2).transpose(1, 2))
                                                   .transpose(1, 2).reshape_as(inter[-1]))
        if model.num_prefix_tokens:
            pairs = model.forward_intermediates(x, return_prefix_tokens=True, intermediates_only=True)
            assert pairs[0][1].shape == (2, 1, 32)
        early, _ = model.forward_intermediates(x, indices=[0], stop_early=True)
        assert early.shape == final.shape and not torch.allclose(early, final)

    backbone = timm.create_model("nas_vit", arch=_arch(name).to_dict(), img_size=16, in_chans=1, features_only=True)
    backbone.eval()
    with torch.no_grad():
        outs = backbone(x)
    assert backbone.feature_info.channels() == [32, 32, 32]
    assert backbone.feature_info.reduction() == [2, 2, 2]
    assert [o.shape for o in outs] == [(2, 32, 8, 8)] * 3


@pytest.mark.parametrize("name", MECHANISMS)
def test_fx_graph_and_gradient_checkpointing_match_eager(name):
    torch.manual_seed(0)
    model = _model(name).eval()
    x = torch.randn(2, 1, 16, 16)
    graph = FeatureGraphNet(model, out_indices=(0, 1, 2))  # torch.fx through timm's tracer settings
    outs = graph(x)
    with torch.no_grad():
        ref = model.forward_intermediates(x, output_fmt="NLC", return_prefix_tokens=True, intermediates_only=True)
    for got, want in zip(outs, ref):
        want = torch.cat(want[::-1], dim=1) if isinstance(want, tuple) else want
        torch.testing.assert_close(got, want)
    sum(o.sum() for o in outs).backward()

    model.train()
    torch.manual_seed(1)
    plain = model(x)
    model.set_grad_checkpointing(True)
    torch.manual_seed(1)
    checked = model(x)
    torch.testing.assert_close(plain, checked, rtol=1e-4, atol=1e-5)
    checked.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_layer_decay_and_no_weight_decay_reach_timms_optimiser():
    model = _model("mhsa")
    assert model.no_weight_decay() == {"pos_embed", "cls_token"}
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    scales = sorted({g["lr_scale"] for g in opt.param_groups})
    assert len(scales) == model.arch.depth + 2  # stem/embeddings, one per block, final norm and head
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(model.pos_embed) not in decayed and id(model.cls_token) not in decayed
    assert id(model.blocks[0].attn.qkv.qkv.weight) in decayed
    # Deeper blocks learn faster: the first block's weights get a smaller learning-rate scale than the last's.
    scale_of = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    assert scale_of[id(model.blocks[0].mlp.fc1.weight)] < scale_of[id(model.blocks[-1].mlp.fc1.weight)]
    assert scale_of[id(model.pos_embed)] == min(scales)


def _export(model, path, img_size=16, in_chans=1):
    save_for_hf(model, str(path), model_args={"arch": model.arch.to_dict(), "img_size": img_size,
                                              "in_chans": in_chans, "num_classes": model.num_classes})
    return f"local-dir:{path}"


@pytest.mark.parametrize("name", MECHANISMS)
def test_a_checkpoint_loads_at_another_shape_or_says_why_not(name, tmp_path):
    torch.manual_seed(0)
    model = _model(name).eval()
    uri = _export(model, tmp_path)
    x = torch.rand(2, 1, 32, 32)
    if registry.get_mechanism(name).fixed_tokens:
        with pytest.raises(ValueError, match=f"img_size: {name} is tied to the token count"):
            timm.create_model(uri, img_size=32)
        return
    bigger = timm.create_model(uri, img_size=32, in_chans=3, num_classes=5).eval()
    assert bigger.layout.grid == (16, 16)
    with torch.no_grad():
        out = bigger(x.expand(-1, 3, -1, -1))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    # Every trained weight but the head and the resampled or adapted ones arrives unchanged.
    own, new = model.state_dict(), bigger.state_dict()
    first = timm.models.get_model_traits(model)["first_conv"] + ".weight"
    for key, value in own.items():
        if key.startswith("head.") or key in ("pos_embed", first):
            continue
        assert torch.equal(value, new[key]), key
    # The first convolution is adapted from 1 to 3 channels so that a grey image replicated on three
    # channels gives the features the trained model gives the grey image.
    torch.testing.assert_close(new[first].sum(dim=1, keepdim=True), own[first])
    if model.pos_embed is not None:
        assert new["pos_embed"].shape == (1, model.num_prefix_tokens + 256, 32)
        if model.num_prefix_tokens:
            assert torch.equal(new["pos_embed"][:, 0], own["pos_embed"][:, 0])


@pytest.mark.parametrize("indices", [[], ["a"], [0, 3], 0, 4])
def test_bad_intermediate_indices_are_one_line_errors(indices):
    model = _model("mhsa").eval()
    with pytest.raises(ValueError, match="^indices: "):
        model.forward_intermediates(torch.randn(1, 1, 16, 16), indices=indices)
