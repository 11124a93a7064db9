"""A local search's Ray: every listener off loopback belongs to Ray and the cluster refuses a client
without Ray's token; nothing of Ray outlives a driver killed with SIGKILL."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from nas.engine.ray_backend import start_ray
from nas.engine.settings import SearchError

pytestmark = [pytest.mark.slow,  # real Ray processes
              pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("ss") is None,
                                 reason="reads Linux's socket table with ss and /proc")]


def _pgid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[2])  # zombies hold nothing


def _listeners(pgid: int) -> list[tuple[str, int, str, int]]:
    """(address, port, process name, pid) of every TCP listener owned by a process of group ``pgid``."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        local = line.split()[3]
        address, port = local.rsplit(":", 1)
        for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
            if _pgid(int(pid)) == pgid:
                found.append((address.strip("[]"), int(port), name, int(pid)))
    return found


def _loopback(address: str) -> bool:
    return address.startswith("127.") or address == "::1"


def test_a_local_ray_without_token_authentication_is_refused(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(SearchError, match="^address: a local Ray listens on every interface"):
        start_ray(None)


def test_local_search_listeners_need_rays_token_and_die_with_the_driver(tmp_path, small_space):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    cmd = [sys.executable, "-m", "nas", "search", "--study", "net", "--trials", "20", "--epochs", "6",
           "--no-presets", "--train-subset", "400", "--val-subset", "100", "--storage", storage,
           "--run-dir", str(tmp_path / "runs"), "--config", small_space]  # small designs: the first trial starts sooner
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                trials = optuna.load_study(study_name="net", storage=storage).get_trials()
            except Exception:  # noqa: BLE001 - the study may not exist yet
                trials = []
            if any(t.state == TrialState.RUNNING for t in trials):
                break
            assert proc.poll() is None, "the search ended before it could be inspected"
            time.sleep(0.5)
        else:
            raise AssertionError("no trial started in time")

        listeners = _listeners(proc.pid)
        outside = [entry for entry in listeners if not _loopback(entry[0])]
        # Ray cannot bind its gRPC servers to loopback alone: whatever listens outside is Ray's (its head
        # processes, its workers and agents, and the driver's own core worker) ...
        assert outside and all(n in ("gcs_server", "raylet") or n.startswith("ray::") or pid == proc.pid
                               for _, _, n, pid in outside), outside
        gcs = [port for _, port, name, _ in outside if name == "gcs_server"]
        assert gcs, outside
        # ... and the cluster refuses a client that does not hold the token (another home: no token file).
        home = tmp_path / "stranger"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        # Ray retries a refused connection once a second, 20 times by default: a client without the token is
        # refused on every try (checked below), so three tries say the same in a seventh of the time.
        env["RAY_NUM_REDIS_GET_RETRIES"] = "3"
        outward = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split() or ["127.0.0.1"]
        probe = subprocess.run(
            [sys.executable, "-c", "import ray, sys\ntry:\n    ray.init(address=sys.argv[1])\n"
             "except Exception as e:\n    print('refused', type(e).__name__)\nelse:\n    print('connected')",
             f"{outward[0]}:{gcs[0]}"], capture_output=True, text=True, timeout=120, env=dict(env, HOME=str(home)))
        assert "refused" in probe.stdout and "connected" not in probe.stdout, probe.stdout + probe.stderr[-2000:]
        assert "Authentication token is missing or incorrect" in probe.stderr, probe.stderr[-2000:]  # not a timeout

        # SIGKILL of the driver alone: Ray's processes (agents included) are gone within seconds.
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 60  # generous on a loaded 2-core machine: the loop leaves as soon as none is left
        while time.monotonic() < deadline:
            left = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if _pgid(pid) == proc.pid]
            if not left:
                break
            time.sleep(0.5)
        names = {}
        for pid in left:
            try:
                names[pid] = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")[:80]
            except OSError:
                pass
        assert not names, names
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
