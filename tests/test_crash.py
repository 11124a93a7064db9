"""A real `vitnas search` killed with SIGKILL (process group: driver, Ray and its workers, as a reboot
would) continues when the same command is run again, and loses or duplicates nothing."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

#: Every test here runs real searches or Ray processes (the full suite; see conftest.SLOW_FIXTURES).
pytestmark = pytest.mark.slow


def _trials(storage):
    try:
        return optuna.load_study(study_name="crash", storage=storage).get_trials()
    except Exception:  # noqa: BLE001 - the study may not exist yet
        return []


def test_sigkill_then_rerun_reaches_the_target(tmp_path):
    (tmp_path / "space.yaml").write_text(
        "attention: [mhsa, fnet, mixer]\nembed_dim: [32]\ndepth: [1, 2]\nnum_heads: [2]\npatch_size: [4]\n")
    storage = f"sqlite:///{tmp_path / 'crash.db'}"
    # Image subsets keep each trial short (what is checked is the study after the kill, not the accuracy).
    cmd = [sys.executable, "-m", "nas", "search", "--study", "crash", "--trials", "4", "--epochs", "3",
           "--train-subset", "200", "--val-subset", "100", "--config", str(tmp_path / "space.yaml"), "--no-presets",
           "--storage", storage, "--run-dir", str(tmp_path / "runs")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            trials = _trials(storage)
            states = [t.state for t in trials]
            if states.count(TrialState.COMPLETE) >= 1 and TrialState.RUNNING in states:
                break
            assert first.poll() is None, "the search ended before it could be killed"
            time.sleep(0.5)
        else:
            raise AssertionError("no trial finished in time")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    before = {t.number: t for t in _trials(storage) if t.state == TrialState.COMPLETE}
    running = [t.number for t in _trials(storage) if t.state == TrialState.RUNNING]
    # a trial was running when the kill was sent; it may have finished in the moment before the kill landed
    was_running = [t.number for t in trials if t.state == TrialState.RUNNING]
    assert before and (running or set(was_running) <= set(before))

    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)
    assert second.returncode == 0, second.stderr[-2000:]
    trials = _trials(storage)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and not t.user_attrs.get("paused_at")]
    assert len(complete) == 4  # exactly the target (trials paused at the promotion rung are not complete ones)
    # the kill came while trials paused at the rung (a third of 4 x 3 epochs); the rerun promoted them, and
    # each promoted trial resumed once from its state file
    record = optuna.load_study(study_name="crash", storage=storage).user_attrs["promotion"]
    assert record["paused"] and all(trials[n].user_attrs["paused_at"] == 1 for n in record["paused"])
    resumed = [t.user_attrs["resumed_from"]["trial"] for t in complete if t.user_attrs.get("resumed_from")]
    assert sorted(resumed) == sorted(record["promoted"])
    assert all(os.path.isfile(trials[n].user_attrs["paused_state"]) for n in record["paused"])
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    for number in running:
        assert trials[number].state == TrialState.FAIL
        assert trials[number].user_attrs["fail_reason"] == "interrupted"
    for number, old in before.items():  # finished work is kept as it was, with its weights
        new = trials[number]
        assert new.state == TrialState.COMPLETE and new.values == old.values
        assert new.user_attrs == old.user_attrs
        assert os.path.isfile(new.user_attrs["weights"])
    assert len({t.number for t in trials}) == len(trials)
