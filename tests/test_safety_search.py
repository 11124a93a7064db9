"""Safe by default: the study lease is taken atomically, a read-only storage is refused in one line, and a
Ctrl-C stops the search, keeping what finished and marking the running trial ``interrupted``."""

import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.study import StudyError, StudyLease, create_or_load_study, open_storage

ROOT = Path(__file__).resolve().parents[1]


def _try_lease(study, barrier, won, errors):
    barrier.wait()
    try:
        won.append(StudyLease(study, renew=3600))
    except StudyError as exc:
        errors.append(str(exc))


def test_racing_threads_get_exactly_one_lease(tmp_path):
    url = f"sqlite:///{tmp_path / 'race.db'}"
    storage = open_storage(url)
    create_or_load_study(storage, "race")
    for _ in range(12):
        studies = [optuna.load_study(study_name="race", storage=storage) for _ in range(8)]
        barrier, won, errors = threading.Barrier(len(studies)), [], []
        threads = [threading.Thread(target=_try_lease, args=(s, barrier, won, errors)) for s in studies]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(won) == 1, (won, errors)
        assert len(errors) == len(studies) - 1 and all("is being searched by pid" in e for e in errors)
        won[0].release()
    # Released: the next one takes it at once.
    StudyLease(optuna.load_study(study_name="race", storage=storage)).release()


def _child(url, barrier, decided, queue):
    study = optuna.load_study(study_name="race", storage=open_storage(url))
    barrier.wait()
    try:
        lease = StudyLease(study, renew=3600)
    except StudyError:
        queue.put("refused")
        decided.wait()
    else:
        queue.put("won")
        decided.wait()  # hold it until all four have decided: none may find it released
        lease.release()


@pytest.mark.slow
def test_racing_processes_get_exactly_one_lease(tmp_path):
    url = f"sqlite:///{tmp_path / 'race.db'}"
    create_or_load_study(open_storage(url), "race")
    ctx = mp.get_context("fork")
    for _ in range(10):
        barrier, decided, queue = ctx.Barrier(4), ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_child, args=(url, barrier, decided, queue)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        outcomes = sorted(queue.get(timeout=5) for _ in procs)
        assert outcomes == ["refused", "refused", "refused", "won"]


def test_a_dead_holder_on_this_host_is_taken_over_and_heartbeats_renew(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'd.db'}")
    study = create_or_load_study(storage, "d")
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(proc.stdout)
    first = StudyLease(study, renew=0.05)
    first.me["pid"] = dead_pid  # pretend its process died: the row below names a gone pid
    first._beat()
    with first._engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE {StudyLease.TABLE} SET pid = {dead_pid}")
    first._stop.set()
    second = StudyLease(optuna.load_study(study_name="d", storage=storage), renew=0.05)
    time.sleep(0.3)
    first._beat()
    assert first.lost and not second.lost
    assert study.user_attrs["driver"]["token"] == second.me["token"]
    second.release()
    assert optuna.load_study(study_name="d", storage=storage).user_attrs.get("driver") is None


def test_a_read_only_storage_is_one_study_error(tmp_path):
    path = tmp_path / "ro.db"
    create_or_load_study(open_storage(f"sqlite:///{path}"), "ro")
    url = f"sqlite:///file:{path}?mode=ro&uri=true"
    study = optuna.load_study(study_name="ro", storage=open_storage(url))
    with pytest.raises(StudyError, match="writable database"):
        StudyLease(study)
    with sqlite3.connect(path) as conn:  # nothing was written
        assert not conn.execute("SELECT name FROM sqlite_master WHERE name = ?", (StudyLease.TABLE,)).fetchall()


@pytest.mark.slow
def test_a_read_only_storage_url_is_refused_by_the_cli_in_one_line(tmp_path):
    path = tmp_path / "ro.db"
    create_or_load_study(open_storage(f"sqlite:///{path}"), "ro")
    proc = subprocess.run([sys.executable, "-m", "nas", "search", "--study", "ro", "--trials", "1", "--epochs", "1",
                           "--no-presets", "--train-subset", "50", "--val-subset", "20",
                           "--storage", f"sqlite:///file:{path}?mode=ro&uri=true", "--run-dir", str(tmp_path / "r")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "writable database" in proc.stderr


@pytest.mark.slow
def test_ctrl_c_stops_the_search_and_marks_the_running_trial_interrupted(tmp_path, small_space):
    url = f"sqlite:///{tmp_path / 's.db'}"
    cmd = [sys.executable, "-m", "nas", "search", "--study", "s", "--trials", "3", "--epochs", "3", "--no-presets",
           "--train-subset", "200", "--val-subset", "100", "--storage", url, "--run-dir", str(tmp_path / "runs"),
           "--config", small_space]  # small designs: the first trial starts sooner
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        running, deadline = None, time.monotonic() + 240
        while running is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            try:
                study = optuna.load_study(study_name="s", storage=url)
                running = next((t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))),
                               None)
            except Exception:  # noqa: BLE001 - the study does not exist yet
                pass
        assert running is not None, proc.communicate(timeout=60)
        before = len(optuna.load_study(study_name="s", storage=url).trials)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, (out[-2000:], err[-3000:])
    assert "interrupted" in out + err and "Traceback" not in err
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert len(trials) == before  # nothing started after the signal
    assert trials[running].state == TrialState.FAIL and trials[running].user_attrs["fail_reason"] == "interrupted"


def test_an_interrupted_driver_proposes_nothing_and_fails_unfinished_trials_as_interrupted(tmp_path):
    from nas.engine.driver import StudyDriver
    from search_spaces import SearchSpace

    one = SearchSpace(attention=("fnet",), embed_dim=(32,), depth=(1,), num_heads=(2,), patch_size=(4,),
                      mlp_ratio=(2.0,), pos_encoding=("none",), stem=("patch",))
    study = create_or_load_study(open_storage(f"sqlite:///{tmp_path / 'i.db'}"), "i")
    driver = StudyDriver(study, one, img_size=16, target=5)
    driver.suggest("a")
    driver.suggest("b")
    driver.interrupt()
    assert driver.suggest("c") == StudyDriver.FINISHED
    driver.on_trial_complete("a", {"val_accuracy": 0.3})  # stopped after an epoch report
    assert driver.stop_all() == [1]
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert [t.user_attrs["fail_reason"] for t in trials] == ["interrupted", "interrupted"]
