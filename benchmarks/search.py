"""Search benchmark: search quality per unit of compute.

    python -m benchmarks.search                # digits, T=8 trials, 3 seeds, 4 samplers (about 8 min on 2 cores)
    python -m benchmarks.search --quick        # digits, T=4 trials, 3 seeds, smaller subset (a few minutes)
    python -m benchmarks.search --dataset fashion_mnist --trials 40 --epochs 2   # the longer run

For each seed and each of vitnas' default (NSGA-II with the paper presets enqueued first), NSGA-II
without presets, multi-objective TPE and random sampling, one real search (``nas.run_search``: Ray Tune
trials over an Optuna study in SQLite) runs to T complete trials. After every complete trial the
hypervolume of the front so far is computed with ``nas.study.hypervolume``: the fraction of the objective
cube normalised by the bounds each study stores (``nas.objectives.study_bounds``: accuracy from chance to
1, params between the space's smallest and largest models, throughput 1 to 1e6 img/s on a log scale). Ray
is started once for the whole benchmark.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as C

VARIANTS = {  # label -> (presets, sampler)
    "vitnas default (NSGA-II + presets)": (True, "nsga2"),
    "NSGA-II, no presets": (False, "nsga2"),
    "TPE": (False, "tpe"),
    "random": (False, "random"),
}


def start_ray() -> None:
    import ray

    from nas.ray_backend import quiet_ray

    quiet_ray()
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
        quiet_ray()


def hv_curve(study, started: float) -> list[dict]:
    """Hypervolume after each complete trial (in completion order) with its wall-clock since ``started``."""
    from optuna.trial import TrialState

    from nas.objectives import study_bounds
    from nas.study import hypervolume

    bounds = study_bounds(study.user_attrs)
    done = sorted((t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE),
                  key=lambda t: t.datetime_complete)
    curve = []
    for i, t in enumerate(done, 1):
        curve.append({"trials": i, "seconds": t.datetime_complete.timestamp() - started,
                      "hv": hypervolume(done[:i], bounds), "preset": t.user_attrs.get("preset"),
                      "reused": "reused_from" in t.user_attrs})
    return curve


def run_one(label: str, seed: int, args, workdir: Path) -> dict:
    from nas.search import SearchConfig, run_search

    presets, sampler = VARIANTS[label]
    name = f"{sampler}-{'p' if presets else 'np'}-s{seed}"
    cfg = SearchConfig(study=name, trials=args.trials, epochs=args.epochs, dataset=args.dataset,
                       data_dir=args.data_dir, train_subset=args.train_subset, val_subset=args.val_subset,
                       storage=f"sqlite:///{workdir / 'bench.db'}", sampler=sampler, seed=seed, presets=presets,
                       run_dir=str(workdir / "runs"))
    started = time.time()
    study = run_search(cfg)
    wall = time.time() - started
    curve = hv_curve(study, started)
    trial_seconds = sum(t.user_attrs.get("wall_seconds", 0.0) for t in study.get_trials(deepcopy=False)
                        if "reused_from" not in t.user_attrs)
    return {"variant": label, "seed": seed, "wall": wall, "curve": curve, "trial_seconds": trial_seconds,
            "failed": sum(1 for t in study.get_trials(deepcopy=False) if t.state.name == "FAIL"),
            "reused": sum(1 for p in curve if p["reused"])}


def hv_at(curve: list[dict], trials: int) -> float:
    pts = [p["hv"] for p in curve if p["trials"] <= trials]
    return pts[-1] if pts else 0.0


def hv_at_time(curve: list[dict], seconds: float) -> float:
    pts = [p["hv"] for p in curve if p["seconds"] <= seconds]
    return pts[-1] if pts else 0.0


def figures(runs: list[dict], args) -> list[Path]:
    import plotly.graph_objects as go

    colors = dict(zip(VARIANTS, ["#d62728", "#1f77b4", "#2ca02c", "#7f7f7f"]))
    paths = []
    fig = go.Figure()
    for label in VARIANTS:
        rs = [r for r in runs if r["variant"] == label]
        xs = list(range(1, args.trials + 1))
        per = [[hv_at(r["curve"], t) for r in rs] for t in xs]
        mean = [statistics.mean(v) for v in per]
        fig.add_trace(go.Scatter(x=xs + xs[::-1], y=[max(v) for v in per] + [min(v) for v in per][::-1],
                                 fill="toself", line=dict(width=0), fillcolor=colors[label], opacity=0.15,
                                 showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=xs, y=mean, name=label, mode="lines+markers", line=dict(color=colors[label])))
    fig.update_layout(title=f"Hypervolume against trials ({args.dataset}; mean over {len(args.seeds)} seeds, band min-max)",
                      xaxis_title="complete trials", yaxis_title="hypervolume (accuracy x M params x k img/s)",
                      width=950, height=540)
    paths.append(C.save_figure(fig, f"search_hv_trials_{args.dataset}"))

    fig = go.Figure()
    for label in VARIANTS:
        for i, r in enumerate(r for r in runs if r["variant"] == label):
            fig.add_trace(go.Scatter(x=[0] + [p["seconds"] for p in r["curve"]], y=[0] + [p["hv"] for p in r["curve"]],
                                     mode="lines", line=dict(shape="hv", color=colors[label]), name=label,
                                     legendgroup=label, showlegend=i == 0))
    fig.update_layout(title=f"Hypervolume against wall-clock ({args.dataset}; one line per seed)",
                      xaxis_title="seconds since the search started", yaxis_title="hypervolume", width=950, height=540)
    paths.append(C.save_figure(fig, f"search_hv_time_{args.dataset}"))
    return paths


def report(runs: list[dict], args, seconds: float, paths: list[Path], date: str | None = None) -> str:
    t_half = max(1, args.trials // 2)
    common_time = min(r["wall"] for r in runs)
    out = [f"## Search: hypervolume per unit of compute ({args.dataset})\n",
           C.run_header("python -m benchmarks.search" + (" --quick" if args.quick else "")
                        + ("" if args.dataset == "digits" else f" --dataset {args.dataset}"), seconds, date=date),
           f"- Setup: {args.trials} complete trials per search, {args.epochs} proxy epoch(s) per trial, "
           f"train subset {args.train_subset or 'all'} / validation subset {args.val_subset or 'all'} images, "
           f"seeds {', '.join(map(str, args.seeds))}, default search space, one trial at a time (CPU), "
           "Ray Tune started once for the whole benchmark, SQLite storage in a temporary folder. The budget "
           "is cut to fit about 8 minutes on 2 shared cores; the figures rank samplers at this budget only.",
           "- Hypervolume: the fraction of the unit cube the front dominates once accuracy ((acc - 1/C) / (1 - 1/C)), "
           "params (log, between the smallest and largest models of the space) and throughput (log, 1 to 1e6 img/s) "
           "are normalised by the bounds each study stores (`nas.objectives.study_bounds`); reference point: the "
           "cube's worst corner.",
           "- NSGA-II's population is sized to the budget by vitnas (max(4, T // 3)); the default enqueues the "
           "11 paper presets first, so with T <= 11 it evaluates presets only. TPE is Optuna's multivariate "
           "multi-objective TPE (5 random start-up trials). Throughput, one of the three objectives, is measured "
           "on this shared CPU inside each trial and is noisy, which makes hypervolumes noisy too.",
           "- Reading the numbers: each objective contributes at most its share of the cube, so a tiny, fast but "
           "inaccurate model no longer outweighs an accurate one; while T is within the 11 paper presets the "
           "default evaluates presets only.\n"]
    rows = []
    for label in VARIANTS:
        rs = [r for r in runs if r["variant"] == label]
        final = [hv_at(r["curve"], args.trials) for r in rs]
        half = [hv_at(r["curve"], t_half) for r in rs]
        at_time = [hv_at_time(r["curve"], common_time) for r in rs]
        wall = [r["wall"] for r in rs]
        rows.append([label, f"{statistics.mean(half):.3f}", f"{statistics.mean(final):.3f} ± "
                     f"{statistics.pstdev(final):.3f}", " / ".join(f"{v:.3f}" for v in final),
                     f"{statistics.mean(at_time):.3f}", f"{statistics.mean(wall):.0f}",
                     f"{sum(r['failed'] for r in rs)}", f"{sum(r['reused'] for r in rs)}"])
    out.append(C.table(["sampler", f"HV after {t_half} trials (mean)", f"HV after {args.trials} trials (mean ± sd)",
                        "per seed", f"HV at {common_time:.0f} s (mean)", "wall s per search (mean)", "failed trials",
                        "reused trials"], rows))
    best = max(VARIANTS, key=lambda v: statistics.mean(hv_at(r["curve"], args.trials) for r in runs if r["variant"] == v))
    default = statistics.mean(hv_at(r["curve"], args.trials) for r in runs if r["variant"] == list(VARIANTS)[0])
    best_mean = statistics.mean(hv_at(r["curve"], args.trials) for r in runs if r["variant"] == best)
    out.append(f"\nBest mean hypervolume after {args.trials} trials: **{best}**; vitnas' default reaches "
               f"{default / max(1e-12, best_mean):.2f}x "
               f"of it. `HV at {common_time:.0f} s` compares the samplers at the wall-clock of the fastest single "
               "search (per unit of compute rather than per trial).\n")
    if args.dataset == "digits":
        ran = (C.RESULTS / "search_fashion_mnist.json").exists()
        out.append("The run on Fashion-MNIST (28 px, `../shared/data`) has its own section below"
                   + (" (12 trials, 1 epoch, 1,000 training images per trial, 3 seeds: what fit this session; "
                      "`--trials 40 --epochs 2` is the longer run to do next)." if ran else
                      "; it has not been run yet (`python -m benchmarks.search --dataset fashion_mnist`).") + "\n")
    out.append("".join(C.figure_link(p, p.stem.replace("_", " ")) for p in paths))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="T=4 trials, 1 epoch, train subset 300 (a few minutes)")
    ap.add_argument("--dataset", default="digits", help="digits (default) or fashion_mnist (from --data-dir)")
    ap.add_argument("--data-dir", default=str(C.ROOT.parent / "shared" / "data"))
    ap.add_argument("--trials", type=int, default=None, help="complete trials per search (default 8; quick 4)")
    ap.add_argument("--epochs", type=int, default=1, help="proxy epochs per trial (default 1)")
    ap.add_argument("--train-subset", type=int, default=None, help="default 400 on digits (quick 300), 5000 otherwise")
    ap.add_argument("--val-subset", type=int, default=None, help="default all 360 on digits, 2000 otherwise")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--redoc", action="store_true",
                    help="redraw the figures and rewrite the doc section from benchmarks/results/search_<dataset>.json")
    args = ap.parse_args(argv)
    if args.redoc:
        import json

        saved = json.loads((C.RESULTS / f"search_{args.dataset}.json").read_text())
        old = argparse.Namespace(**saved["args"])
        paths = figures(saved["runs"], old)
        seconds = saved.get("seconds") or sum(r["wall"] for r in saved["runs"])
        key = "search" if old.dataset == "digits" else f"search-{old.dataset}"
        print("doc:    ", C.write_section(key, report(saved["runs"], old, seconds, paths, date=saved["date"])))
        return 0
    args.trials = args.trials or (4 if args.quick else 8)
    if args.train_subset is None:
        args.train_subset = (300 if args.quick else 400) if args.dataset == "digits" else 5000
    if args.val_subset is None and args.dataset != "digits":
        args.val_subset = 2000
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    start_ray()
    runs = []
    with tempfile.TemporaryDirectory(prefix="vitnas-bench-search-") as tmp:
        for seed in args.seeds:
            for label in VARIANTS:  # seeds outermost so load drift falls on every sampler alike
                t0 = time.perf_counter()
                r = run_one(label, seed, args, Path(tmp))
                runs.append(r)
                print(f"  {label:36s} seed {seed}: HV {hv_at(r['curve'], args.trials):.3f} after "
                      f"{len(r['curve'])} trials, {time.perf_counter() - t0:.0f} s", flush=True)
    import ray

    ray.shutdown()
    seconds = time.perf_counter() - start
    results = C.save_results(f"search_{args.dataset}", {"machine": C.machine(), "date": C.today(),
                                                        "args": vars(args), "seconds": seconds, "runs": runs})
    paths = figures(runs, args)
    print(f"results: {results}")
    for p in paths:
        print(f"figure:  {p}")
    if not args.no_doc:
        key = "search" if args.dataset == "digits" else f"search-{args.dataset}"
        doc = C.write_section(key, report(runs, args, seconds, paths))
        print(f"doc:     {doc} (section '{key}')")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
