"""Safe by default: the dashboard never overwrites what is not its own report, secrets and Rich markup in
user strings never leak or crash, and bad export targets, weights and foreign studies are one-line errors."""

import math
import os
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

import dashboards
from dashboards.demo import DEMO_PRESETS, make_demo_study
from nas.cli import app
from nas.study import StudyMeta, create_or_load_study, load_study, open_storage

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def one_line_error(result, needle: str = "") -> None:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output, result.output
    assert "error:" in result.output and needle in result.output, result.output


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    path = tmp_path_factory.mktemp("safety") / "vitnas.db"
    url = f"sqlite:///{path}"
    make_demo_study(url, "demo", n_trials=14, seed=1, failed_fraction=0.25, running=0)
    return path, url


# 1. dashboard --out

def test_dashboard_refuses_to_overwrite_the_storage(demo):
    path, url = demo
    before = path.read_bytes()
    one_line_error(invoke("dashboard", "--study", "demo", "--storage", url, "--out", path), "storage")
    assert path.read_bytes() == before
    assert load_study(url, "demo").trials


def test_dashboard_refuses_an_unrelated_file_unless_forced(demo, tmp_path):
    _, url = demo
    other = tmp_path / "notes.html"
    other.write_text("<html>my notes</html>")
    one_line_error(invoke("dashboard", "--study", "demo", "--storage", url, "--out", other), "--force")
    assert other.read_text() == "<html>my notes</html>"
    result = invoke("dashboard", "--study", "demo", "--storage", url, "--out", other, "--force")
    assert result.exit_code == 0, result.output
    assert 'name="generator" content="vitnas"' in other.read_text()


def test_dashboard_overwrites_its_own_report(demo, tmp_path):
    _, url = demo
    out = tmp_path / "report.html"
    for _ in range(2):
        result = invoke("dashboard", "--study", "demo", "--storage", url, "--out", out)
        assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left behind
    assert dashboards.report.is_report(out)
    out.write_text(out.read_text().replace("vitnas", "other tool"))  # no longer ours: refused
    one_line_error(invoke("dashboard", "--study", "demo", "--storage", url, "--out", out), "not a vitnas report")


def test_dashboard_out_path_with_brackets_is_shown_as_given(demo, tmp_path):
    _, url = demo
    out = tmp_path / "rep[v1].html"
    result = invoke("dashboard", "--study", "demo", "--storage", url, "--out", out)
    assert result.exit_code == 0, result.output
    assert "rep[v1].html" in result.output.replace("\n", ""), result.output
    assert out.is_file()


# 2. secrets and markup

def test_report_masks_the_storage_password(demo, tmp_path):
    path, url = demo
    study = load_study(url, "demo")
    source = "postgresql://alice:S3cretPW@dbhost/vitnas"
    page = dashboards.render_report(study, plotlyjs="https://cdn.example/plotly.js", source=source)
    assert "S3cretPW" not in page and "alice" in page
    out = dashboards.build_report(study, tmp_path / "r.html", source=source)
    assert "S3cretPW" not in out.read_text()


def _study_with(url: str, name: str, fail_reason: str = "ok", preset: str = "p") -> None:
    study = create_or_load_study(open_storage(url), name, meta=StudyMeta(dataset="digits"))
    arch = DEMO_PRESETS["deit"]
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, values=[0.9, 1e5, 2000.0],
                                              user_attrs={"arch": arch.to_dict(), "preset": preset}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": fail_reason}))


@pytest.mark.parametrize("command", ["status", "pareto", "dashboard"])
def test_markup_in_user_strings_is_printed_as_given(tmp_path, command):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    _study_with(url, "x[/]", fail_reason="boom [/] [red]", preset="tiny[/b]")
    extra = ["--out", tmp_path / "o[/].html"] if command == "dashboard" else []
    result = invoke(command, "--study", "x[/]", "--storage", url, *extra)
    assert result.exit_code == 0 and result.exception is None, (result.output, result.exception)
    text = result.output.replace("\n", "")
    assert "x[/]" in text
    if command == "status":
        assert "boom [/] [red]" in text
    if command == "pareto":
        assert "tiny[/b]" in text


def test_markup_in_config_path_and_unknown_study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(invoke("space", "--config", "narrow[/x].yaml"), "narrow[/x].yaml")
    url = f"sqlite:///{tmp_path / 'm.db'}"
    _study_with(url, "real")
    one_line_error(invoke("status", "--study", "x[/]", "--storage", url), "x[/]")


# 3. one-line errors

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A vitnas-like study whose trials carry good, corrupt, truncated and foreign weights."""
    import torch
    from safetensors.torch import save_model

    from search_spaces import build_model

    tmp = tmp_path_factory.mktemp("export")
    url = f"sqlite:///{tmp / 'e.db'}"
    study = create_or_load_study(open_storage(url), "e", meta=StudyMeta(dataset="digits", img_size=8, in_chans=1,
                                                                     num_classes=10, epochs=1))
    a, b = DEMO_PRESETS["deit"], DEMO_PRESETS["qna"]
    torch.manual_seed(0)
    good = tmp / "good.safetensors"
    save_model(build_model(a, img_size=8, in_chans=1, num_classes=10), str(good))
    other = tmp / "other.safetensors"
    save_model(build_model(b, img_size=8, in_chans=1, num_classes=10), str(other))
    corrupt = tmp / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00garbage" * 64)
    truncated = tmp / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for weights in (good, corrupt, truncated, other):
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE, values=[0.9, 1e5, 2000.0],
            user_attrs={"arch": a.to_dict(), "weights": str(weights), "curve": [], "flops": 1, "peak_memory": 1}))
    return tmp, url


def _export(url, trial, out):
    return invoke("export", "--study", "e", "--storage", url, "--trial", trial, "--out", out)


@pytest.mark.parametrize("trial,needle", [(1, "weights"), (2, "weights"), (3, "weights")])
def test_bad_weights_are_one_line_errors(trained, tmp_path, trial, needle):
    tmp, url = trained
    out = tmp_path / "model"
    one_line_error(_export(url, trial, out), needle)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir()]  # no temporary folder left behind


def test_export_to_symlinks_is_refused(trained, tmp_path):
    tmp, url = trained
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    one_line_error(_export(url, 0, link), "symlink")
    assert link.is_symlink() and not any(target.iterdir())
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "missing")
    one_line_error(_export(url, 0, dangling), "symlink")
    assert dangling.is_symlink() and not (tmp_path / "missing").exists()


def test_export_under_an_unwritable_parent_is_refused(trained, tmp_path):
    tmp, url = trained
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line_error(_export(url, 0, blocker / "model"), "out")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            one_line_error(_export(url, 0, ro / "model"), "out")
        finally:
            ro.chmod(0o700)


def test_single_objective_study_is_not_a_vitnas_study(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="single", storage=url)
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.5))
    before = (tmp_path / "s.db").read_bytes()
    for args in (["status"], ["pareto"], ["export", "--pick", "knee", "--out", tmp_path / "m"]):
        one_line_error(invoke(*args, "--study", "single", "--storage", url), "not a vitnas study")
    assert (tmp_path / "s.db").read_bytes() == before


def _study_of(url, *rows):
    """A vitnas study "inf" at ``url`` with one complete deit trial per row of objective values."""
    study = create_or_load_study(open_storage(url), "inf", meta=StudyMeta(dataset="digits"))
    arch = DEMO_PRESETS["deit"].to_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for values in rows:
            study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, values=list(values),
                                                      user_attrs={"arch": arch}))
    return study


def test_infinite_objective_value(tmp_path):
    url = f"sqlite:///{tmp_path / 'i.db'}"
    _study_of(url, [0.8, math.inf, 2000.0], [0.7, 1e5, 1000.0])
    for args in (["pareto"], ["pareto", "--json"], ["status"]):
        result = invoke(*args, "--study", "inf", "--storage", url)
        assert result.exit_code == 0 and result.exception is None, (args, result.output, result.exception)
    result = invoke("pareto", "--study", "inf", "--storage", url)
    assert "left out" in result.output.replace("\n", ""), result.output
    assert Path(tmp_path / "i.db").is_file()


def test_infinite_objective_value_stays_off_the_dashboards_front(tmp_path):
    from dashboards.data import load_data

    url = f"sqlite:///{tmp_path / 'd.db'}"
    data = load_data(_study_of(url, [0.8, 1e5, math.inf], [0.7, 1e5, 1000.0]))
    assert data.front == {1}  # the infinite throughput would dominate; it is not a measurement
    assert invoke("dashboard", "--study", "inf", "--storage", url, "--out", str(tmp_path / "r.html")).exit_code == 0


def test_a_read_only_command_never_creates_a_database_whatever_the_sqlite_driver(tmp_path):
    for url in (f"sqlite:///{tmp_path / 'a.db'}", f"sqlite+pysqlite:///{tmp_path / 'b.db'}?timeout=1"):
        one_line_error(invoke("pareto", "--study", "x", "--storage", url), "no database")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("option, value", [("--cpus-per-trial", "inf"), ("--gpus-per-trial", "inf"),
                                            ("--timeout", "inf"), ("--gpus-per-trial", "nan")])
def test_non_finite_search_settings_are_one_line_errors(tmp_path, option, value):
    url = f"sqlite:///{tmp_path / 's.db'}"
    one_line_error(invoke("search", option, value, "--storage", url), option.lstrip("-").replace("-", "_"))
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("refresh", [float("nan"), float("inf"), 0])
def test_live_view_refuses_a_refresh_that_is_not_a_positive_number(demo, refresh):
    from dashboards.serve import make_server

    _, url = demo
    with pytest.raises(ValueError, match="^refresh: "):
        make_server(url, "demo", port=0, refresh=refresh)
