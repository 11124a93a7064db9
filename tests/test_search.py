"""End to end: a real two-trial search through Ray Tune into a temporary SQLite study, then the CLI."""

import json
import os
import subprocess
import sys

import optuna
import pytest
import torch
from optuna.trial import TrialState
from typer.testing import CliRunner

from nas.cli import app

runner = CliRunner()
#: Image subsets keep the module's search short (the CLI and the study are under test, not the data).
SUBSETS = ("--train-subset", "300", "--val-subset", "120")


def vitnas(*args, cwd=None, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "nas", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    storage = f"sqlite:///{tmp / 'study.db'}"
    # --sampler auto enqueues the paper presets first (the default, knowncost, trains them only when their
    # known costs can move the front): the tests below export the first preset, deit
    proc = vitnas("search", "--study", "tiny", "--trials", "2", "--epochs", "1", *SUBSETS, "--storage", storage,
                  "--run-dir", str(tmp / "runs"), "--seed", "1", "--sampler", "auto")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return tmp, storage, proc


def test_search_stores_two_complete_trials_with_everything(searched):
    tmp, storage, proc = searched
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert study.metric_names == ["accuracy", "params", "throughput"]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 2
    assert not study.get_trials(states=(TrialState.RUNNING,))
    for t in complete:
        accuracy, params, throughput = t.values
        assert 0.0 <= accuracy <= 1.0 and params > 1000 and throughput > 0
        attrs = t.user_attrs
        assert attrs["flops"] > 0 and attrs["peak_memory"] > 0 and attrs["device"] == "cpu"
        assert [c["epoch"] for c in attrs["curve"]] == [1]
        assert attrs["curve"][-1]["val_accuracy"] == accuracy
        assert os.path.isfile(attrs["weights"]) and attrs["weights"].endswith(".safetensors")
        ref = attrs["weights_artifact"]  # the same weights in the artifact store (default RUN_DIR/artifacts)
        assert ref["store"] == str(tmp / "runs" / "artifacts") and os.path.isfile(os.path.join(ref["store"], ref["id"]))
        assert attrs["wall_seconds"] > 0
    # The paper presets are the first trials (enqueued), and the front is printed.
    assert complete[0].user_attrs.get("preset")
    assert "Pareto front of tiny" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_pareto_json_lists_the_front(searched):
    tmp, storage, _ = searched
    result = runner.invoke(app, ["pareto", "--study", "tiny", "--storage", storage, "--json"])
    assert result.exit_code == 0, result.output
    front = json.loads(result.stdout)
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert sorted(r["trial"] for r in front) == sorted(t.number for t in study.best_trials)
    for r in front:
        assert {"trial", "accuracy", "params", "throughput", "flops", "arch"} <= set(r)
        assert r["arch"]["attention"]


def test_export_reloads_with_identical_logits(searched):
    import timm
    from safetensors.torch import load_model

    import search_spaces  # noqa: F401  (registers nas_vit)
    from search_spaces import Architecture, build_model

    tmp, storage, _ = searched
    out = tmp / "exported"
    result = runner.invoke(app, ["export", "--study", "tiny", "--trial", "0", "--out", str(out), "--storage", storage])
    assert result.exit_code == 0, result.output
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "nas_vit"
    study = optuna.load_study(study_name="tiny", storage=storage)
    trial = study.trials[0]
    assert config["model_args"]["arch"] == trial.user_attrs["arch"]
    card = (out / "README.md").read_text()
    assert "Genes" in card and f"{trial.values[0]:.4f}" in card

    trained = build_model(Architecture.from_dict(trial.user_attrs["arch"]), img_size=16, in_chans=1, num_classes=10)
    load_model(trained, trial.user_attrs["weights"])
    trained.eval()
    reloaded = timm.create_model(f"local-dir:{out}")
    reloaded.eval()
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(trained(x), reloaded(x))

    # Exporting onto an existing folder is refused and leaves it untouched.
    before = (out / "model.safetensors").read_bytes()
    again = runner.invoke(app, ["export", "--study", "tiny", "--trial", "1", "--out", str(out), "--storage", storage])
    assert again.exit_code == 2 and "already exists" in again.output
    assert (out / "model.safetensors").read_bytes() == before


def test_export_fine_tunes_at_another_resolution_and_channel_count(searched):
    """The README's fine-tuning recipe: an export of a trial trained at 16 px on one channel, loaded at 32 px
    with 3 channels (position embedding resampled, first convolution adapted), one epoch of timm's AdamW
    with layer decay and a cosine schedule on upsampled digits reaches at least the trial's stored accuracy."""
    import timm
    import torch.nn.functional as F
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    from trainers import load_dataset

    tmp, storage, _ = searched
    study = optuna.load_study(study_name="tiny", storage=storage)
    trial = study.trials[0]
    assert trial.user_attrs["arch"]["pos_encoding"] == "learned"  # the deit preset: a position embedding to resample
    out = tmp / "finetune"
    result = runner.invoke(app, ["export", "--study", "tiny", "--trial", "0", "--out", str(out), "--storage", storage])
    assert result.exit_code == 0, result.output
    card = (out / "README.md").read_text()
    assert "img_size" in card and "in_chans" in card

    data = load_dataset("digits")

    def batches(x, y, batch_size, shuffle):
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0)) if shuffle else torch.arange(len(y))
        for i in range(0, len(y), batch_size):
            idx = order[i:i + batch_size]
            img = F.interpolate(data.normalize(x[idx]), size=32, mode="bilinear", align_corners=False)
            yield img.expand(-1, 3, -1, -1), y[idx]

    torch.manual_seed(0)
    model = timm.create_model(f"local-dir:{out}", img_size=32, in_chans=3, num_classes=10)
    with torch.no_grad():
        assert torch.isfinite(model.eval()(next(batches(data.x_val, data.y_val, 8, False))[0])).all()
    steps = (len(data.y_train) + 31) // 32
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    scheduler, _ = create_scheduler_v2(optimizer, "cosine", num_epochs=1, warmup_epochs=0, step_on_epochs=False,
                                       updates_per_epoch=steps)
    model.train()
    for step, (x, y) in enumerate(batches(data.x_train, data.y_train, 32, True)):
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step_update(step + 1)
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(-1) == y).sum()) for x, y in batches(data.x_val, data.y_val, 128, False))
    assert correct / len(data.y_val) >= trial.values[0]


def test_rerun_with_reached_target_trains_nothing_and_changes_nothing(searched):
    tmp, storage, _ = searched
    study = optuna.load_study(study_name="tiny", storage=storage)
    before = [(t.number, t.state, t.values) for t in study.trials]
    proc = vitnas("search", "--study", "tiny", "--trials", "2", "--epochs", "1", *SUBSETS, "--storage", storage,
                  "--run-dir", str(tmp / "runs"))
    assert proc.returncode == 0, proc.stderr
    after = [(t.number, t.state, t.values) for t in optuna.load_study(study_name="tiny", storage=storage).trials]
    assert after == before


@pytest.mark.parametrize("args, needle", [
    (["search", "--trials", "0"], "trials: must be an integer >= 1"),
    (["search", "--dataset", "imagenet"], "dataset: unknown name 'imagenet'"),
    (["search", "--sampler", "cmaes"], "sampler: unknown value 'cmaes'"),
    (["search", "--img-size", "0"], "img_size: must be an integer >= 1, got 0"),
    (["search", "--gpus-per-trial", "many"], "gpus_per_trial: must be auto or a number >= 0, got 'many'"),
    (["search", "--storage", "nonsense"], "storage: 'nonsense' is not an SQLAlchemy URL"),
    (["search", "--storage", "foo://x/y"], "storage: cannot open 'foo://x/y'"),
    (["pareto", "--study", "nope"], "study: no study 'nope'"),
    (["export", "--study", "nope", "--trial", "0", "--out", "x"], "study: no study 'nope'"),
    (["export", "--study", "tiny", "--trial", "99", "--out", "x"], "trial: study 'tiny' has no trial 99"),
    (["space", "--config", "missing.yaml"], "config: cannot read 'missing.yaml'"),
])
def test_bad_input_is_one_line_and_exit_2(searched, tmp_path, args, needle):
    _, storage, _ = searched
    if args[0] in ("pareto", "export", "search") and "--storage" not in args:
        args = [*args, "--storage", storage]
    study = optuna.load_study(study_name="tiny", storage=storage)
    before = [(t.number, t.state, t.values, t.user_attrs) for t in study.trials]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output
    after = [(t.number, t.state, t.values, t.user_attrs) for t in optuna.load_study(study_name="tiny", storage=storage).trials]
    assert after == before


def test_exporting_a_failed_trial_is_refused(searched, tmp_path):
    _, storage, _ = searched
    study = optuna.load_study(study_name="tiny", storage=storage)
    failed = study.ask()
    study.tell(failed, state=TrialState.FAIL)
    result = runner.invoke(app, ["export", "--study", "tiny", "--trial", str(failed.number), "--out",
                                 str(tmp_path / "x"), "--storage", storage])
    assert result.exit_code == 2 and "is fail" in result.output
    assert not (tmp_path / "x").exists()


def test_cli_subprocess_bad_input_has_no_traceback(tmp_path):
    proc = vitnas("search", "--trials", "0", "--storage", f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["error: trials: must be an integer >= 1, got 0"]
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("args, line", [
    (["search", "--trials", "abc"], "error: Invalid value for '--trials': Input should be a valid integer"),
    (["search", "--bogus"], "error: No such option: --bogus"),
    (["serch"], "error: No such command 'serch'. Did you mean 'search'?"),
])
def test_usage_errors_are_one_line(tmp_path, args, line):
    proc = vitnas(*args, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(line), proc.stderr


def test_read_commands_never_create_a_database(tmp_path):
    missing = tmp_path / "none.db"
    for args in (["pareto", "--study", "s"], ["status", "--study", "s"], ["dashboard", "--study", "s"],
                 ["export", "--study", "s", "--trial", "0", "--out", str(tmp_path / "o")]):
        result = runner.invoke(app, [*args, "--storage", f"sqlite:///{missing}"])
        assert result.exit_code == 2 and "storage: no database at" in result.output, result.output
    assert not missing.exists()


def test_continuing_with_another_space_or_proxy_is_refused(searched, tmp_path):
    tmp, storage, _ = searched
    before = [(t.number, t.state, t.values) for t in optuna.load_study(study_name="tiny", storage=storage).trials]
    cfg = tmp_path / "narrow.yaml"
    cfg.write_text("attention: [mhsa]\n")
    result = runner.invoke(app, ["search", "--study", "tiny", "--trials", "5", "--storage", storage, "--config", str(cfg),
                                 "--run-dir", str(tmp / "runs")])
    assert result.exit_code == 2 and "config: study 'tiny' was searched with attention=" in result.output, result.output
    result = runner.invoke(app, ["search", "--study", "tiny", "--trials", "5", "--storage", storage, "--epochs", "3",
                                 "--run-dir", str(tmp / "runs")])
    assert result.exit_code == 2 and "study: 'tiny' was created with epochs=1, not 3" in result.output, result.output
    result = runner.invoke(app, ["search", "--study", "tiny", "--trials", "5", "--storage", storage, "--img-size", "12",
                                 "--run-dir", str(tmp / "runs")])
    assert result.exit_code == 2 and "study: 'tiny' was created with img_size=16, not 12" in result.output, result.output
    after = [(t.number, t.state, t.values) for t in optuna.load_study(study_name="tiny", storage=storage).trials]
    assert after == before


def test_passwords_are_never_shown():
    result = runner.invoke(app, ["pareto", "--study", "s", "--storage", "postgresql://user:hunter2@127.0.0.1:1/db"])
    assert result.exit_code == 2 and "hunter2" not in result.output and "***" in result.output, result.output


def test_knee_pick_is_the_balanced_front_member():
    from nas.study import knee_trial

    study = optuna.create_study(directions=["maximize", "minimize", "maximize"])
    for values in ([0.99, 1_000_000, 100.0],   # most accurate, huge and slow
                   [0.50, 1_000, 100_000.0],   # tiny and fast, inaccurate
                   [0.95, 20_000, 20_000.0],   # balanced: the knee
                   [0.60, 900_000, 200.0]):    # dominated by the balanced one
        study.add_trial(optuna.trial.create_trial(values=values))
    assert knee_trial(study).number == 2
    assert knee_trial(study).number in {t.number for t in study.best_trials}


def test_export_pick(searched):
    tmp, storage, _ = searched
    out = tmp / "knee"
    result = runner.invoke(app, ["export", "--study", "tiny", "--pick", "knee", "--out", str(out), "--storage", storage])
    assert result.exit_code == 0, result.output
    picked = int(result.output.split("picked trial ")[1].split()[0])
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert picked in {t.number for t in study.best_trials}
    assert (out / "model.safetensors").is_file()
    both = runner.invoke(app, ["export", "--study", "tiny", "--pick", "knee", "--trial", "0", "--out", str(tmp / "z"),
                               "--storage", storage])
    assert both.exit_code == 2 and "exactly one of --trial N or --pick" in both.output
    bad = runner.invoke(app, ["export", "--study", "tiny", "--pick", "median", "--out", str(tmp / "z"), "--storage", storage])
    assert bad.exit_code == 2 and "pick: unknown value 'median'" in bad.output


def test_a_study_driven_by_a_live_search_is_refused(searched):
    import socket
    import time as _time

    tmp, storage, _ = searched
    study = optuna.load_study(study_name="tiny", storage=storage)
    # Pretend this (live) test process drives the study right now.
    study.set_user_attr("driver", {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": _time.time()})
    try:
        before = [(t.number, t.state, t.values) for t in study.trials]
        proc = vitnas("search", "--study", "tiny", "--trials", "3", "--epochs", "1", *SUBSETS, "--storage", storage,
                      "--run-dir", str(tmp / "runs"))
        assert proc.returncode == 2
        assert f"is being searched by pid {os.getpid()}" in proc.stderr
        assert [(t.number, t.state, t.values) for t in optuna.load_study(study_name="tiny", storage=storage).trials] == before
    finally:
        study.set_user_attr("driver", None)
