"""Sampler cost: seconds per proposal of each sampler on studies of 30 to 9,000 complete trials.

    python -m benchmarks.sampler_cost                    # GP up to 1,000 trials, TPE and NSGA-II up to 9,000
    python -m benchmarks.sampler_cost --sizes 30 100     # a quick look

The studies are synthetic (``dashboards.demo.make_demo_study``: genes drawn from the default space at
8 px, objectives from a smooth model of them), in memory, so the figure is the sampler's own work. For
each sampler (``nas.engine.settings.make_sampler`` as a search builds it) and study size N, one proposal is
``study.ask()`` plus ``SearchSpace.suggest`` (every gene of one design), timed 3 times (each proposal
told FAIL, so N stays N); the median is reported. One core (torch threads 1). A sampler is left out
of sizes past ``--max-seconds`` once one of its proposals took longer (GPSampler refits a Gaussian
process to every finished trial at each proposal).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as C

SAMPLERS = {"gp": "GPSampler (logEHVI)", "tpe": "MO-TPE", "nsga2": "NSGA-II (vitnas' default)",
            "random": "random"}


def proposal_seconds(sampler: str, trials: list, directions: list, space, repeats: int = 3) -> float:
    import optuna

    from nas.engine.settings import make_sampler

    study = optuna.create_study(directions=directions, sampler=make_sampler(sampler, 0, 12))
    study.add_trials(trials)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        trial = study.ask()
        space.suggest(trial)
        times.append(time.perf_counter() - t0)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return statistics.median(times)


def report(res: dict, args, seconds: float, date: str | None = None) -> str:
    out = ["## Sampler cost: seconds per proposal against the study's size\n",
           C.run_header(args.command, seconds, date=date),
           "- Setup: synthetic in-memory studies of N complete trials (genes from the default space at 8 px); one "
           "proposal = `study.ask()` + `SearchSpace.suggest`, median of 3; samplers as `nas.engine.settings.make_sampler` "
           f"builds them; torch threads 1. A sampler is not run at sizes past one whose proposal took over "
           f"{args.max_seconds:.0f} s (—).\n"]
    sizes = sorted({n for r in res.values() for n in r}, key=int)
    rows = [[SAMPLERS[s], *[f"{res[s][n]:.3f}" if n in res[s] else "—" for n in sizes]] for s in res]
    out.append(C.table(["sampler", *[f"N = {int(n):,}" for n in sizes]], rows, "l" + "r" * len(sizes)))
    gp, tpe, nsga = res.get("gp", {}), res.get("tpe", {}), res.get("nsga2", {})
    if gp and tpe and nsga:
        big, small, top = max(gp, key=int), min(gp, key=int), max(nsga, key=int)
        out.append(f"\nGPSampler, the best method of the digits search benchmark at 72 epochs, costs {gp[big]:.1f} s "
                   f"per proposal at {int(big):,} trials ({gp[big] / gp[small]:.0f}x its cost at {int(small):,}) and "
                   f"refits its Gaussian process to every trial at each proposal; MO-TPE costs {tpe[big]:.2f} s at "
                   f"{int(big):,} and {tpe[max(tpe, key=int)]:.1f} s at {int(max(tpe, key=int)):,}; NSGA-II stays at "
                   f"{nsga[top]:.3f} s at {int(top):,}. So vitnas' default sampler (`auto`, `nas.engine.settings.GPThenNSGAII`) "
                   "runs GPSampler for a study's first 200 complete trials and NSGA-II after, which keeps the "
                   "10,000-trial studies of the Scale section cheap to continue.\n")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[30, 100, 300, 1000, 3000, 9000])
    ap.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    ap.add_argument("--max-seconds", type=float, default=5.0)
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--redoc", action="store_true", help="rewrite the doc section from benchmarks/results/sampler_cost.json")
    args = ap.parse_args(argv)
    if args.redoc:
        import json

        saved = json.loads((C.RESULTS / "sampler_cost.json").read_text())
        text = report(saved["results"], argparse.Namespace(**saved["args"]), saved["seconds"], date=saved["date"])
        print("doc:", C.write_section("sampler-cost", text))
        return 0
    args.command = C.command_line("sampler_cost")
    import optuna
    import torch

    from dashboards.demo import make_demo_study
    from search_spaces import SearchSpace

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    start = time.perf_counter()
    draft = make_demo_study(optuna.storages.InMemoryStorage(), "cost", n_trials=max(args.sizes), seed=0,
                            failed_fraction=0.0, constraint_fraction=0.0, running=0)
    complete = [t for t in draft.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    space = SearchSpace().for_image(8)
    res: dict[str, dict[str, float]] = {s: {} for s in args.samplers}
    for n in sorted(args.sizes):
        for s in args.samplers:
            if any(v > args.max_seconds for v in res[s].values()):
                continue
            res[s][str(n)] = proposal_seconds(s, complete[:n], list(draft.directions), space)
            print(f"  N={n:5d} {SAMPLERS[s]:28s} {res[s][str(n)]:.3f} s", flush=True)
    seconds = time.perf_counter() - start
    C.save_results("sampler_cost", {"machine": C.machine(), "date": C.today(), "args": vars(args),
                                    "seconds": seconds, "results": res})
    if not args.no_doc:
        print("doc:", C.write_section("sampler-cost", report(res, args, seconds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
