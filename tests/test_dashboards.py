"""dashboards/: every figure built from a real small Optuna study (written by Optuna directly with realistic
values and vitnas' user attributes, no search run), the report opened in a real headless Chromium, the
CLI command and the live server."""

from __future__ import annotations

import re
import subprocess
import threading
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

import dashboards
from dashboards.demo import DEMO_PRESETS, make_demo_study
from nas import objectives
from nas.cli import app
from nas.study import hypervolume, load_study

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def storage_url(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("dash") / "study.db"
    url = f"sqlite:///{path}"
    make_demo_study(url, "demo", n_trials=48, seed=3, failed_fraction=0.08, constraint_fraction=0.08, running=1)
    return url


@pytest.fixture(scope="module")
def study(storage_url) -> optuna.Study:
    return load_study(storage_url, "demo")


@pytest.fixture(scope="module")
def data(study) -> dashboards.StudyData:
    return dashboards.load_data(study)


@pytest.fixture(scope="module")
def report(tmp_path_factory, data) -> Path:
    return dashboards.build_report(data, tmp_path_factory.mktemp("rep") / "report.html")


def _traces(fig, role):
    return [t for t in fig.data if isinstance(t.meta, dict) and t.meta.get("role") == role]


def _numbers(traces) -> list[int]:
    return [int(n) for t in traces for n in (t.customdata if t.customdata is not None else [])]


def test_fixture_is_realistic(study):
    states = {t.state for t in study.trials}
    assert {TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING} <= states
    assert study.metric_names == ["accuracy", "params", "throughput"]
    t = next(t for t in study.trials if t.state == TrialState.COMPLETE)
    assert {"arch", "flops", "peak_memory", "curve", "device", "wall_seconds"} <= set(t.user_attrs)
    assert 0.5 < t.values[0] < 1 and 1e4 < t.values[1] < 5e6 and t.values[2] > 0
    assert any(t.user_attrs.get("constraint", 0) > 0 for t in study.trials)
    assert all(t.user_attrs.get("fail_reason") for t in study.trials if t.state == TrialState.FAIL)


def test_front_members_are_optunas_best_trials(study, data):
    best = {t.number for t in study.best_trials}
    complete = {t.number for t in study.trials if t.state == TrialState.COMPLETE}
    assert data.front == best
    fig3 = dashboards.pareto_figure(data)
    assert sorted(_numbers(_traces(fig3, "front"))) == sorted(best)
    assert sorted(_numbers(_traces(fig3, "dominated"))) == sorted(complete - best)
    fig2 = dashboards.pareto_2d_figures(data)
    for pair in (["params", "accuracy"], ["throughput", "accuracy"], ["params", "throughput"]):
        front = [t for t in _traces(fig2, "front") if list(t.meta["pair"]) == pair]
        dominated = [t for t in _traces(fig2, "dominated") if list(t.meta["pair"]) == pair]
        assert sorted(_numbers(front)) == sorted(best)
        assert sorted(_numbers(dominated)) == sorted(complete - best)
    # hover shows the trial number and its genes
    text = " ".join(_traces(fig3, "front")[0].text)
    assert re.search(r"trial \d+", text) and "C" in text and " L" in text


def test_violating_trials_are_marked(study, data):
    violating = {t.number for t in study.trials if t.state == TrialState.COMPLETE and t.user_attrs.get("constraint", 0) > 0}
    assert violating
    assert set(_numbers(_traces(dashboards.pareto_figure(data), "violating"))) == violating
    assert set(_numbers(_traces(dashboards.pareto_2d_figures(data), "violating"))) == violating


def test_presets_labelled_with_gain(study, data):
    presets = {t.user_attrs["preset"]: t for t in study.trials if t.user_attrs.get("preset")}
    assert set(presets) == set(DEMO_PRESETS)
    rows = {r["preset"]: r for r in dashboards.preset_comparison(data)}
    best = study.best_trials
    for name, t in presets.items():
        cand = [b for b in best if b.values[1] <= t.values[1]]
        top = max(b.values[0] for b in cand)
        assert rows[name]["delta_accuracy"] == pytest.approx(top - t.values[0])
        assert rows[name]["best_params"] <= rows[name]["params"]
    fig3 = dashboards.pareto_figure(data)
    labels3 = " ".join(_traces(fig3, "preset")[0].text)
    fig2 = dashboards.pareto_2d_figures(data)
    ann = [a.text for a in fig2.layout.annotations]
    for name in presets:
        assert name in labels3
        assert sum(1 for a in ann if a.startswith(f"{name}:")) == 3  # labelled in each 2-D panel
    gains = [r for r in rows.values() if r["delta_accuracy"] > 0]
    assert gains and all(f"+{100 * r['delta_accuracy']:.1f} pts" in r["label"] for r in gains)


def test_hypervolume_series(study, data):
    s = dashboards.hypervolume_series(data)
    hv = np.asarray(s["hypervolume"])
    n_complete = sum(t.state == TrialState.COMPLETE for t in study.trials)
    assert len(hv) == n_complete and s["completed"] == list(range(1, n_complete + 1))
    assert np.all(np.diff(hv) >= 0)
    assert hv[-1] == pytest.approx(hypervolume(study.best_trials), rel=1e-9) and hv[-1] > 0
    assert all(h is not None and h >= 0 for h in s["hours"]) and np.all(np.diff(s["hours"]) >= 0)
    fig = dashboards.hypervolume_figure(data)
    (by_trials,), (by_time,) = _traces(fig, "hypervolume"), _traces(fig, "hypervolume_time")
    assert list(by_trials.y) == list(hv) and list(by_time.y) == list(hv)


def test_hypervolume_series_is_the_hypervolume_of_each_front_so_far(data):
    s = dashboards.hypervolume_series(data)
    by_number = {t.number: t for t in data.complete}
    done = [by_number[n] for n in s["trial"]]
    for i in range(len(done)):
        front = objectives.front_trials(done[: i + 1], data.directions)
        assert s["hypervolume"][i] == pytest.approx(hypervolume(front, data.bounds), rel=1e-12, abs=1e-15)


def test_report_reads_the_storage_once_and_parses_each_trials_genes_once(storage_url, tmp_path, monkeypatch):
    reads, parsed = [], []
    read_trials, parse = dashboards.data.read_trials, dashboards.data._arch
    monkeypatch.setattr(dashboards.data, "read_trials", lambda *a, **k: reads.append(1) or read_trials(*a, **k))
    monkeypatch.setattr(dashboards.data, "_arch", lambda t: parsed.append(t.number) or parse(t))
    study = load_study(storage_url, "demo")
    dashboards.build_report(study, tmp_path / "once.html")
    assert len(reads) == 1
    assert sorted(parsed) == sorted(t.number for t in study.trials)  # every trial's genes (the table), once each


def test_gene_features_cached_per_snapshot(data):
    t = data.complete[0]
    first = dashboards.gene_features(t, data)
    assert first == dashboards.gene_features(t) and "embed_dim" in first
    first["embed_dim"] = -1  # the caller's copy: the snapshot's features are unchanged
    assert dashboards.gene_features(t, data) == dashboards.gene_features(t)


def test_importance_per_objective_is_optunas_on_that_objective_alone(data):
    imp = dashboards.gene_importances(data, max_trials=len(data.complete))  # no sampling: every complete trial
    feats = [dashboards.gene_features(t) for t in data.complete]
    genes = list(imp["accuracy"])
    dists = {g: optuna.distributions.CategoricalDistribution(
        sorted({f.get(g) for f in feats}, key=lambda u: (u is None, str(type(u)), u if u is not None else 0)))
        for g in genes}
    acc = objectives.spec()[0]
    single = optuna.create_study(direction="minimize")
    single.add_trials([optuna.trial.create_trial(params={g: f.get(g) for g in genes}, distributions=dists,
                                                 value=-acc.score(float(v))) for f, v in zip(feats, data.values[:, 0])])
    expected = optuna.importance.get_param_importances(single)
    assert imp["accuracy"] == pytest.approx({g: expected.get(g, 0.0) for g in genes}, abs=1e-12)


def test_parallel_importance_curves_breakdown(study, data):
    pc = dashboards.parallel_coordinates_figure(data)
    labels = [d.label for d in pc.data[0].dimensions]
    assert "attention" in labels and labels[-3:] == ["accuracy", "params (k)", "throughput (img/s)"]
    assert len(pc.data[0].dimensions[0].values) == len(data.complete)

    imp = dashboards.gene_importances(data, max_trials=30)
    assert set(imp) == {"accuracy", "params", "throughput"}
    for d in imp.values():
        assert "embed_dim" in d and sum(d.values()) == pytest.approx(1.0, abs=1e-6)
    fig = dashboards.importance_figure(data, max_trials=30)
    assert {t.meta["objective"] for t in _traces(fig, "importance")} == {"accuracy", "params", "throughput"}

    cf = dashboards.curves_figure(data)
    types = set(data.attention)
    assert {t.meta["attention"] for t in _traces(cf, "curves")} == types
    n_curves = sum(int(np.isnan(np.asarray(t.x, dtype=float)).sum()) for t in _traces(cf, "curves"))
    assert n_curves == len(data.complete)  # one curve (ended by a gap) per complete trial
    partial = _traces(cf, "partial_curves")
    assert partial and any("fail" in s for s in partial[0].text if s)
    colours = {t.meta["attention"]: t.line.color for t in _traces(cf, "curves")}
    assert colours == {a: dashboards.ATTENTION_COLORS[a] for a in types}

    ab = dashboards.attention_breakdown_figure(data)
    boxes = _traces(ab, "box")
    assert len(boxes) == 3 * len(types)
    assert sum(len(b.y) for b in boxes) == 3 * len(data.complete)


def test_trials_table(study, data):
    html = dashboards.trials_table_html(data)
    rows = re.findall(r"<tr[ >]", html.split("<tbody>")[1])
    assert len(rows) == len(study.trials)
    for t in study.trials:
        if t.state == TrialState.FAIL:
            assert t.user_attrs["fail_reason"] in html
    assert "running</span>" in html and "fail</span>" in html and 'id="trials"' in html and "sort" in html


def test_report_self_contained(report, study):
    text = report.read_text(encoding="utf-8")
    assert text.count("<script src=") == 0 and "cdn.plot.ly" not in text.split("</head>")[1]
    from plotly.offline import get_plotlyjs

    assert text.count(get_plotlyjs()[:300]) == 1  # plotly.js inlined exactly once
    for div in ("fig-pareto3d", "fig-pareto2d", "fig-hypervolume", "fig-parcoords", "fig-importance", "fig-curves",
                "fig-attention"):
        assert f'id="{div}"' in text
    assert "All trials" in text and "Paper presets against the front" in text


def test_empty_and_running_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    st = optuna.create_study(study_name="empty", storage=url, directions=["maximize", "minimize", "maximize"])
    dashboards.build_report(st, tmp_path / "empty.html")
    t = st.ask()  # a search that just started: one running trial, nothing complete
    t.set_user_attr("arch", {"attention": "mhsa"})
    out = dashboards.build_report(st, tmp_path / "one.html")
    assert "running" in out.read_text()


def test_optuna_visualization_reads_the_study(study):
    fig = optuna.visualization.plot_pareto_front(study)
    assert fig.layout.scene.xaxis.title.text == "accuracy"


def test_cli(storage_url, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli.html"
    res = runner.invoke(app, ["dashboard", "--study", "demo", "--storage", storage_url, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.stat().st_size > 1_000_000
    res = runner.invoke(app, ["dashboard", "--study", "nope", "--storage", storage_url, "--out", str(out)])
    assert res.exit_code == 2 and "no study 'nope'" in res.output
    res = runner.invoke(app, ["dashboard", "--study", "demo", "--storage", "not-a-url"])
    assert res.exit_code == 2 and "storage" in res.output
    res = runner.invoke(app, ["dashboard", "--study", "demo", "--storage", storage_url, "--serve", "--port", "70000"])
    assert res.exit_code == 2 and "port" in res.output


def test_live_server_redraws(tmp_path):
    url = f"sqlite:///{tmp_path / 'live.db'}"
    make_demo_study(url, "live", n_trials=12, seed=1, running=1)
    server = dashboards.make_server(url, "live", port=0, refresh=1)
    assert server.server_address[0] == "127.0.0.1"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        get = lambda path: urllib.request.urlopen(server.url + path, timeout=60).read().decode()  # noqa: E731
        page = get("")
        sig = get("state")
        assert f"data-state='{sig}'" in page and 'src="plotly.min.js"' in page and "12 trials" in page
        assert "Plotly" in get("plotly.min.js")[:5000]
        st = load_study(url, "live")  # another process finishes a trial
        t = st.ask()
        st.tell(t, [0.95, 123456.0, 2000.0])
        assert get("state") != sig
        assert "13 trials" in get("")
    finally:
        server.shutdown()
        server.server_close()


def _chromium(args: list[str], tmp: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
           "--enable-unsafe-swiftshader", "--disable-quic", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--hide-scrollbars", f"--user-data-dir={tmp}",
           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=20000",
           "--run-all-compositor-stages-before-draw", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    url = report.resolve().as_uri()
    dom = _chromium(["--dump-dom", url], tmp_path / "u1")
    html = dom.stdout
    head = html[: html.index(">", html.index("<html")) + 1]
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', head))
    assert attrs.get("data-ready") == "1", head
    assert attrs.get("data-js-errors") == "", attrs.get("data-js-errors")
    assert int(attrs["data-plots"]) == 7 and int(attrs["data-main-svg"]) >= 7
    assert int(attrs["data-gl"]) >= 2  # the 3-D front and the parallel coordinates drew on WebGL canvases
    uncaught = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln and re.search(r"Uncaught|TypeError|ReferenceError", ln)]
    assert not uncaught, uncaught

    shot = tmp_path / "shot.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1400,3000", url], tmp_path / "u2")
    assert shot.exists(), res.stderr[-2000:]
    from PIL import Image

    im = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert im.shape == (3000, 1400)
    assert im[200:1000].std() > 20  # the plots are drawn, not a blank page


def test_confirmed_designs_carry_error_bars_and_the_rest_stay_proxy_only(tmp_path, data):
    from nas.study.record import save_confirmation

    url = f"sqlite:///{tmp_path / 'c.db'}"
    make_demo_study(url, "conf", n_trials=12, seed=5, running=0)
    st = load_study(url, "conf")
    number = next(t.number for t in st.get_trials() if t.values)
    protocol = {"epochs": 30, "train_images": 1000, "img_size": 16, "dataset": "digits", "val_images": 100}
    for seed, acc in ((0, 0.91), (1, 0.95)):
        save_confirmation(st, number, {"seed": seed, "protocol": protocol, "accuracy": acc, "curve": []})
    fig = dashboards.pareto_2d_figures(load_study(url, "conf"))
    confirmed = _traces(fig, "confirmed")
    assert [t.meta["pair"][1] for t in confirmed] == ["accuracy", "accuracy"]  # the accuracy panels only
    for t in confirmed:
        assert list(t.customdata) == [number] and list(t.y) == [pytest.approx(0.93)]
        assert list(t.error_y.array) == [pytest.approx(0.0282842712)] and t.error_y.visible
    assert "1 confirmed (open circles, ± std), the rest proxy only" in fig.layout.title.text
    unconfirmed = dashboards.pareto_2d_figures(data)  # the module's demo study: nothing retrained
    assert not _traces(unconfirmed, "confirmed") and "confirmed" not in unconfirmed.layout.title.text
    fig3 = dashboards.pareto_figure(load_study(url, "conf"))  # the 3-D front: error bars on the accuracy axis
    (t3,) = _traces(fig3, "confirmed")
    proxy = next(t.values[0] for t in st.get_trials() if t.number == number)
    assert list(t3.customdata) == [number] and list(t3.x) == [pytest.approx(0.93)] and proxy != pytest.approx(0.93)
    assert list(t3.error_x.array) == [pytest.approx(0.0282842712)] and t3.error_x.visible
    assert "1 confirmed (open circles, ± std), the rest proxy only" in fig3.layout.title.text
    assert not _traces(dashboards.pareto_figure(data), "confirmed")
