"""Known costs: the throughput predictor's error on held-out designs, and seconds per proposal.

    python -m benchmarks.known_cost                 # both; writes benchmarks/results/known_cost.json
    python -m benchmarks.known_cost --part predictor
    python -m benchmarks.known_cost --part proposal --trials 100,1000

**Predictor.** :class:`nas.engine.known_cost.ThroughputPredictor` is fitted on designs of the recorded table
(:mod:`benchmarks.table`: throughput timed by vitnas' protocol at 16 px, batch 64, float32, on this CPU) and
asked for the others: ``n`` designs timed (as a study has after ``n`` trials), the rest held out, 20 random
splits per ``n``. The error is ``|predicted / measured - 1|``; the baseline is a straight line in log-log of
throughput against params (the one number a user would guess from).

**Seconds per proposal.** A study of ``N`` complete trials (random designs of the default space at 16 px with
their exact params, a made-up throughput and accuracy), then the time ``study.ask()`` plus the space's
``suggest`` takes with the known-cost sampler and with Optuna's GPSampler, median of 3 proposals.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OUT = Path(__file__).resolve().parent / "results" / "known_cost.json"


def predictor_error(splits: int = 20) -> dict:
    import numpy as np

    from benchmarks.simulate import DEFAULT_TABLE, Table
    from nas.engine.known_cost import ThroughputPredictor, features
    from search_spaces.genes import Architecture

    table = Table.load()
    img = int(table.protocol["img_size"])
    x = [features(Architecture.from_dict(d.arch), d.params, img) for d in table.designs]
    y = np.array([d.throughput for d in table.designs])
    logp = np.log([d.params for d in table.designs])
    from benchmarks.table import read_rows

    spread = [r["throughput_spread"] for r in read_rows(DEFAULT_TABLE) if r.get("kind") == "cost"
              and r.get("throughput_spread") is not None]
    out = {"designs": len(x), "sizes": {}, "protocol_spread_median": float(np.median(spread)) if spread else None}
    rng = np.random.default_rng(0)
    for n in (10, 20, 40, 80):
        if n >= len(x) - 5:
            continue
        model_err, base_err = [], []
        for _ in range(splits):
            idx = rng.permutation(len(x))
            tr, te = idx[:n], idx[n:]
            pred = ThroughputPredictor(min_points=2).fit([x[i] for i in tr], y[tr]).predict([x[i] for i in te])
            model_err += list(np.abs(pred / y[te] - 1))
            a, b = np.polyfit(logp[tr], np.log(y[tr]), 1)
            base_err += list(np.abs(np.exp(a * logp[te] + b) / y[te] - 1))
        out["sizes"][n] = {"median": float(np.median(model_err)), "p90": float(np.quantile(model_err, 0.9)),
                           "baseline_median": float(np.median(base_err)),
                           "baseline_p90": float(np.quantile(base_err, 0.9)), "held_out": len(x) - n}
    return out


def seconds_per_proposal(sizes: list[int]) -> dict:
    import optuna

    from nas import objectives
    from nas.engine.known_cost import CostContext
    from nas.engine.settings import make_sampler
    from search_spaces import SearchSpace
    from search_spaces.extremes import count_params

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    space = SearchSpace().for_image(16)
    bounds = objectives.HVBounds(((0.1, 1.0), (5_000, 2_000_000), (100, 100_000)))
    out = {}
    for n in sizes:
        base = optuna.create_study(directions=["maximize", "minimize", "maximize"],
                                   sampler=optuna.samplers.RandomSampler(seed=n))
        for _ in range(n):
            t = base.ask()
            arch = space.suggest(t)
            params = count_params(arch, 16, 1, 10)
            t.set_user_attr("arch", arch.to_dict())
            base.tell(t, [0.5 + 0.05 * math.log10(params) + 0.02 * ((t.number * 7919) % 11) / 11, params,
                          3e8 / (params * (16 // arch.patch_size) ** 2)])
        row = {}
        for name in ("knowncost", "gp"):
            context = CostContext(space, 16, 1, 10, bounds) if name == "knowncost" else None
            study = optuna.create_study(directions=["maximize", "minimize", "maximize"],
                                        sampler=make_sampler(name, 0, n, context=context))
            study.add_trials(base.trials)
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                t = study.ask()
                space.suggest(t)
                times.append(time.perf_counter() - t0)
                study.tell(t, state=optuna.trial.TrialState.FAIL)
            row[name] = statistics.median(times)
            print(f"  {n} trials: {name} {row[name]:.2f} s per proposal", file=sys.stderr)
        out[n] = row
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("predictor", "proposal", "both"), default="both")
    p.add_argument("--trials", default="100,1000")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.part in ("predictor", "both"):
        result["predictor"] = predictor_error()
        print(f"timing protocol's own spread on the table's designs (median): "
              f"{result['predictor']['protocol_spread_median']:.1%}")
        for n, r in result["predictor"]["sizes"].items():
            print(f"throughput predictor, {n} designs timed, {r['held_out']} held out: median error "
                  f"{r['median']:.1%} (p90 {r['p90']:.1%}); params-only log-log line {r['baseline_median']:.1%} "
                  f"(p90 {r['baseline_p90']:.1%})")
    if args.part in ("proposal", "both"):
        result["proposal"] = seconds_per_proposal([int(v) for v in args.trials.split(",")])
        for n, r in result["proposal"].items():
            print(f"seconds per proposal at {n} trials: knowncost {r['knowncost']:.2f}, GPSampler {r['gp']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
