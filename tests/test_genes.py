import json

import optuna
import pytest

from search_spaces import ATTENTIONS, Architecture, GeneError, SearchSpace, SpaceError
from search_spaces.attention.mait import mait_hidden_fraction
from search_spaces.genes import QKV_ATTENTIONS, ROPE_ATTENTIONS, applicable_genes, mait_window_for_ratio


def test_json_round_trip_is_exact():
    arch = Architecture(attention="mait", embed_dim=48, depth=3, num_heads=4, mask_ratios=(0, 0.5, 0.75, 0.9),
                        mask_layers="paper", pos_encoding="rope2d", stem="conv_bn", compact=True)
    text = arch.to_json()
    back = Architecture.from_json(text)
    assert back == arch and hash(back) == hash(arch)
    assert back.to_json() == text
    assert json.loads(text)["mask_ratios"] == [0.0, 0.5, 0.75, 0.9]


@pytest.mark.parametrize("genes, field", [
    ({"attention": "bogus"}, "attention"),
    ({"embed_dim": 50, "num_heads": 4}, "num_heads"),
    ({"embed_dim": 0}, "embed_dim"),
    ({"mlp_ratio": -1}, "mlp_ratio"),
    ({"pos_encoding": "alibi"}, "pos_encoding"),
    ({"stem": "resnet"}, "stem"),
    ({"attention": "fnet", "compact": True}, "compact"),
    ({"attention": "fnet", "pos_encoding": "rope1d"}, "pos_encoding"),
    ({"attention": "mixer", "pos_encoding": "rope2d"}, "pos_encoding"),
    ({"attention": "qna"}, "qna_window"),
    ({"attention": "qna", "qna_window": 4}, "qna_window"),
    ({"attention": "mhsa", "qna_window": 3}, "qna_window"),
    ({"attention": "refiner", "refiner_expansion": 5}, "refiner_expansion"),
    ({"attention": "mait", "num_heads": 4, "mask_ratios": [0.5]}, "mask_ratios"),
    ({"attention": "mait", "num_heads": 2, "mask_ratios": [0.5, 0.6]}, "mask_ratios"),
    ({"attention": "mhsa", "mask_ratios": [0.5, 0, 0, 0]}, "mask_ratios"),
    ({"embed_dim": 36, "num_heads": 6, "pos_encoding": "rope2d"}, "pos_encoding"),
    ({"stem": "conv_bn", "patch_size": 3}, "stem"),
    ({"width": 3}, "arch"),
])
def test_invalid_genes_name_the_field(genes, field):
    with pytest.raises(GeneError) as err:
        Architecture.from_dict(genes)
    message = str(err.value)
    assert message.startswith(field + ":"), message
    assert "\n" not in message


def test_img_size_must_be_divisible_by_patch_size():
    with pytest.raises(GeneError, match="^patch_size: img_size 10x10"):
        Architecture(patch_size=4).check_image(10)
    assert Architecture(patch_size=4).check_image(16) == (4, 4)


def test_applicable_genes_follow_the_rules():
    for a in ATTENTIONS:
        genes = applicable_genes(a)
        assert ("compact" in genes) == (a in QKV_ATTENTIONS)
        assert ("qna_window" in genes) == (a == "qna")
        assert ("refiner_expansion" in genes) == (a == "refiner")
        assert ("mask_ratios" in genes) == (a == "mait")


def test_mait_window_mapping_hides_close_to_ratio():
    assert mait_window_for_ratio(0.0, (14, 14)) is None
    assert mait_window_for_ratio(0.95, (14, 14)) == 3  # 3x3 on 14x14 hides ~95%: the paper's setting
    k = mait_window_for_ratio(0.5, (8, 8))
    assert k == 7 and abs(mait_hidden_fraction(k, (8, 8)) - 0.5) <= 0.1
    with pytest.raises(GeneError, match=r"^mask_ratios: 0.9 is out of reach on the 4x4 token grid"):
        mait_window_for_ratio(0.9, (4, 4))


def test_sampling_obeys_rules_and_covers_every_attention():
    space = SearchSpace()
    study = optuna.create_study(directions=["maximize"], sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(300):
        trial = study.ask()
        arch = space.suggest(trial)  # constructing validates every rule
        seen.add(arch.attention)
        assert space.contains(arch)
        if arch.pos_encoding in ("rope1d", "rope2d"):
            assert arch.attention in ROPE_ATTENTIONS
        if arch.attention == "mait":
            assert len(arch.mask_ratios) == arch.num_heads
        else:
            assert arch.mask_ratios == ()
        assert {k for k in trial.params if k.startswith("mask_ratio_")} == (
            {f"mask_ratio_{i}" for i in range(arch.num_heads)} if arch.attention == "mait" else set())
        study.tell(trial, 0.0)
    assert seen == set(ATTENTIONS)


def test_to_params_round_trips_through_suggest():
    space = SearchSpace()
    arch = Architecture(attention="mait", num_heads=2, embed_dim=32, mask_ratios=(0.9, 0.0), pos_encoding="rope1d")
    fixed = optuna.trial.FixedTrial(space.to_params(arch))
    assert space.suggest(fixed) == arch


def test_space_narrowed_from_yaml_and_toml(tmp_path):
    y = tmp_path / "space.yaml"
    y.write_text("attention: [mhsa, qna]\nembed_dim: [32]\nqna_window: [3]\n")
    space = SearchSpace.from_file(y)
    assert space.attention == ("mhsa", "qna") and space.embed_dim == (32,) and space.qna_window == (3,)
    t = tmp_path / "space.toml"
    t.write_text('attention = ["fnet"]\npos_encoding = ["none", "learned"]\n')
    assert SearchSpace.from_file(t).attention == ("fnet",)


@pytest.mark.parametrize("text, field", [
    ("attention: [transformer]\n", "attention"),
    ("embed_dim: [30]\nnum_heads: [4]\n", "num_heads"),
    ("depth: []\n", "depth"),
    ("widths: [3]\n", "config"),
    ("depth: 3\n", "depth"),
    ("- a\n- b\n", "config"),
    ("attention: [mhsa\n", "config"),
    ("qna_window: [9]\n", "qna_window"),
    ("compact: [yes, 1]\n", "compact"),
])
def test_bad_space_files_are_refused(tmp_path, text, field):
    f = tmp_path / "space.yaml"
    f.write_text(text)
    with pytest.raises(SpaceError) as err:
        SearchSpace.from_file(f)
    assert str(err.value).startswith(field + ":"), str(err.value)


def test_space_for_image_drops_patch_sizes_that_do_not_divide():
    assert SearchSpace(patch_size=(2, 4, 7), stem=("patch",)).for_image(28).patch_size == (2, 4, 7)
    with pytest.raises(SpaceError, match="^stem: conv_bn"):
        SearchSpace(patch_size=(2, 7))
    assert SearchSpace(patch_size=(2, 4, 8)).for_image(28).patch_size == (2, 4)
    with pytest.raises(SpaceError, match="^patch_size:"):
        SearchSpace(patch_size=(3,), stem=("patch",)).for_image(16)


def test_canonical_key_merges_genes_that_build_the_same_model():
    a = Architecture(attention="mait", num_heads=2, embed_dim=32, mask_ratios=(0.9, 0.0))
    b = a.replace(mask_ratios=(0.95, 0.0))
    assert a.key() != b.key()
    assert a.canonical_key(16) == b.canonical_key(16)  # both a 3x3 window on the 8x8 grid
    assert a.canonical_key(16) != a.replace(mask_ratios=(0.75, 0.0)).canonical_key(16)  # 5x5 there
    assert a.canonical_key(56) != b.canonical_key(56)  # 9x9 and 7x7 on 28x28
    # A ratio out of reach on the grid keeps a key of its own (the model is refused, the key is not).
    c = a.replace(patch_size=4)
    assert "refused 0.9" in c.canonical_key(16) and c.canonical_key(16) != b.replace(patch_size=4).canonical_key(16)
    # QnA windows clamped to the same side on the grid are one model: 5 and 7 build 3 on a 4x4 grid.
    q = Architecture(attention="qna", num_heads=2, embed_dim=32, patch_size=4, pos_encoding="none", qna_window=5)
    assert q.canonical_key(16) == q.replace(qna_window=7).canonical_key(16) == q.replace(qna_window=3).canonical_key(16)
    assert q.canonical_key(32) != q.replace(qna_window=7).canonical_key(32)  # 8x8: 5 and 7 stay apart
    f2, f4 = Architecture(attention="fnet", num_heads=2), Architecture(attention="fnet", num_heads=4)
    assert f2.canonical_key(16) == f4.canonical_key(16)
    assert Architecture(num_heads=2).canonical_key(16) != Architecture(num_heads=4).canonical_key(16)
