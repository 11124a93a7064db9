"""Objectives a user can trust (issue 11): the deployment shape, budgets as Optuna constraints and the
normalised hypervolume, end to end through a real search, plus the exact parameter bounds of a space."""

import itertools
import json
import os
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from nas import objectives
from nas.cli import app
from nas.study import hypervolume, pareto_front, study_status
from search_spaces import Architecture, SearchSpace, build_model
from search_spaces.extremes import params_range
from trainers import count_params

runner = CliRunner()
BUDGET = 40_000


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deploy")
    storage = f"sqlite:///{tmp / 'study.db'}"
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")
    cfg = tmp / "space.yaml"
    cfg.write_text("attention: [mhsa, linformer]\nembed_dim: [32]\ndepth: [1, 2]\nnum_heads: [2]\n"
                   "patch_size: [4]\nstem: [patch]\n")
    args = ["search", "--study", "dep", "--trials", "3", "--epochs", "1", "--train-subset", "300", "--val-subset",
            "100", "--storage", storage, "--run-dir", str(tmp / "runs"), "--config", str(cfg), "--no-presets",
            "--sampler", "random", "--target-img-size", "32", "--target-batch", "4", "--max-params",
            f"{BUDGET / 1000:g}k"]
    proc = subprocess.run([sys.executable, "-m", "nas", *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return tmp, storage, proc, cfg


def test_efficiency_is_measured_at_the_deployment_shape(deployed):
    tmp, storage, proc, _ = deployed
    study = optuna.load_study(study_name="dep", storage=storage)
    assert study.user_attrs["target"] == {"img_size": 32, "batch": 4, "dtype": "auto"}
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 3
    for t in done:
        arch = Architecture.from_dict(t.user_attrs["arch"])
        assert t.values[1] == count_params(build_model(arch, img_size=32, in_chans=1, num_classes=10))
        assert t.user_attrs["proxy_params"] == count_params(build_model(arch, img_size=16, in_chans=1, num_classes=10))
        assert t.user_attrs["target"] == {"img_size": 32, "batch": 4, "dtype": "float32", "device": "cpu"}
        detail = t.user_attrs["throughput_detail"]
        assert t.values[2] == pytest.approx(detail["ratio"] * detail["reference_calibrated"])
    assert (tmp / "runs" / "throughput_cache.sqlite").is_file()
    assert "deployment shape 32 px, batch 4" in proc.stdout


def test_budgets_are_optuna_constraints_and_the_front_is_feasible(deployed):
    _, storage, proc, _ = deployed
    study = optuna.load_study(study_name="dep", storage=storage)
    assert study.user_attrs["budgets"] == {"max_params": BUDGET}
    done = study.get_trials(states=(TrialState.COMPLETE,))
    for t in done:
        assert t.constraints == {"max_params": pytest.approx(t.values[1] / BUDGET - 1)}
        over = t.values[1] > BUDGET
        assert (t.user_attrs["budget_violations"] != {}) == over
    front = pareto_front(study)
    assert all(t.values[1] <= BUDGET for t in front)
    assert {t.number for t in front} == {t.number for t in study.best_trials}  # Optuna's feasible-first rule
    status = study_status(study)
    assert status["budgets"] == {"max_params": BUDGET}
    assert status["infeasible"] == sum(1 for t in done if t.values[1] > BUDGET)
    assert "budgets: max_params 40,000" in proc.stdout


def test_every_reader_reports_the_same_normalised_hypervolume(deployed):
    import dashboards

    tmp, storage, _, cfg = deployed
    study = optuna.load_study(study_name="dep", storage=storage)
    bounds = objectives.study_bounds(study.user_attrs)
    space = SearchSpace.from_file(str(cfg)).for_image(16)
    assert bounds.to_dict() == {"accuracy": [0.1, 1.0], "params": list(params_range(space, 32, 1, 10)),
                                "throughput": list(objectives.THROUGHPUT_RANGE)}
    expected = objectives.normalised_hypervolume([t.values for t in pareto_front(study)], bounds)
    assert 0.0 < expected < 1.0
    result = runner.invoke(app, ["status", "--study", "dep", "--storage", storage, "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["hypervolume"] == pytest.approx(expected) and info["hv_bounds"] == bounds.to_dict()
    assert info["target"]["img_size"] == 32 and info["proxy_img_size"] == 16
    series = dashboards.hypervolume_series(study)
    assert series["hypervolume"][-1] == pytest.approx(expected)
    assert hypervolume(pareto_front(study), bounds) == pytest.approx(expected)


@pytest.mark.parametrize("extra, needle", [
    (["--target-img-size", "64"], "study: 'dep' was created with target="),
    (["--max-params", "1M"], "study: 'dep' was created with budgets="),
    (["--max-params", "1X"], "max_params: '1X' is not a positive amount"),
    (["--max-memory", "-5"], "max_memory: '-5' is not a positive amount"),
    (["--target-dtype", "fp8"], "target_dtype: unknown value 'fp8'; allowed: float32, bfloat16"),
    (["--target-batch", "0"], "target_batch: must be an integer >= 1, got 0"),
])
def test_changing_the_shape_or_budgets_of_a_study_is_refused(deployed, extra, needle):
    tmp, storage, _, cfg = deployed
    before = [(t.number, t.state, t.values) for t in optuna.load_study(study_name="dep", storage=storage).trials]
    args = ["search", "--study", "dep", "--trials", "4", "--epochs", "1", "--train-subset", "300", "--val-subset",
            "100", "--storage", storage, "--run-dir", str(tmp / "runs"), "--config", str(cfg), "--no-presets",
            "--sampler", "random", "--target-img-size", "32", "--target-batch", "4", "--max-params",
            f"{BUDGET / 1000:g}k"]
    for i in range(0, len(extra), 2):  # the later value of a repeated option wins
        args += extra[i:i + 2]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and needle in result.output, result.output
    after = [(t.number, t.state, t.values) for t in optuna.load_study(study_name="dep", storage=storage).trials]
    assert after == before


def test_a_target_no_patch_size_tiles_is_refused(tmp_path):
    result = runner.invoke(app, ["search", "--study", "x", "--storage", f"sqlite:///{tmp_path / 'x.db'}",
                                 "--target-img-size", "33", "--run-dir", str(tmp_path / "runs"), "--trials", "1",
                                 "--epochs", "1", "--train-subset", "100", "--no-presets"])
    assert result.exit_code == 2 and "target_img_size: 33 px fits no patch size" in result.output, result.output
    assert not (tmp_path / "x.db").exists()


def test_params_range_is_exact_on_a_small_space():
    """The bounds the hypervolume normalises params by are the true extremes: every architecture of a small
    space built and counted."""
    space = SearchSpace(attention=("mhsa", "linformer", "qna", "mixer"), embed_dim=(32, 48), depth=(1, 2),
                        num_heads=(2, 4), mlp_ratio=(2.0, 4.0), patch_size=(2, 4), pos_encoding=("learned", "none"),
                        stem=("patch", "conv"), qna_window=(3, 5))
    counts = []
    for att, c, depth, h, r, p, pos, stem in itertools.product(
            space.attention, space.embed_dim, space.depth, space.num_heads, space.mlp_ratio, space.patch_size,
            space.pos_encoding, space.stem):
        extra = [{"compact": v} for v in (False, True)] if att in ("mhsa", "linformer") else [{}]
        if att == "qna":
            extra = [{"qna_window": w} for w in space.qna_window]
        for genes in extra:
            arch = Architecture(attention=att, embed_dim=c, depth=depth, num_heads=h, mlp_ratio=r, patch_size=p,
                                pos_encoding=pos, stem=stem, **genes)
            counts.append(count_params(build_model(arch, img_size=32, in_chans=3, num_classes=7)))
    assert params_range(space, 32, 3, 7) == (min(counts), max(counts))
