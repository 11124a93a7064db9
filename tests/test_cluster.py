"""Clusters on loopback: a real Ray head joined through --address, and a real PostgreSQL server holding a
study that runs concurrent trials with none lost or written twice."""

import glob
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile

import optuna
import pytest
from optuna.trial import TrialState

#: Every test here runs real searches or Ray processes (the full suite; see conftest.SLOW_FIXTURES).
pytestmark = pytest.mark.slow

SPACE = "attention: [mhsa, fnet, mixer]\nembed_dim: [32]\ndepth: [1, 2]\nnum_heads: [2]\npatch_size: [4]\nstem: [patch, conv]\n"


# Token authentication on (the head writes ~/.ray/auth_token, the driver reads it); everything on loopback.
RAY_ENV = {"RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _search(tmp_path, storage, *extra, trials=3):
    (tmp_path / "space.yaml").write_text(SPACE)
    # Image subsets keep the proxy training short; what is checked is the storage and the concurrency.
    cmd = [sys.executable, "-m", "nas", "search", "--study", "cluster", "--trials", str(trials), "--epochs", "2",
           "--train-subset", "200", "--val-subset", "100", "--config", str(tmp_path / "space.yaml"), "--no-presets",
           "--storage", storage, "--run-dir", str(tmp_path / "runs"), "--max-concurrent", "2", "--promote-at", "0", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", **RAY_ENV)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    if storage.startswith("sqlite:///") and not storage.startswith("sqlite:////"):  # relative to the driver's cwd
        storage = f"sqlite:///{tmp_path / storage[len('sqlite:///'):]}"
    return optuna.load_study(study_name="cluster", storage=storage)


def _assert_nothing_lost(study, trials):
    all_trials = study.get_trials()
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
    assert len(complete) == trials
    assert not [t for t in all_trials if t.state == TrialState.RUNNING]
    assert len({t.number for t in all_trials}) == len(all_trials)
    weights = [t.user_attrs["weights"] for t in complete if "reused_from" not in t.user_attrs]
    assert len(weights) == len(set(weights)) and all(os.path.isfile(w) for w in weights)
    for t in complete:
        assert len(t.values) == 3 and t.user_attrs["curve"] and t.user_attrs["flops"] > 0


def _overlapping(trials) -> bool:
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials if t.datetime_complete)
    return any(b[0] < a[1] for a, b in zip(spans, spans[1:]))


@pytest.fixture
def ray_head(tmp_path):
    ray_bin = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
    for _attempt in range(2):  # a free port can be taken between the check and Ray's bind: try another once
        port = _free_port()
        temp_dir = f"/tmp/vitnas-ray-{port}"
        proc = subprocess.run([ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                               "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                               f"--temp-dir={temp_dir}"],
                              capture_output=True, text=True, timeout=120, env=dict(os.environ, **RAY_ENV))
        if proc.returncode == 0:
            break
        subprocess.run(["pkill", "-9", "-f", temp_dir], check=False)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}", temp_dir
    finally:
        # Stop only this head's processes (other Ray instances on the machine are left alone).
        subprocess.run(["pkill", "-9", "-f", temp_dir], check=False)
        subprocess.run(["pkill", "-9", "-f", f"--gcs-address=127.0.0.1:{port}"], check=False)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_joins_a_real_ray_head_and_runs_trials_concurrently(tmp_path, ray_head):
    address, ray_temp = ray_head
    # The study is a SQLite file named relative to the driver's working folder. Ray workers run in other
    # folders: had one opened the storage, it would have made (or failed on) a database of its own there.
    study = _search(tmp_path, "sqlite:///ray.db", "--address", address)
    _assert_nothing_lost(study, 3)
    assert _overlapping(study.get_trials(states=(TrialState.COMPLETE,)))
    stray = [p for root in (tmp_path / "runs", pathlib.Path(ray_temp)) for p in root.rglob("*.db")]
    assert not stray, stray


def test_workers_are_given_no_storage_url():
    from nas import SearchConfig

    secret = "postgresql://alice:S3cret@db.example:5432/vitnas"
    settings = SearchConfig(storage=secret).worker_settings()
    assert not [v for v in settings.values() if isinstance(v, str) and ("S3cret" in v or "postgresql" in v)]


@pytest.fixture
def postgres(tmp_path):
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not binaries:
        pytest.skip("PostgreSQL server binaries not installed (Debian package postgresql; .ci/run installs it)")
    pytest.importorskip("psycopg", reason="psycopg not installed (pip install 'vitnas[postgres]')")
    bindir = os.path.dirname(binaries[-1])
    # Outside pytest's private tmp (mode 700), so the postgres user can reach it.
    data = pathlib.Path(tempfile.mkdtemp(prefix="vitnas-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run([*as_user, f"{bindir}/initdb", "-D", str(data), "-U", "postgres", "--auth=trust"],
                   check=True, capture_output=True, timeout=120)
    subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", str(data), "-w", "-l", str(data / "log"), "-o",
                    f"-p {port} -c listen_addresses=127.0.0.1 -k {data}", "start"], check=True, capture_output=True,
                   timeout=120)
    try:
        subprocess.run([*as_user, f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "vitnas"],
                       check=True, capture_output=True, timeout=60)
        yield f"postgresql://postgres@127.0.0.1:{port}/vitnas"
    finally:
        subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"],
                       check=False, capture_output=True, timeout=60)
        shutil.rmtree(data, ignore_errors=True)


def test_postgresql_study_runs_concurrent_trials_with_none_lost(tmp_path, postgres):
    study = _search(tmp_path, postgres, trials=3)
    _assert_nothing_lost(study, 3)
    assert study.metric_names == ["accuracy", "params", "throughput"]
    # Continuing the same study on the server adds to it without touching what is there.
    before = {t.number: t.values for t in study.get_trials(states=(TrialState.COMPLETE,))}
    study = _search(tmp_path, postgres, trials=4)
    _assert_nothing_lost(study, 4)
    after = {t.number: t.values for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert all(after[n] == v for n, v in before.items())
