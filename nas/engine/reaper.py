"""A watchdog for the processes of a local Ray: they must not outlive a killed search.

When ``vitnas search`` starts a local Ray, Ray's head processes are tied to the driver's life, but two of
the raylet's agents (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) are not: after a ``kill -9`` of
the driver they linger for minutes, still listening. :func:`watch` starts this module as a small process
that polls the driver; when the driver is gone it kills the processes Ray started for it that are still
alive (each identified by pid *and* start time, so a reused pid is never hit), then exits. It also exits
as soon as none of them is left (a normal ``ray.shutdown()``). Linux only (it reads ``/proc``); elsewhere
:func:`watch` does nothing.

Run as ``python -m nas.engine.reaper DRIVER_PID:START PID:START ...``; it imports nothing but the standard library.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

__all__ = ["watch", "descendants"]


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, field 22 of /proc/PID/stat), or None if gone."""
    fields = _stat(pid)
    return fields[19] if fields else None


def _parent(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if fields else None


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` in the process tree (Linux; empty elsewhere)."""
    if not os.path.isdir("/proc"):
        return []
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _parent(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def watch(driver: int | None = None) -> subprocess.Popen | None:
    """Start the watchdog for the processes now below ``driver`` (default: this process). Returns it, or
    None where there is no ``/proc`` or nothing to watch."""
    driver = os.getpid() if driver is None else driver
    tracked = [f"{pid}:{start}" for pid in descendants(driver) if (start := _start_time(pid)) is not None]
    own = _start_time(driver)
    if own is None or not tracked:
        return None
    return subprocess.Popen([sys.executable, "-m", "nas.engine.reaper", f"{driver}:{own}", *tracked],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            close_fds=True)


def _alive(pid: int, start: str) -> bool:
    return _start_time(pid) == start


def main(argv: list[str]) -> None:
    """Watch ``DRIVER:START`` and kill the ``PID:START`` processes still alive once the driver is gone.

    Raises:
        ValueError: an argument that is not ``PID:START``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the driver's to handle; keep watching
    driver, *tracked = [(int(p), s) for p, s in (a.split(":", 1) for a in argv)]
    while _alive(*driver):
        if not any(_alive(*t) for t in tracked):
            return
        time.sleep(0.5)
    for pid, start in tracked:
        if _alive(pid, start):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    main(sys.argv[1:])
