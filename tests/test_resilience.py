"""Failures stay contained: NaN losses and exceptions fail their trial with a reason; the search goes on
to the target of complete trials; genes that keep failing are not retried forever."""

import os

import optuna
import pytest
from optuna.trial import TrialState

from nas import SearchConfig, run_search
from nas.study import study_status
from search_spaces import SearchSpace

#: The faults the module's searches meet, by study and trial number (injected by tests/faults.py in the
#: Ray workers; nothing in the product knows about them).
FAULTS = {"faulty": {0: "nan", 1: "raise"}, "stuck": {0: "raise", 1: "raise"}}


@pytest.fixture(scope="module", autouse=True)
def one_ray():
    """One local Ray for the module's in-process searches, started as a search starts it but with the fault
    plan installed in its workers: run_search uses a running Ray (and leaves it up) instead of starting and
    stopping its own, and the searches are unchanged."""
    import ray
    from faults import ray_init_kwargs

    from nas.engine.ray_backend import quiet_ray

    quiet_ray()
    ray.init(**ray_init_kwargs(FAULTS))
    quiet_ray()
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    space = SearchSpace(attention=("mhsa", "fnet", "mixer"), embed_dim=(32,), depth=(1,), num_heads=(2,),
                        patch_size=(4,), mlp_ratio=(2.0,))
    config = SearchConfig(study="faulty", trials=3, epochs=1, storage=f"sqlite:///{tmp / 'f.db'}",
                          run_dir=str(tmp / "runs"), space=space, presets=False, seed=3)
    events = []
    study = run_search(config, progress=events.append)
    return study, events


def test_nan_and_exception_fail_with_reasons_and_others_finish(faulty):
    study, events = faulty
    by_number = {t.number: t for t in study.get_trials()}
    assert by_number[0].state == TrialState.FAIL
    assert by_number[0].user_attrs["fail_reason"].startswith("NonFiniteLossError: loss is nan at epoch 1")
    assert by_number[1].state == TrialState.FAIL
    assert by_number[1].user_attrs["fail_reason"] == "RuntimeError: injected fault in trial 1"
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 3  # the failures did not count towards the target
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert {e.number for e in events if e.kind == "fail"} == {0, 1}
    status = study_status(study)
    assert status["complete"] == 3 and status["failed"] == 2 and status["running"] == 0
    assert status["hypervolume"] > 0


def test_identical_genes_reuse_the_stored_result(faulty):
    study, _ = faulty
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    keys = [t.user_attrs["arch_key"] for t in complete]
    trained = [t for t in complete if "reused_from" not in t.user_attrs]
    # Every distinct genes were trained once at most.
    assert len({t.user_attrs["arch_key"] for t in trained}) == len(trained)
    for t in complete:
        if "reused_from" in t.user_attrs:
            source = study.trials[t.user_attrs["reused_from"]]
            assert source.user_attrs["arch_key"] == t.user_attrs["arch_key"] and source.values == t.values
    assert len(keys) == 3


def test_genes_that_keep_failing_are_not_retried_forever(tmp_path):
    # A space with exactly one architecture: every proposal is the same genes.
    space = SearchSpace(attention=("fnet",), embed_dim=(32,), depth=(1,), num_heads=(2,), patch_size=(4,),
                        mlp_ratio=(2.0,), pos_encoding=("none",), stem=("patch",))
    config = SearchConfig(study="stuck", trials=2, epochs=1, storage=f"sqlite:///{tmp_path / 's.db'}",
                          run_dir=str(tmp_path / "runs"), space=space, presets=False,
                          max_failures_per_arch=2)
    events = []
    study = run_search(config, progress=events.append)  # returns instead of looping forever
    trials = study.get_trials()
    assert all(t.state == TrialState.FAIL for t in trials)
    assert [t.user_attrs["fail_reason"] for t in trials[:2]] == [
        "RuntimeError: injected fault in trial 1".replace("1", str(i)) for i in range(2)]
    later = trials[2:]
    assert later and all(t.user_attrs["fail_reason"].startswith("RepeatedFailure: these genes failed 2 times") for t in later)
    assert len(trials) <= 6
    assert any(e.kind == "stalled" for e in events)


def test_timeout_stops_cleanly_with_a_consistent_study(tmp_path):
    space = SearchSpace(attention=("mhsa",), embed_dim=(32,), depth=(1,), num_heads=(2,), patch_size=(2,),
                        mlp_ratio=(2.0, 4.0), pos_encoding=("learned", "none"), stem=("patch", "conv"))
    # Image subsets keep each trial short, so a 12 s budget still sees trials complete (and a later one cut off).
    config = SearchConfig(study="budget", trials=50, epochs=8, storage=f"sqlite:///{tmp_path / 't.db'}",
                          run_dir=str(tmp_path / "runs"), space=space, presets=False, timeout=12,
                          train_subset=200, val_subset=100)
    study = run_search(config)
    trials = study.get_trials()
    assert trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) < 50
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for t in trials:
        if t.state == TrialState.FAIL:
            assert t.user_attrs["fail_reason"].startswith("stopped")
        elif t.state == TrialState.PRUNED:  # stopped early at a rung by the scheduler
            assert t.values is None and 1 <= t.user_attrs["pruned_at_epoch"] < 8
        else:
            assert len(t.values) == 3 and os.path.isfile(t.user_attrs["weights"])


def test_locked_and_corrupted_storage_are_one_line_errors(tmp_path):
    import sqlite3

    from typer.testing import CliRunner

    from nas.cli import app

    runner = CliRunner()
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database" * 100)
    before = corrupt.read_bytes()
    result = runner.invoke(app, ["pareto", "--study", "x", "--storage", f"sqlite:///{corrupt}"])
    assert result.exit_code == 2 and result.output.startswith("error: storage:"), result.output
    assert corrupt.read_bytes() == before

    url = f"sqlite:///{tmp_path / 'locked.db'}"
    study = optuna.create_study(study_name="locked", storage=url, directions=["maximize", "minimize", "maximize"])
    t = study.ask()
    study.tell(t, [0.5, 100, 10])
    holder = sqlite3.connect(tmp_path / "locked.db")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = runner.invoke(app, ["status", "--study", "locked", "--storage", url + "?timeout=1"])
        assert result.exit_code == 2 and "database is locked" in result.output, result.output
    finally:
        holder.rollback()
        holder.close()
    assert optuna.load_study(study_name="locked", storage=url).trials[0].values == [0.5, 100, 10]
