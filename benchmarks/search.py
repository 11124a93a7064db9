"""Search benchmark: hypervolume against compute, counted in proxy epochs, for vitnas' default and its peers.

    python -m benchmarks.search                              # Fashion-MNIST, 9 methods, 5 seeds, 36 epochs each
    python -m benchmarks.search --seeds 0 2 4 --part a       # one half of the seeds (run the halves side by side)
    python -m benchmarks.search --merge a b                  # join the halves and write the doc section
    python -m benchmarks.search --quick                      # digits, 2 seeds, 12 epochs: a smoke test

Every method runs real searches (``nas.run_search``: Ray Tune trials over an Optuna study in SQLite) with
the same compute budget, ``--budget`` proxy epochs per search (``SearchConfig.epoch_budget``: a complete
trial costs its epochs, an early-stopped one the epochs it trained, a reused result none), the same proxy
(``--epochs`` per trial, the training and validation subsets) and the same seeds. After each trial ends,
the normalised hypervolume of the complete trials so far (``nas.study.hypervolume`` with the study's
stored bounds: accuracy from chance to 1, params between the space's smallest and largest models, both
log-scaled with throughput from 1 to 1e6 img/s) is recorded against the epochs spent so far; curves are
compared at equal epochs, median and quartiles over seeds. Wall-clock is reported too.

Methods: vitnas' default (``auto``: GPSampler, then NSGA-II past 200 complete trials; the paper presets
enqueued first; Pareto-aware early stopping) and the former default (NSGA-II in its place); random
search; NSGA-II; Optuna's multi-objective TPE; Optuna's GPSampler (logEHVI); random search with Ray Tune's
ASHA on accuracy alone (what a Ray Tune user would run today); random search with Syne Tune's MOASHA
(``benchmarks/_moasha.py``); and random search, TPE and GPSampler (with and without the presets first)
with vitnas' Pareto-aware early stopping, as candidates for the default. NSGA-II's population is sized as vitnas
sizes it for the number of full trials the budget buys (``--budget // --epochs``). All runs share one run
folder, so the throughput cache times a model once for every method and the device lock keeps throughput
timings apart from training.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as C

DEFAULT_LABEL = "vitnas default: auto (GPSampler, then NSGA-II) + presets + Pareto ASHA"
FORMER_DEFAULT = "NSGA-II + presets + Pareto ASHA (the former default)"
METHODS = {  # label -> (sampler, presets, early stopping: None, "pareto", "asha" or "moasha")
    DEFAULT_LABEL: ("auto", True, "pareto"),
    FORMER_DEFAULT: ("nsga2", True, "pareto"),
    "random": ("random", False, None),
    "NSGA-II": ("nsga2", False, None),
    "MO-TPE": ("tpe", False, None),
    "GPSampler (logEHVI)": ("gp", False, None),
    "random + ASHA on accuracy (Ray Tune)": ("random", False, "asha"),
    "random + MOASHA (Syne Tune)": ("random", False, "moasha"),
    "random + Pareto ASHA": ("random", False, "pareto"),
    "MO-TPE + Pareto ASHA": ("tpe", False, "pareto"),
    "GPSampler + presets + Pareto ASHA": ("gp", True, "pareto"),
    "GPSampler + Pareto ASHA": ("gp", False, "pareto"),
}
COLORS = ["#d62728", "#ff9896", "#7f7f7f", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
          "#17becf", "#bcbd22", "#393b79"]
#: Labels of saved results from before the default changed (2026-11-23) -> today's labels.
ALIASES = {"vitnas default: NSGA-II + presets + Pareto ASHA": FORMER_DEFAULT}


def start_ray() -> None:
    import ray

    from nas.engine.ray_backend import quiet_ray

    quiet_ray()
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
        quiet_ray()


def budget_curve(study, started: float) -> list[dict]:
    """One point per ended trial (completion order): epochs spent so far, hypervolume of the complete
    trials so far, seconds since ``started``."""
    from optuna.trial import TrialState

    from nas.objectives import study_bounds
    from nas.study import hypervolume, trained_epochs

    bounds = study_bounds(study.user_attrs)
    ended = sorted((t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None),
                   key=lambda t: t.datetime_complete)
    spent, done, curve = 0, [], []
    for t in ended:
        spent += trained_epochs(t.state, t.user_attrs)
        if t.state == TrialState.COMPLETE:
            done.append(t)
        curve.append({"epochs": spent, "hv": hypervolume(done, bounds) if done else 0.0,
                      "seconds": t.datetime_complete.timestamp() - started, "state": t.state.name,
                      "preset": t.user_attrs.get("preset")})
    return curve


def hv_at(curve: list[dict], epochs: float) -> float:
    """Hypervolume once ``epochs`` proxy epochs are spent (trials that ended within them)."""
    pts = [p["hv"] for p in curve if p["epochs"] <= epochs]
    return pts[-1] if pts else 0.0


def epochs_to_reach(curve: list[dict], hv: float) -> float:
    """Epochs spent when the hypervolume first reached ``hv`` (inf: never)."""
    return next((p["epochs"] for p in curve if p["hv"] >= hv - 1e-12), math.inf)


def space_bounds(args):
    """The study's hypervolume bounds for this data set (what every run's study stores), for MOASHA."""
    from nas import objectives
    from search_spaces import SearchSpace
    from search_spaces.extremes import params_range
    from trainers import load_dataset

    data = load_dataset(args.dataset, args.data_dir, train_subset=args.train_subset, val_subset=args.val_subset,
                        img_size=args.img_size)
    space = SearchSpace().for_image(data.img_size)
    return objectives.hv_bounds(data.num_classes, params_range(space, data.img_size, data.in_chans, data.num_classes))


def run_one(label: str, seed: int, args, workdir: Path, run_dir: Path, bounds) -> dict:
    from nas.engine.search import SearchConfig, run_search
    from nas.engine.settings import population_size

    sampler, presets, stopper = METHODS[label]
    name = f"m{list(METHODS).index(label)}-s{seed}"
    scheduler = None
    if stopper == "moasha":
        from benchmarks._moasha import MOASHAScheduler

        scheduler = MOASHAScheduler(args.grace_period, args.eta, args.epochs, bounds=bounds, seed=seed)
    cfg = SearchConfig(study=name, trials=100_000, epochs=args.epochs, epoch_budget=args.budget,
                       dataset=args.dataset, data_dir=args.data_dir, train_subset=args.train_subset,
                       val_subset=args.val_subset, img_size=args.img_size,
                       storage=f"sqlite:///{workdir / f'{name}.db'}", sampler=sampler,
                       population_size=population_size(args.budget // args.epochs), seed=seed, presets=presets,
                       early_stopping=stopper in ("pareto", "asha"), scheduler="asha" if stopper == "asha" else "pareto",
                       grace_period=args.grace_period, eta=args.eta, run_dir=str(run_dir))
    started = time.time()
    study = run_search(cfg, scheduler=scheduler)
    wall = time.time() - started
    curve = budget_curve(study, started)
    states = [t.state.name for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    return {"method": label, "seed": seed, "wall": wall, "curve": curve, "trials": len(states),
            "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"), "failed": states.count("FAIL"),
            "epochs": curve[-1]["epochs"] if curve else 0}


# ---------------------------------------------------------------------------- report
def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def figures(runs: list[dict], args) -> list[Path]:
    import plotly.graph_objects as go

    fig = go.Figure()
    xs = list(range(0, args.budget + 1))
    for (label, color) in zip(METHODS, COLORS):
        rs = [r for r in runs if r["method"] == label]
        if not rs:
            continue
        q = [_quartiles([hv_at(r["curve"], x) for r in rs]) for x in xs]
        fig.add_trace(go.Scatter(x=xs + xs[::-1], y=[v[2] for v in q] + [v[0] for v in q][::-1], fill="toself",
                                 line=dict(width=0, shape="hv"), fillcolor=color, opacity=0.12, showlegend=False,
                                 hoverinfo="skip", legendgroup=label))
        fig.add_trace(go.Scatter(x=xs, y=[v[1] for v in q], name=label, mode="lines", legendgroup=label,
                                 line=dict(color=color, shape="hv", width=3 if label == DEFAULT_LABEL else 1.5)))
    fig.update_layout(title=f"Normalised hypervolume against proxy epochs ({args.dataset}; median over "
                            f"{len(args.seeds)} seeds, band: quartiles)",
                      xaxis_title="proxy epochs spent", yaxis_title="normalised hypervolume", width=1000, height=600)
    tag = "_" + args.tag.replace(" ", "_") if getattr(args, "tag", None) else ""
    return [C.save_figure(fig, f"search_hv_epochs_{args.dataset}{tag}")]


def report(runs: list[dict], args, seconds: float, paths: list[Path], date: str | None = None) -> str:
    b = args.budget
    rand = [r for r in runs if r["method"] == "random"]
    random_final = statistics.median(hv_at(r["curve"], b) for r in rand) if rand else math.nan
    title = args.dataset + (f", {args.tag}" if getattr(args, "tag", None) else "")
    resized = f", resized to {args.img_size} px" if getattr(args, "img_size", None) else ""  # older parts lack it
    out = [f"## Search: hypervolume per unit of compute ({title})\n",
           C.run_header(args.command, seconds, date=date),
           f"- Setup: {b} proxy epochs per search (`SearchConfig.epoch_budget`), {args.epochs} epochs per full "
           f"trial, early stopping (where used) at rungs of {args.grace_period} x {args.eta}^k epochs; train subset "
           f"{args.train_subset or 'all'} / validation subset {args.val_subset or 'all'} images{resized}; seeds "
           f"{', '.join(map(str, sorted(args.seeds)))}; the default search space; one trial at a time per search "
           "(CPU, torch threads 1); SQLite storage per search; one run folder for all (throughput cache and device "
           "lock shared); the searches ran in two halves side by side, one per core.",
           "- Hypervolume: the fraction of the unit cube the front of the complete trials dominates, each objective "
           "normalised by the bounds the study stores (`nas.objectives.study_bounds`); reference point: the "
           "cube's worst corner. Early-stopped trials are PRUNED: they cost epochs and never count on the front.",
           "- *to random's final*: the epochs a method needed to reach random search's final median hypervolume, "
           "median over seeds (∞: not within the budget in most seeds).\n"]
    rows = []
    for label in METHODS:
        rs = [r for r in runs if r["method"] == label]
        if not rs:
            continue
        cells = []
        for frac in (0.25, 0.5, 1.0):
            lo, med, hi = _quartiles([hv_at(r["curve"], b * frac) for r in rs])
            cells.append(f"{med:.3f} ({lo:.3f}–{hi:.3f})")
        reach = statistics.median(epochs_to_reach(r["curve"], random_final) for r in rs)
        rows.append([label, *cells, "∞" if math.isinf(reach) else f"{reach:.0f}",
                     f"{statistics.median(r['trials'] for r in rs):.0f}",
                     f"{statistics.median(r['pruned'] for r in rs):.0f}",
                     f"{statistics.median(r['wall'] for r in rs):.0f}",
                     f"{sum(r['failed'] for r in rs)}"])
    out.append(C.table(["method", f"HV at {b // 4} epochs, median (quartiles)", f"HV at {b // 2} epochs",
                        f"HV at {b} epochs", "epochs to random's final", "trials (median)", "stopped early (median)",
                        "wall s (median)", "failed trials"], rows, "lllllrrrr"))
    finals = {label: statistics.median(hv_at(r["curve"], b) for r in runs if r["method"] == label)
              for label in METHODS if any(r["method"] == label for r in runs)}
    best = max(finals, key=finals.get)
    mine = DEFAULT_LABEL if DEFAULT_LABEL in finals else FORMER_DEFAULT
    name = "vitnas' default" if mine == DEFAULT_LABEL else "the former default"
    out.append(f"\nBest median hypervolume at {b} epochs: **{best}** ({finals[best]:.3f}); {name}: "
               f"{finals.get(mine, math.nan):.3f} ({finals.get(mine, math.nan) / finals[best]:.2f}x "
               f"the best, {finals.get(mine, math.nan) / random_final:.2f}x random search's).\n")
    preset_epochs = [max((p["epochs"] for p in r["curve"] if p.get("preset")), default=0)
                     for r in runs if METHODS.get(r["method"], (None, False))[1]]
    if preset_epochs:
        lo, hi, med = min(preset_epochs), max(preset_epochs), statistics.median(preset_epochs)
        out.append(f"The paper presets ran first in the methods that use them and had ended after {lo}-{hi} of the "
                   f"{b} epochs (median {med:.0f}).\n")
    if getattr(args, "reading", None):
        out.append(args.reading.strip() + "\n")
    out.append("".join(C.figure_link(p, p.stem.replace("_", " ")) for p in paths))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="digits, seeds 0 1, 12 epochs, 3 methods: a smoke test")
    ap.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist (default, from --data-dir) or digits")
    ap.add_argument("--data-dir", default=str(C.ROOT.parent / "shared" / "data"))
    ap.add_argument("--budget", type=int, default=36, help="proxy epochs per search (default 36)")
    ap.add_argument("--epochs", type=int, default=3, help="proxy epochs of a full trial (default 3)")
    ap.add_argument("--grace-period", type=int, default=1)
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--train-subset", type=int, default=1000)
    ap.add_argument("--val-subset", type=int, default=1000)
    ap.add_argument("--img-size", type=int, default=None, help="resize the images to this side in px (default: "
                    "the data set's own)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--methods", nargs="+", default=None, help="labels (default: all)")
    ap.add_argument("--part", default=None, help="save as part PART (benchmarks/results/search_<dataset>_<part>.json)")
    ap.add_argument("--merge", nargs="+", default=None, help="merge saved parts and write the doc")
    ap.add_argument("--run-dir", default=None, help="run folder shared by all searches (default: a temporary one)")
    ap.add_argument("--reading", default=None, help="with --merge: a file whose text (what the figures mean) "
                    "follows the table in the doc section")
    ap.add_argument("--tag", default=None, help="with --merge: a name for a run beside the main one (its own doc "
                    "section, results and figure)")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.dataset, args.seeds, args.budget, args.epochs = "digits", [0, 1], 12, 3
        args.train_subset, args.val_subset = 300, None
        args.methods = args.methods or [DEFAULT_LABEL, "random", "random + MOASHA (Syne Tune)"]
    slug = args.tag.replace(" ", "_") if args.tag else ""
    key = ("search" if args.dataset == "digits" else f"search-{args.dataset}") + (f"-{slug}" if slug else "")
    if args.merge:
        parts = [json.loads((C.RESULTS / f"search_{args.dataset}_{p}.json").read_text()) for p in args.merge]
        saved = argparse.Namespace(**parts[0]["args"])
        saved.seeds = sorted({s for p in parts for s in p["args"]["seeds"]})
        saved.command = " && ".join(p["args"]["command"] for p in parts)
        saved.reading = Path(args.reading).read_text() if args.reading else None
        runs = [{**r, "method": ALIASES.get(r["method"], r["method"])} for p in parts for r in p["runs"]]
        import torch

        torch.set_num_threads(1)  # as the parts ran (the machine line reports it)
        seconds = max(p["seconds"] for p in parts)
        saved.tag = args.tag
        name = f"search_{args.dataset}" + (f"_{slug}" if slug else "")
        C.save_results(name, {"machine": C.machine(), "date": parts[0]["date"], "args": vars(saved),
                              "seconds": seconds, "runs": runs})
        paths = figures(runs, saved)
        print("doc:", C.write_section(key, report(runs, saved, seconds, paths, date=parts[0]["date"])))
        return 0
    args.command = C.command_line("search")
    methods = args.methods or list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"--methods: unknown {unknown}; known: {list(METHODS)}")
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    start_ray()
    bounds = space_bounds(args)
    runs = []
    with tempfile.TemporaryDirectory(prefix="vitnas-bench-search-") as tmp:
        run_dir = Path(args.run_dir) if args.run_dir else Path(tmp) / "runs"
        for seed in args.seeds:
            for label in methods:  # seeds outermost, methods interleaved: load drift falls on every method alike
                r = run_one(label, seed, args, Path(tmp), run_dir, bounds)
                runs.append(r)
                print(f"  {label:48s} seed {seed}: HV {hv_at(r['curve'], args.budget):.3f} at {r['epochs']} epochs, "
                      f"{r['trials']} trials ({r['pruned']} stopped early), {r['wall']:.0f} s", flush=True)
    import ray

    ray.shutdown()
    seconds = time.perf_counter() - start
    name = f"search_{args.dataset}" + (f"_{args.part}" if args.part else "")
    results = C.save_results(name, {"machine": C.machine(), "date": C.today(), "args": vars(args),
                                    "seconds": seconds, "runs": runs})
    print(f"results: {results}")
    if not args.no_doc and not args.part:
        paths = figures(runs, args)
        print("doc:", C.write_section(key, report(runs, args, seconds, paths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
