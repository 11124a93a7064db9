"""The mechanism registry: every file of the zoo is found, in the stored order; the gene rules, the search
space, the builder and ``vitnas space`` derive from it, so a mechanism registered at run time shows up
everywhere without other code changes."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import pkgutil
import subprocess
import sys

import optuna
import pytest
import torch
from typer.testing import CliRunner

import search_spaces.attention as zoo
import search_spaces.mechanisms as mechanisms_package
from nas.cli import app
from search_spaces import Architecture, GeneError, NasViT, SearchSpace, registry
from search_spaces.attention import build_attention
from search_spaces.attention.common import AttentionModule, TokenLayout
from search_spaces.attention.mhsa import MHSA
from search_spaces.genes import (
    ATTENTIONS,
    MASK_RATIO_CHOICES,
    QKV_ATTENTIONS,
    QNA_WINDOWS,
    REFINER_EXPANSIONS,
    ROPE_ATTENTIONS,
    applicable_genes,
    rules,
)

#: The order of the ``attention`` domain that stored Optuna studies hold: it must never change.
STORED_ORDER = ("mhsa", "mait", "refiner", "qna", "performer", "linformer", "nystrom", "fnet", "mixer")
#: Genes a tiny two-head model needs per mechanism (0.5: the MaiT ratio a 4x4 grid can hold).
_EXTRA = {"mait": {"mask_ratios": (0.5, 0.0)}, "qna": {"qna_window": 3}, "refiner": {"refiner_expansion": 2}}


def _arch(spec: registry.MechanismSpec, **genes) -> Architecture:
    return Architecture(attention=spec.name, embed_dim=16, depth=3, num_heads=2, patch_size=4,
                        **{**_EXTRA.get(spec.name, {}), **genes})


def test_every_mechanism_is_registered_in_the_stored_order():
    assert registry.names() == ATTENTIONS == STORED_ORDER
    assert [s.order for s in registry.mechanisms()] == sorted(s.order for s in registry.mechanisms())
    files = sorted(m.name for m in pkgutil.iter_modules(zoo.__path__) if m.name != "common")
    specs = sorted(m.name for m in pkgutil.iter_modules(mechanisms_package.__path__))
    assert files == specs == sorted(STORED_ORDER)
    for name in files:  # each spec file declares its own mechanism and names the layer of the same name
        spec = importlib.import_module(f"search_spaces.mechanisms.{name}").MECHANISM
        layers = importlib.import_module(f"search_spaces.attention.{name}")
        assert registry.get_mechanism(spec.name) is spec and spec.name == name
        assert isinstance(spec.module, str) and isinstance(spec.build, str)  # imported when first built
        cls = spec.module_class()
        assert cls.__module__ == layers.__name__ and issubclass(cls, AttentionModule)
        assert spec.summary and "arXiv" in spec.summary


def test_registry_space_and_cli_load_no_torch():
    """The gene registry, the search space and the commands that build no model run without importing
    torch, timm, Ray or scikit-learn (a fresh interpreter, as the ``vitnas`` command starts one)."""
    code = (
        "import sys\n"
        "from nas.cli import main\n"
        "for argv in (['--help'], ['space'], ['space', '--json']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, (argv, exc.code)\n"
        "from search_spaces import SearchSpace, registry\n"
        "from search_spaces.genes import Architecture\n"
        "import optuna\n"
        "a = SearchSpace().suggest(optuna.create_study().ask())\n"
        "assert Architecture.from_dict(a.to_dict()) == a and len(registry.mechanisms()) == 9\n"
        "print(sorted(m for m in ('torch', 'timm', 'ray', 'sklearn') if m in sys.modules))\n"
    )
    env = {**os.environ, "VITNAS_DEFER_MODEL": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_read_only_commands_on_a_study_load_no_torch_nor_sklearn(tmp_path):
    """``status``, ``pareto`` and ``dashboard`` of a stored study, each in a fresh interpreter as the
    ``vitnas`` command starts one: no torch, timm, Ray, nor scikit-learn (the dashboard's importances are
    PED-ANOVA's), and the dashboard is written."""
    from dashboards.demo import make_demo_study

    url = f"sqlite:///{tmp_path / 'demo.db'}"
    make_demo_study(url, "demo", n_trials=24, seed=1, running=0)
    out_html = tmp_path / "report.html"
    commands = [["status", "--study", "demo", "--storage", url], ["pareto", "--study", "demo", "--storage", url],
                ["dashboard", "--study", "demo", "--storage", url, "--out", str(out_html)]]
    code = (
        "import sys\n"
        "from nas.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print(sorted(m for m in ('torch', 'timm', 'ray', 'sklearn') if m in sys.modules), file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "VITNAS_DEFER_MODEL"}  # main() sets it itself
    for argv in commands:
        out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, (argv, out.stderr[-2000:])
        assert out.stderr.strip().splitlines()[-1] == "[]", (argv[0], out.stderr[-500:])
    assert out_html.stat().st_size > 100_000 and "Importance" in out_html.read_text()


def test_import_registers_nas_vit_with_timm_unless_deferred():
    import timm

    assert timm.is_model("nas_vit")  # this process imported search_spaces without deferring: registered
    lazy = ("import sys, search_spaces\n"
            "before = 'torch' in sys.modules\n"
            "import timm\n"
            "registered = timm.is_model('nas_vit')\n"
            "search_spaces.build_model  # first use loads the builder, which registers nas_vit\n"
            "print(before, registered, timm.is_model('nas_vit'))\n")
    deferred = subprocess.run([sys.executable, "-c", lazy], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "VITNAS_DEFER_MODEL": "1"})
    assert deferred.returncode == 0, deferred.stderr[-2000:]
    assert deferred.stdout.split() == ["False", "False", "True"]


def test_unknown_mechanism_names_the_allowed_ones():
    with pytest.raises(GeneError, match="^attention: unknown value 'bogus'; allowed: mhsa, mait, refiner, qna"):
        registry.get_mechanism("bogus")


def test_derived_sets_equal_the_spec_flags():
    specs = registry.mechanisms()
    assert QKV_ATTENTIONS == ROPE_ATTENTIONS == {s.name for s in specs if s.has_qkv}
    assert {s.name for s in specs if not s.class_token} == {"qna"}
    assert {s.name for s in specs if s.fixed_tokens} == {"linformer", "mixer"}
    assert {s.name for s in specs if s.explicit_map} == {"mait", "refiner"}
    assert {s.name for s in specs if not s.uses_heads} == {"fnet", "mixer"}
    assert MASK_RATIO_CHOICES == registry.gene("mask_ratios").choices
    assert QNA_WINDOWS == registry.gene("qna_window").choices
    assert REFINER_EXPANSIONS == registry.gene("refiner_expansion").choices
    for spec in specs:
        arch = _arch(spec)
        assert applicable_genes(spec.name) == {g.name for g in spec.all_genes}
        assert ("compact" in applicable_genes(spec.name)) == spec.has_qkv
        assert arch.class_token == spec.class_token
    lines = dict(rules())
    assert lines["token count"].startswith("linformer and mixer are tied")
    assert lines["class token"].startswith("qna has none")
    assert lines["score map"].startswith("mait and refiner need")


def test_every_gene_is_a_field_of_the_architecture_and_the_space():
    arch_fields = {f.name: f for f in dataclasses.fields(Architecture)}
    space = SearchSpace()
    for gene in registry.genes():
        assert arch_fields[gene.name].default == gene.neutral or gene.per_head  # per head: field(default=())
        assert getattr(Architecture(), gene.name) == gene.neutral
        assert getattr(space, gene.name) == gene.choices


@pytest.mark.parametrize("name", STORED_ORDER)
def test_modules_share_one_protocol(name):
    spec = registry.get_mechanism(name)
    arch = _arch(spec)
    layout = TokenLayout(grid=(4, 4), num_prefix_tokens=1 if spec.class_token else 0)
    attn = build_attention(arch, 0, layout)
    assert isinstance(attn, spec.module_class())
    x = torch.randn(2, layout.num_tokens, 16)
    assert attn(x, layout).shape == x.shape
    macs = attn.macs(layout)
    assert isinstance(macs, int) and macs > 0 and spec.macs(arch, layout) == macs
    if spec.fixed_tokens:  # tied to the built token count: another count is refused
        other = TokenLayout(grid=(2, 2), num_prefix_tokens=layout.num_prefix_tokens)
        with pytest.raises(ValueError, match="built for 17 tokens"):
            attn.macs(other)
        with pytest.raises(ValueError, match="built for 17 tokens"):
            attn(torch.randn(1, other.num_tokens, 16), other)


@pytest.mark.parametrize("compact", [False, True])
def test_mhsa_macs_are_the_documented_count(compact):
    n, c = 17, 32
    layout = TokenLayout(grid=(4, 4), num_prefix_tokens=1)
    assert MHSA(c, 4, compact=compact).macs(layout) == (2 if compact else 4) * n * c * c + 2 * n * n * c


def test_model_resets_every_attention_module_after_the_generic_init(monkeypatch):
    calls = []
    monkeypatch.setattr(AttentionModule, "reset_parameters_extra", lambda self: calls.append(type(self)))
    NasViT(_arch(registry.get_mechanism("mhsa")), img_size=16, in_chans=1)
    assert calls == [MHSA] * 3


def test_registering_a_taken_name_or_order_is_refused():
    mhsa = registry.get_mechanism("mhsa")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(mhsa)
    with pytest.raises(ValueError, match="order 0"):
        registry.register(dataclasses.replace(mhsa, name="other"))
    clash = dataclasses.replace(registry.gene("qna_window"), choices=(9,))
    with pytest.raises(ValueError, match="^qna_window:"):
        registry.register(dataclasses.replace(mhsa, name="other", order=99, genes=(clash,)))
    assert registry.names() == STORED_ORDER


# ---------------------------------------------------------------------- an eleventh mechanism
class _MeanMixing(AttentionModule):
    """Test mechanism: every token gets the projected mean of all tokens. (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, window: int):
        super().__init__()
        self.proj = torch.nn.Linear(dim, dim)
        self.window = window

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        return self.proj(x.mean(dim=1, keepdim=True)).expand_as(x)

    def macs(self, layout: TokenLayout) -> int:
        return self.proj.in_features * self.proj.out_features


FAKE = registry.MechanismSpec(
    name="fake", order=100, module=_MeanMixing, summary="test only (arXiv 0000.00000)",
    build=lambda arch, layer_index, layout: _MeanMixing(arch.embed_dim, arch.qna_window),
    has_qkv=False, class_token=False, uses_heads=False,
    genes=(registry.gene("qna_window"),),  # a gene shared with qna: no new Architecture field needed
)


@pytest.fixture
def fake():
    registry.register(FAKE)
    try:
        yield FAKE
    finally:
        registry.unregister("fake")


def test_a_registered_mechanism_shows_up_everywhere(fake):
    assert registry.names() == STORED_ORDER + ("fake",)
    assert applicable_genes("fake") == {"qna_window"}
    arch = Architecture(attention="fake", embed_dim=16, num_heads=2, patch_size=4, qna_window=5)
    assert not arch.class_token and arch.describe().endswith(" k5")
    assert arch.canonical_key(16) == arch.replace(num_heads=4).canonical_key(16)  # uses_heads=False
    with pytest.raises(GeneError, match="^qna_window: fake needs a window in"):
        Architecture(attention="fake")
    with pytest.raises(GeneError, match="^pos_encoding: rope1d needs queries and keys"):
        arch.replace(pos_encoding="rope1d")
    with pytest.raises(GeneError, match="^compact: applies only to"):
        arch.replace(compact=True)

    # The search space: default domain, sampling, enqueueing and size.
    space = SearchSpace(attention=("mhsa", "fake"), embed_dim=(16,), num_heads=(2,))
    assert "fake" in SearchSpace().attention
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        a = space.suggest(trial)
        seen.add(a.attention)
        if a.attention == "fake":
            assert set(trial.params) == {"attention", "embed_dim", "depth", "num_heads", "mlp_ratio", "patch_size",
                                         "stem", "pos_encoding_no_rope", "qna_window"}
            assert space.suggest(optuna.trial.FixedTrial(space.to_params(a))) == a
        study.tell(trial, 0.0)
    assert seen == {"mhsa", "fake"}
    only = SearchSpace(attention=("fake",), embed_dim=(32,), pos_encoding=("none",), qna_window=(3, 5))
    assert only.size() == 4 * 2 * 2 * 3 * 2 * 2  # depth x mlp_ratio x patch_size x stem x num_heads x windows

    # The builder, through timm's model factory path.
    model = NasViT(arch, img_size=16, in_chans=1, num_classes=3)
    assert isinstance(model.blocks[0].attn, _MeanMixing) and model.blocks[0].attn.window == 5
    assert model.global_pool == "avg" and model(torch.randn(2, 1, 16, 16)).shape == (2, 3)

    # vitnas space: the domain, where each gene applies, the rules.
    runner = CliRunner()
    result = runner.invoke(app, ["space", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["domains"]["attention"][-1] == "fake"
    assert shown["rules"]["qna_window"].startswith("fake, qna only (required)")
    assert shown["rules"]["class token"].startswith("qna and fake have none")
    table = runner.invoke(app, ["space"], env={"COLUMNS": "200"})  # one line per row
    assert table.exit_code == 0 and "qna, fake" in table.output


def test_an_unregistered_mechanism_is_gone():
    assert "fake" not in registry.names()
    with pytest.raises(GeneError, match="^attention: unknown value 'fake'"):
        Architecture(attention="fake")
    assert "qna_window" in dict(rules()) and dict(rules())["qna_window"].startswith("qna only")
