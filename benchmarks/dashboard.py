"""Benchmark: how long the dashboard takes on a large study, and how big its HTML gets.

Generates a 5,000-trial study with realistic values and vitnas' user attributes directly with Optuna in
SQLite (:func:`dashboards.demo.make_demo_study`; kept in ``--db`` and reused on later runs), then times
reading it from the storage, building every figure and writing the self-contained report. Prints the
figures and writes a "Dashboard" section to ``docs/benchmarks.md`` (replacing an earlier one).

    python benchmarks/dashboard.py [--trials 5000] [--db runs/bench_dashboard.db] [--out runs/bench_dashboard.html]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

import dashboards  # noqa: E402
from dashboards.demo import make_demo_study  # noqa: E402
from nas.study import load_study  # noqa: E402


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5000)
    ap.add_argument("--db", default=str(ROOT / "runs" / "bench_dashboard.db"))
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_dashboard.html"))
    ap.add_argument("--repeats", type=int, default=2, help="timed renders (the best is reported)")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"))
    args = ap.parse_args()

    url = f"sqlite:///{Path(args.db).resolve()}"
    name = f"bench{args.trials}"
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    names = [s.study_name for s in optuna.get_all_study_summaries(url)] if Path(args.db).exists() else []
    if name not in names:
        t = time.perf_counter()
        make_demo_study(url, name, n_trials=args.trials, seed=0)
        print(f"generated {args.trials} trials in {time.perf_counter() - t:.1f} s -> {args.db}")

    loads, renders, totals = [], [], []
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        study = load_study(url, name)
        data = dashboards.load_data(study)
        t1 = time.perf_counter()
        path = dashboards.build_report(data, args.out, source=url)
        t2 = time.perf_counter()
        loads.append(t1 - t0)
        renders.append(t2 - t1)
        totals.append(t2 - t0)
    size_mb = os.path.getsize(path) / 1e6
    counts = data.counts()
    best = min(range(len(totals)), key=totals.__getitem__)
    figures = {
        "trials": counts["total"], "complete": counts.get("complete", 0), "front": len(data.front),
        "load_s": loads[best], "render_s": renders[best], "total_s": totals[best], "html_mb": size_mb,
    }
    print(f"{figures['trials']} trials ({figures['complete']} complete, front {figures['front']}): "
          f"read storage {figures['load_s']:.2f} s, figures + HTML {figures['render_s']:.2f} s, "
          f"total {figures['total_s']:.2f} s, HTML {size_mb:.2f} MB -> {path}")

    machine = f"{_cpu()}, {os.cpu_count()} logical CPUs (shared), {platform.system()} {platform.release()}, " \
              f"Python {platform.python_version()}, optuna {optuna.__version__}, plotly {__import__('plotly').__version__}"
    cmd = "python benchmarks/dashboard.py " + " ".join(sys.argv[1:])
    section = (
        "## Dashboard\n\n"
        f"- machine: {machine}\n"
        f"- command: `{cmd.strip()}`\n"
        f"- date: {_dt.date.today().isoformat()}\n"
        f"- study: {figures['trials']:,} synthetic trials in SQLite ({figures['complete']:,} complete, "
        f"{figures['front']} on the front; `dashboards.demo.make_demo_study`, realistic values and user attributes)\n\n"
        "| step | seconds |\n|---|---:|\n"
        f"| read the study from storage (`study.get_trials`) | {figures['load_s']:.2f} |\n"
        f"| build every figure and write the HTML | {figures['render_s']:.2f} |\n"
        f"| **total render** | **{figures['total_s']:.2f}** |\n\n"
        f"HTML report: **{size_mb:.2f} MB** (plotly.js inlined once, about 4.8 MB of it). Best of {len(totals)} runs.\n"
    )
    doc = Path(args.doc)
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Dashboard\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _m: section + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    doc.write_text(text, encoding="utf-8")
    print(f"wrote the Dashboard section of {doc}")


if __name__ == "__main__":
    main()
