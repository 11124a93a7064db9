"""Safe by default: untrusted genes and config files cannot make vitnas allocate without bound, and every
refusal is one short line naming the field."""

import tracemalloc

import pytest

from search_spaces import Architecture, GeneError, SearchSpace, SpaceError
from search_spaces.model import NasViT
from search_spaces.space import MAX_CONFIG_BYTES


def _one_short_line(message: str) -> None:
    assert message and len(message) <= 200, (len(message), message[:300])
    assert "\n" not in message and "\r" not in message


# ---------------------------------------------------------------------------- config files
ALIAS_BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
    "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
)


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_alias_bomb_is_refused_before_expansion(tmp_path):
    path = _write(tmp_path, "bomb.yaml", ALIAS_BOMB)
    # Under 50 MiB allocated: nothing like the expanded 9**9 strings.
    assert "alias" in _refused_before_allocation(lambda: SearchSpace.from_file(path), SpaceError, "config")


@pytest.mark.parametrize("text", [
    "embed_dim: &dims [32, 64]\ndepth: *dims\n",       # a harmless-looking alias is refused too
    "a: &a [*a]\n",                                     # recursive
    "embed_dim: &x [32]\n",                             # an anchor alone
    "base: &b {embed_dim: [32]}\n<<: *b\n",             # merge key
])
def test_yaml_anchors_and_aliases_are_refused(tmp_path, text):
    with pytest.raises(SpaceError, match="^config: .*alias") as err:
        SearchSpace.from_file(_write(tmp_path, "space.yaml", text))
    _one_short_line(str(err.value))


def test_yaml_duplicate_keys_are_refused(tmp_path):
    path = _write(tmp_path, "space.yml", "attention: [mhsa]\ndepth: [2]\nattention: [qna]\n")
    with pytest.raises(SpaceError, match="^config: .*duplicate key 'attention' \\(line 3\\)") as err:
        SearchSpace.from_file(path)
    _one_short_line(str(err.value))


def test_yaml_duplicate_keys_in_nested_mappings_are_refused(tmp_path):
    with pytest.raises(SpaceError, match="duplicate key"):
        SearchSpace.from_file(_write(tmp_path, "space.yaml", "depth: {a: 1, a: 2}\n"))


def test_toml_duplicate_keys_are_refused(tmp_path):
    with pytest.raises(SpaceError, match="^config: "):
        SearchSpace.from_file(_write(tmp_path, "space.toml", "depth = [2]\ndepth = [3]\n"))


def test_valid_yaml_still_loads(tmp_path):
    space = SearchSpace.from_file(_write(tmp_path, "space.yaml", "attention: [mhsa, qna]\nembed_dim: [32, 64]\n"))
    assert space.attention == ("mhsa", "qna") and space.embed_dim == (32, 64)


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_oversized_config_file_is_refused_by_size(tmp_path, suffix):
    path = tmp_path / f"huge{suffix}"
    # 50 MB: a YAML list of one valid value repeated (or a TOML array): refused before being read or parsed.
    line = "embed_dim: [" if suffix == ".yaml" else "embed_dim = ["
    with path.open("w", encoding="utf-8") as fh:
        fh.write(line)
        chunk = "32, " * 250_000
        for _ in range(50):
            fh.write(chunk)
        fh.write("32]\n")
    assert path.stat().st_size > 50 * 10**6
    # Under 4 MiB allocated: the file was never read into memory.
    message = _refused_before_allocation(lambda: SearchSpace.from_file(path), SpaceError, "config", 4 * 2**20)
    assert f"larger than {MAX_CONFIG_BYTES} bytes" in message


def test_config_just_under_the_limit_is_parsed(tmp_path):
    body = "embed_dim: [32]\n"
    path = _write(tmp_path, "space.yaml", body + "#" * (MAX_CONFIG_BYTES - len(body) - 1) + "\n")
    assert path.stat().st_size == MAX_CONFIG_BYTES
    assert SearchSpace.from_file(path).embed_dim == (32,)


def test_long_path_and_long_values_are_cut_in_messages(tmp_path):
    path = _write(tmp_path, "space.yaml", "attention: [" + "x" * 100_000 + "]\n")
    with pytest.raises(SpaceError) as err:
        SearchSpace.from_file(path)
    _one_short_line(str(err.value))
    assert str(err.value).startswith("attention: 'xxx")
    deep = tmp_path / ("d" * 150)
    deep.mkdir()
    with pytest.raises(SpaceError) as err:
        SearchSpace.from_file(deep / ("e" * 150 + ".yaml"))
    _one_short_line(str(err.value))


@pytest.mark.parametrize("data, field", [
    ({"attention": ["y" * 10_000]}, "attention"),
    ({"embed_dim": "z" * 10_000}, "embed_dim"),
    ({"depth": [10**5000]}, "depth"),                        # repr would fail: too many digits
    ({"embed_dim": [10**9]}, "embed_dim"),
    ({"depth": [10**7]}, "depth"),
    ({"num_heads": [128]}, "num_heads"),
    ({"patch_size": [4096]}, "patch_size"),
    ({"mlp_ratio": [float("1e300")]}, "mlp_ratio"),
    ({"embed_dim": [4096], "depth": [64], "num_heads": [4]}, "embed_dim"),  # each in range, the model is not
    ({"q" * 10_000: [1]}, "config"),
])
def test_space_errors_are_one_short_line(data, field):
    with pytest.raises(SpaceError) as err:
        SearchSpace.from_mapping(data)
    message = str(err.value)
    _one_short_line(message)
    assert message.startswith(field + ":"), message


# ---------------------------------------------------------------------------- genes
@pytest.mark.parametrize("genes, field", [
    ({"embed_dim": 10**9}, "embed_dim"),
    ({"embed_dim": 8192, "num_heads": 4}, "embed_dim"),
    ({"depth": 10**7}, "depth"),
    ({"depth": 65}, "depth"),
    ({"num_heads": 128, "embed_dim": 256}, "num_heads"),
    ({"patch_size": 10**6}, "patch_size"),
    ({"embed_dim": 10**5000}, "embed_dim"),
    ({"embed_dim": 4096, "depth": 64, "num_heads": 64}, "embed_dim"),   # 8.8e9 parameters
    ({"attention": "a" * 10**6}, "attention"),
    ({"pos_encoding": "p" * 10**6}, "pos_encoding"),
    ({"stem": ["s"] * 10**5}, "stem"),
    ({"attention": "mait", "mask_ratios": ["r" * 10**5] * 4}, "mask_ratios"),
    ({"attention": "qna", "qna_window": "w" * 10**5}, "qna_window"),
])
def test_huge_genes_are_refused_before_allocation(genes, field):
    _refused_before_allocation(lambda: Architecture.from_dict(genes), GeneError, field)


def _refused_before_allocation(build, error, field, limit=50 * 2**20):
    """``build()`` raises ``error`` with one short line starting with ``field:``, having allocated < ``limit``
    bytes; returns the message."""
    tracemalloc.start()
    try:
        with pytest.raises(error) as err:
            build()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(err.value)
    _one_short_line(message)
    assert message.startswith(field + ":"), message
    assert peak < limit
    return message


def test_largest_values_in_use_stay_valid():
    deit = Architecture(attention="mhsa", embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0, patch_size=16)
    edge = Architecture(embed_dim=4096, depth=8, num_heads=64, mlp_ratio=4.0, patch_size=64)   # 1.7e9: at the edge
    giant = Architecture(embed_dim=1664, depth=48, num_heads=16, mlp_ratio=4.0, patch_size=14)  # ViT-G/14 shape
    assert (deit.head_dim, edge.head_dim, giant.head_dim) == (64, 64, 104)
    for arch in (deit, edge, giant):  # accepted and unchanged through the record's JSON round trip
        assert Architecture.from_json(arch.to_json()) == arch
    space = SearchSpace(embed_dim=(256, 1024), depth=(2, 64), num_heads=(2, 64), patch_size=(1, 16))
    assert space.to_dict()["depth"] == [2, 64] and space.size() > 0


@pytest.mark.parametrize("kwargs, field", [
    ({"img_size": 10**6}, "img_size"),
    ({"img_size": 10**5000}, "img_size"),
    ({"img_size": (16, 10**9)}, "img_size"),
    ({"img_size": (16, 16, 16)}, "img_size"),
    ({"img_size": "16" * 1000}, "img_size"),
    ({"img_size": 0}, "img_size"),
    ({"img_size": 4096}, "img_size"),                        # in range per side, but 4M tokens at patch 2
    ({"num_classes": 10**9}, "num_classes"),
    ({"num_classes": -1}, "num_classes"),
    ({"num_classes": 10**5000}, "num_classes"),
    ({"in_chans": 10**9}, "in_chans"),
    ({"in_chans": 0}, "in_chans"),
])
def test_nasvit_arguments_are_refused_before_allocation(kwargs, field):
    kwargs = {"img_size": 16, "in_chans": 3, "num_classes": 10, **kwargs}
    _refused_before_allocation(lambda: NasViT(Architecture(), **kwargs), ValueError, field)


def test_nasvit_token_tied_models_are_refused_by_parameter_estimate():
    # Mixer's token-mixing MLP holds 2 N D_S weights per block (D_S = 256): 256x256 tokens over 64 blocks
    # would be ~2.1e9 parameters.
    arch = Architecture(attention="mixer", embed_dim=64, depth=64, num_heads=2, patch_size=2, pos_encoding="none")
    with pytest.raises(GeneError) as err:
        NasViT(arch, img_size=512, in_chans=3, num_classes=10)
    _one_short_line(str(err.value))
    assert str(err.value).startswith("img_size:") and "parameters" in str(err.value)


def test_nasvit_ordinary_arguments_still_build():
    model = NasViT(Architecture(), img_size=(16, 32), in_chans=1, num_classes=0)
    assert model.img_size == (16, 32)
    model = NasViT(Architecture(patch_size=16), img_size=224, in_chans=3, num_classes=1000)
    assert model.num_classes == 1000


@pytest.mark.parametrize("build, field", [
    (lambda: Architecture.from_json('{"mlp_ratio": 1' + "0" * 400 + "}"), "mlp_ratio"),
    (lambda: Architecture(attention="mait", num_heads=2, embed_dim=32, mask_ratios=(0, 10**400)), "mask_ratios"),
    (lambda: SearchSpace(mlp_ratio=(10**400,)), "mlp_ratio"),
])
def test_integers_too_large_for_a_float_are_one_line_errors(build, field):
    with pytest.raises(ValueError) as err:  # GeneError or SpaceError, never OverflowError
        build()
    _one_short_line(str(err.value))
    assert str(err.value).startswith(field + ":"), err.value
