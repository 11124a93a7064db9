"""Helpers shared by the benchmark scripts: the machine's description, timing, Kendall's tau, the
figures (plotly -> PNG through kaleido, HTML with plotly.js inlined as the fallback) and the
marker-delimited sections of ``docs/benchmarks.md``.

Nothing here is a test; timings hold only for the machine they were taken on.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
FIGURES = ROOT / "docs" / "figures"
RESULTS = ROOT / "benchmarks" / "results"

DOC_HEADER = """# Benchmarks

Performance figures of the attention zoo and of the search, measured side by side with what a user
would otherwise use, in the same run on the same machine. Ratios are the figures to read; absolute
times hold only for the machine named beside them. Nothing here is a timed test: each section is
written by the script named in it (`python -m benchmarks.<name>`), between its own markers, and a
rerun rewrites only that section.

"""


# ---------------------------------------------------------------------- machine and run description
def machine() -> str:
    """One line naming the CPU (and GPU when ``device`` is CUDA), cores, RAM, OS and library versions."""
    import torch

    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 2**20:.0f} GiB RAM"
                break
    except OSError:
        pass
    parts = [f"{cpu}, {os.cpu_count()} logical cores{mem}", f"torch threads {torch.get_num_threads()}"]
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    parts.append(f"Linux {platform.release()}" if sys.platform.startswith("linux") else platform.platform())
    parts.append(f"Python {platform.python_version()}, torch {torch.__version__}")
    return "; ".join(parts)


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""


def today() -> str:
    return _dt.datetime.now().strftime("%Y-%m-%d %H:%M")


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
        rev = out.stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+local changes" if dirty else "") if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def command_line(module: str) -> str:
    """The command that reproduces this run: ``python -m benchmarks.<module> <args>``."""
    return " ".join([f"python -m benchmarks.{module}", *sys.argv[1:]])


def run_header(command: str, seconds: float | None = None, extra: str = "", date: str | None = None) -> str:
    """The lines that open every section: machine, command, date (of the run), revision, wall time."""
    lines = [f"- Machine: {machine()}",
             f"- Command: `{command}`",
             f"- Date: {date or today()} (git {git_revision()})"]
    if seconds is not None:
        lines.append(f"- Wall-clock of the run: {seconds / 60:.1f} min")
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- timing
def sync(device) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device) -> float:
    """Seconds of one call of ``fn``, the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved_times(fns: dict[str, Callable[[], Any]], device, rounds: int, warmup: int = 1,
                      budget_s: float | None = None) -> dict[str, list[float]]:
    """Seconds per call of every function, timed round-robin (one call of each per round) so that load
    from other processes on a shared machine falls on all of them alike. Once a function's timed calls
    add up to more than ``budget_s`` it is not timed again (at least one call)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds):
        for k, fn in fns.items():
            if r > 0 and budget_s is not None and sum(times[k]) > budget_s:
                continue
            times[k].append(timed(fn, device))
    return times


def interleaved_best(fns: dict[str, Callable[[], Any]], device, rounds: int, warmup: int = 1,
                     budget_s: float | None = None) -> dict[str, float]:
    """Fastest call per function over round-robin rounds (see :func:`interleaved_times`)."""
    return {k: min(v) for k, v in interleaved_times(fns, device, rounds, warmup, budget_s).items()}


def interleaved_medians(fns: dict[str, Callable[[], Any]], device, rounds: int, warmup: int = 1,
                        budget_s: float | None = None) -> dict[str, float]:
    """Median call per function over round-robin rounds (see :func:`interleaved_times`)."""
    return {k: statistics.median(v) for k, v in interleaved_times(fns, device, rounds, warmup, budget_s).items()}


# ---------------------------------------------------------------------- statistics
def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two paired samples (ties handled as in tau-b; O(n^2), fine for n ~ 20)."""
    n = len(x)
    if n != len(y) or n < 2:
        raise ValueError("kendall_tau_b: need two samples of the same length >= 2")
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom else float("nan")


def fmt(v: float, digits: int = 3) -> str:
    """Human format: 3 significant digits, thousands separators for large numbers."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def si(v: float, unit: str = "") -> str:
    if v is None or not math.isfinite(v):
        return "—"
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {prefix}{unit}"
    return f"{v:.3g} {unit}".rstrip()


def mib(v: float) -> str:
    return "—" if v is None else f"{v / 2**20:,.1f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A Markdown table; ``align`` one letter per column (l/r), default: first left, others right."""
    align = align or "l" + "r" * (len(headers) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------- figures
def save_figure(fig, stem: str) -> Path:
    """Write ``fig`` as ``docs/figures/<stem>.png`` (kaleido, headless Chromium); if that fails, as a
    self-contained HTML file with plotly.js inlined. Returns the path written."""
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.update_layout(template="plotly_white", font=dict(size=13))
    png = FIGURES / f"{stem}.png"
    try:
        fig.write_image(str(png), width=fig.layout.width or 900, height=fig.layout.height or 520, scale=1.5)
        return png
    except Exception as exc:  # noqa: BLE001 - fall back to HTML
        print(f"  (PNG export failed: {exc.__class__.__name__}: {exc}; writing HTML instead)", file=sys.stderr)
        html = FIGURES / f"{stem}.html"
        fig.write_html(str(html), include_plotlyjs=True, full_html=True)
        return html


def figure_link(path: Path, alt: str) -> str:
    rel = path.relative_to(DOC.parent).as_posix()
    return f"![{alt}]({rel})\n" if path.suffix == ".png" else f"[{alt} (interactive HTML)]({rel})\n"


# ---------------------------------------------------------------------- results and the doc
def save_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=1, default=str))
    return path


OVERVIEW = """## How these figures are made

Seven scripts, each one command, each rewriting only its own section below (between
`<!-- name:start -->` / `<!-- name:end -->` markers):

| section | command | what |
| --- | --- | --- |
| attention | `python -m benchmarks.attention [--device cuda]` | tokens/s and peak memory of every zoo mechanism and of its \
peers (timm, performer-pytorch, linformer, nystrom-attention, unfold local attention), shared-weight output checks first |
| search | `python -m benchmarks.search [--dataset fashion_mnist]` | hypervolume after T trials for vitnas' default, \
NSGA-II without presets, TPE and random, over seeds |
| overheads | `python -m benchmarks.overheads` | Ray Tune fan-out per trial against in-process trials; \
proxy trainer against a bare PyTorch loop |
| fidelity | `python -m benchmarks.fidelity` | Kendall's tau between the proxy ranking and a 5x longer training |
| throughput | `python -m benchmarks.throughput` | spread of one model's stored throughput across separate searches, \
before and after the fixed protocol |
| deployment | `python -m benchmarks.deployment` | the same designs' objectives and fronts at the proxy's shape and at \
a 112 px deployment shape |
| scale | `python -m benchmarks.scale` | driver overhead per trial, `vitnas status` and `vitnas dashboard` on 100 / \
1,000 / 10,000-trial studies (SQLite, PostgreSQL) |

Peers come from the `bench` extra (`pip install -e .[bench]`; never runtime dependencies). Raw results
are kept as JSON in `benchmarks/results/`, charts as PNG in `docs/figures/`. The machine these ran on is
a 2-core virtual machine shared with other jobs (test runs of other workers ran at the same time), so
absolute figures carry noise of tens of per cent; within one script, compared things are measured
interleaved in the same run, and the ratios are the figures to read. The full runs were cut to fit about
30 minutes together; each section states its budget.
"""


def write_section(key: str, body: str, doc: Path = DOC) -> Path:
    """Replace the text between ``<!-- key:start -->`` and ``<!-- key:end -->`` in ``docs/benchmarks.md``
    (appending the pair when absent); every other section is left as it is."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text() if doc.exists() else DOC_HEADER
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    elif key == "overview":  # before the first section these scripts wrote
        starts = [text.find(f"<!-- {k}") for k in ("attention", "search", "overheads", "fidelity")]
        at = min((i for i in starts if i >= 0), default=-1)
        text = text[:at] + block + "\n\n" + text[at:] if at >= 0 else text.rstrip() + "\n\n" + block + "\n"
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)
    if key != "overview":
        write_section("overview", OVERVIEW, doc)
    return doc


def goal(met: bool | None) -> str:
    return "n/a" if met is None else ("**met**" if met else "**missed**")
