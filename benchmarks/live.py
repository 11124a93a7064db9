"""Live confirmation of the simulator: real searches at the table's scale, each front scored by the truth.

    python -m benchmarks.live --method default --seeds 0 1 2    # three real searches with vitnas' defaults
    python -m benchmarks.live --method random --seeds 0 1 2     # three full-budget random searches
    python -m benchmarks.live --report                          # each run beside the simulator's quartiles
    python -m benchmarks.live --rescore                         # score the stored runs again (the table changed)

:mod:`benchmarks.simulate` replays searches over the recorded table; this script checks that replay against
the real thing. Each run is a real ``vitnas search`` (:func:`nas.run_search`: Ray Tune trials over an
Optuna study in SQLite, one trial at a time) on Fashion-MNIST at the table's protocol (16 px, the same
2,000 training and 1,000 validation images, the same trainer), with the simulated method's settings and its
budget ``B`` as ``epoch_budget``. Its front (:func:`nas.study.pareto_front`, what the search observed) is
then scored as the simulator scores a replayed front: every member by its **truth**, the mean final
accuracy of two full-budget runs (27 epochs, seeds 0 and 1), and the table's params and throughput. A front
member the table holds is looked up; one it does not is trained and timed here under the table's protocol,
and its rows are kept in ``benchmarks/results/live_truth_fashion_mnist.jsonl`` (the table's format), so a
design is trained for its truth once.

Results go to ``benchmarks/results/live_fashion_mnist.json``, one entry per method and seed; a run already
there is not run again. The goal (docs/benchmarks.md): the live runs land inside the simulator's
interquartile range of truth hypervolume at ``B``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import simulate as sim  # noqa: E402
from benchmarks import table as tbl  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_OUT = RESULTS / "live_fashion_mnist.json"
DEFAULT_TRUTH = RESULTS / "live_truth_fashion_mnist.jsonl"
DEFAULT_SIM = RESULTS / "simulate_fashion_mnist.json"


def search_config(method: sim.Method, table: sim.Table, seed: int, budget: int, workdir: Path, data_dir: str):
    """The :class:`nas.SearchConfig` of a real search that does what the simulator replays for ``method``.

    Raises:
        ValueError: a method the live search cannot run (Ray's Hyperband, Syne Tune's MOASHA, a retrain, a
            sampler setting the search does not take, such as the former default's).
    """
    from nas.engine.search import SearchConfig

    if method.scheduler in ("hyperband", "moasha") or method.retrain or method.sampler_attrs or (
            method.promote_at and not (method.resume and method.proxy_epochs == table.proxy_epochs // 2)):
        raise ValueError(f"method: {method.name} is simulated only; live: a method of vitnas' own settings "
                         "(promotion: paused runs resumed at half the proxy's epochs)")
    proto = table.protocol
    name = f"live-{method.name}-s{seed}"
    if method.resume:  # the search's promotion: the main proxy's runs pause at its half, then resume
        epochs = table.proxy_epochs
    else:
        epochs = (method.proxy_epochs or table.proxy_epochs) if method.fidelity == "proxy" else table.epochs
    return SearchConfig(
        study=name, trials=100_000, epoch_budget=budget, seed=seed, epochs=epochs,
        promote_at=method.promote_at, promote_fronts=method.promote_fronts, promote_gate=method.promote_gate,
        dataset="fashion_mnist", data_dir=data_dir, img_size=int(proto["img_size"]),
        train_subset=int(proto["train_subset"]), val_subset=int(proto["val_subset"]),
        storage=f"sqlite:///{workdir / f'{name}.db'}", run_dir=str(workdir / "runs"),
        sampler=method.sampler, presets=method.presets or method.sampler == "knowncost",
        early_stopping=method.scheduler != "none", scheduler="curve" if method.curve else
        ("asha" if method.scheduler == "accuracy" else "pareto"),
        grace_period=method.grace, eta=method.eta, max_concurrent=1)


class Truth:
    """The truth of a design: the table's where it holds the design, else two full-budget runs recorded
    here under the table's protocol (and kept in ``path`` for the next run)."""

    def __init__(self, table: sim.Table, path: Path, data_dir: str) -> None:
        self.table, self.path, self.data_dir = table, path, data_dir
        self.by_key = {d.key: d for d in table.designs}
        self._data = None

    def _rows(self, key: str) -> list[dict]:
        proto = self.table.protocol
        return [r for r in tbl.read_rows(self.path) if r["key"] == key and r.get("protocol") == proto]

    def of(self, arch: Any) -> tuple[float, float, float, bool]:
        """``(truth, params, throughput, in_table)`` of an :class:`search_spaces.Architecture`."""
        key = arch.canonical_key(int(self.table.protocol["img_size"]))
        if key in self.by_key:
            d = self.by_key[key]
            return d.truth, d.params, d.throughput, True
        have = {(r["kind"], r.get("seed", 0)) for r in self._rows(key)}
        for kind, seed in [("cost", 0)] + [("full", s) for s in range(2)]:
            if (kind, seed) in have:
                continue
            data = self._load()
            base = {"key": key, "arch": arch.to_dict(), "preset": "", "kind": kind, "seed": seed,
                    "protocol": self.table.protocol, "recorded": time.strftime("%Y-%m-%dT%H:%M:%S")}
            if kind == "cost":
                row = {**base, **tbl._cost(arch, data)}
            else:
                row = {**base, "epochs": self.table.epochs, **tbl._train(arch, data, self.table.epochs, seed)}
                print(f"    truth of {arch.describe()}: seed {seed} {row['final']} in {row['seconds']:.0f} s",
                      file=sys.stderr, flush=True)
            tbl._append(self.path, row)
        rows = self._rows(key)
        cost = next(r for r in rows if r["kind"] == "cost")
        finals = [r["final"] for r in rows if r["kind"] == "full" and r.get("final") is not None]
        truth = statistics.fmean(finals) if finals else 0.0
        return truth, float(cost["params"]), float(cost["throughput_ratio"]) * self.table.reference_img_s, False

    def _load(self):
        if self._data is None:
            from trainers import load_dataset

            proto = self.table.protocol
            self._data = load_dataset("fashion_mnist", self.data_dir, train_subset=int(proto["train_subset"]),
                                      val_subset=int(proto["val_subset"]), img_size=int(proto["img_size"]))
        return self._data


def _table_only(table: sim.Table):
    """Make a ``knowncost`` search's candidates the table's designs (what the simulator's replay chooses
    from), by wrapping the search's cost context; returns the undo. The sampler's first proposal is then the
    table's smallest design, as in the replay, and its random start-up proposal a table design too."""
    from nas.engine import search
    from search_spaces import SearchSpace
    from search_spaces.genes import Architecture

    space = SearchSpace().for_image(int(table.protocol["img_size"]))
    candidates = tuple(space.to_params(Architecture.from_dict(d.arch)) for d in table.designs)
    original = search._cost_context

    def restricted(config, driver, meta):
        ctx = original(config, driver, meta)
        return None if ctx is None else dataclasses.replace(ctx, candidates=candidates)

    search._cost_context = restricted
    return lambda: setattr(search, "_cost_context", original)


def run_one(method: sim.Method, seed: int, table: sim.Table, budget: int, workdir: Path, truth: Truth,
            data_dir: str, table_only: bool = False) -> dict[str, Any]:
    """One real search and its front scored by the truth (a dict for the results file). ``table_only``: a
    ``knowncost`` search proposes among the table's designs only, as the replay does."""
    from nas.engine.search import run_search

    started = time.time()
    cfg = search_config(method, table, seed, budget, workdir, data_dir)
    if table_only:
        cfg = dataclasses.replace(cfg, study=cfg.study + "-table", storage=cfg.storage.replace(".db", "-table.db"))
    undo = _table_only(table) if table_only else (lambda: None)
    try:
        run_search(cfg)
    finally:
        undo()
    wall = time.time() - started
    scored = score(cfg.study, cfg.storage, table, truth)
    return {"method": method.name + (" (table only)" if table_only else ""), "seed": seed,
            "budget_epochs": budget, "wall_s": round(wall, 1), **scored, "designs": len(table.designs),
            "study": cfg.study, "storage": cfg.storage}


def rescore(out: dict[str, Any], table: sim.Table, truth: Truth, workdir: Path) -> list[str]:
    """Score every stored run's front again by the truth (after the table or its truth changed), reading
    its study from ``workdir``; returns the keys of the runs whose study is gone (left as they were)."""
    missing = []
    for key, run in out["runs"].items():
        name, seed, _ = key.split("/")
        method, _, where = name.partition("@")
        study = run.get("study") or f"live-{method}-s{seed}" + ("-table" if where == "table" else "")
        storage = run.get("storage") or f"sqlite:///{workdir / f'{study}.db'}"
        if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).exists():
            missing.append(key)
            continue
        run.update(score(study, storage, table, truth), study=study, storage=storage,
                   designs=len(table.designs))
    return missing


def score(study_name: str, storage: str, table: sim.Table, truth: Truth) -> dict[str, Any]:
    """A finished search's front (:func:`nas.study.pareto_front`, what it observed) scored by the truth:
    ``epochs``, ``trials``, ``truth_hv`` and the ``front`` members (each with its truth, the table's params and
    throughput, and its canonical ``key``)."""
    import optuna

    from nas import objectives
    from nas.study import pareto_front, trained_epochs
    from search_spaces import Architecture

    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    epochs = sum(trained_epochs(t.state, t.user_attrs) for t in trials)
    members = []
    for t in pareto_front(study):
        arch = Architecture.from_dict(t.user_attrs["arch"])
        acc, params, thr, known = truth.of(arch)
        members.append({"trial": t.number, "design": arch.describe(), "key": arch.canonical_key(
            int(table.protocol["img_size"])), "observed_accuracy": t.values[0], "observed_throughput": t.values[2],
            "truth": acc, "params": params, "throughput": thr, "in_table": known})
    hv = objectives.normalised_hypervolume([[m["truth"], m["params"], m["throughput"]] for m in members],
                                           table.bounds())
    return {"epochs": epochs, "trials": len(trials), "truth_hv": hv, "front": members}


def by_wider_truth(out: dict[str, Any], table: sim.Table) -> dict[str, Any]:
    """The stored runs whose whole front is in ``table`` (the ``--table-only`` runs), each front scored again
    by ``table``'s truth (one loaded with further seeds, ``Table.load(..., truth_from)``); runs with a design
    outside the table are left out, as their truth has only the two seeds recorded here."""
    from nas import objectives

    truth = {d.key: d.truth for d in table.designs}
    runs = {}
    for key, run in out["runs"].items():
        if run["front"] and all(m["key"] in truth for m in run["front"]):
            hv = objectives.normalised_hypervolume([[truth[m["key"]], m["params"], m["throughput"]]
                                                    for m in run["front"]], table.bounds())
            runs[key] = {**run, "truth_hv": hv}
    return {"runs": runs}


def percentile(value: float, replays: list[float]) -> float:
    """Where ``value`` falls among the replays, 0-100: the share of replays below it, ties counted half
    (a faithful simulator puts live runs anywhere in 0-100 with equal chance; half inside the quartiles)."""
    below = sum(r < value for r in replays) + 0.5 * sum(r == value for r in replays)
    return 100 * below / len(replays)


def report(out: dict[str, Any], sim_out: dict[str, Any] | None) -> str:
    """Each method's live truth HVs beside the simulator's quartiles at ``B`` (a markdown table)."""
    lines = ["| method | live truth HV at B (per seed) | live median | simulator at B: median (quartiles) | "
             "inside the quartiles | percentile among the replays |", "|---|---|---:|---:|---:|---|"]
    by_method: dict[str, list[dict]] = {}
    for run in out["runs"].values():
        by_method.setdefault(run["method"], []).append(run)
    for name, runs in by_method.items():
        hvs = [r["truth_hv"] for r in sorted(runs, key=lambda r: r["seed"])]
        q, finals, simulated = None, None, name.removesuffix(" (table only)")
        if sim_out and simulated in sim_out.get("methods", {}) and sim_out.get("budget_epochs") == runs[0]["budget_epochs"]:
            q = sim_out["methods"][simulated]["hv"]["1B"]
            finals = sim_out["methods"][simulated].get("final_hv")
        inside = "—" if q is None else f"{sum(q[0] <= h <= q[2] for h in hvs)} of {len(hvs)}"
        sim_cell = "—" if q is None else f"{q[1]:.3f} ({q[0]:.3f}-{q[2]:.3f})"
        ranks = "—" if not finals else ", ".join(f"{percentile(h, finals):.0f}" for h in hvs)
        lines.append(f"| {name} | {', '.join(f'{h:.3f}' for h in hvs)} | {statistics.median(hvs):.3f} | "
                     f"{sim_cell} | {inside} | {ranks} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="default", help="a simulator method of vitnas' own settings, or 'default'")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", type=int, default=None, help="epochs (default: the simulator's B for the table)")
    p.add_argument("--table", type=Path, default=sim.DEFAULT_TABLE)
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--workdir", type=Path, default=Path("/tmp/vitnas-live"), help="the studies and run folders")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--truth", type=Path, default=DEFAULT_TRUTH)
    p.add_argument("--simulated", type=Path, default=DEFAULT_SIM, help="the simulator's --json output")
    p.add_argument("--table-only", action="store_true",
                   help="a knowncost search proposes among the table's designs only (as the replay does)")
    p.add_argument("--report", action="store_true", help="print the runs beside the simulator and exit")
    p.add_argument("--truth-from", type=Path, action="append", default=[],
                   help="with --report: score the table-only runs' fronts by a truth over further full-budget seeds "
                        "(simulate --truth-from; pass its replays as --simulated)")
    p.add_argument("--rescore", action="store_true",
                   help="score every stored run's front again by the table's truth (studies read from --workdir)")
    args = p.parse_args(argv)
    out = json.loads(args.out.read_text()) if args.out.exists() else {"runs": {}}
    sim_out = json.loads(args.simulated.read_text()) if args.simulated.exists() else None
    if args.truth_from and not args.report:
        p.error("truth-from: only with --report (it scores the stored table-only runs again; nothing is run)")
    if args.report:
        if args.truth_from:
            out = by_wider_truth(out, sim.Table.load(args.table, tuple(args.truth_from)))
        print(report(out, sim_out))
        return 0
    if args.rescore:
        table = sim.Table.load(args.table)
        missing = rescore(out, table, Truth(table, args.truth, args.data_dir), args.workdir)
        args.out.write_text(json.dumps(out, indent=1))
        for key in missing:
            print(f"{key}: study not found in {args.workdir}; left as scored before", file=sys.stderr)
        print(report(out, sim_out))
        return 0
    name = sim.DEFAULT_METHOD if args.method == "default" else args.method
    if name not in sim.METHODS:
        p.error(f"method: unknown value {args.method!r}; allowed: {', '.join(sim.METHODS)}, default")
    if args.table_only and sim.METHODS[name].sampler != "knowncost":
        p.error(f"table-only: restricts a knowncost search; {name} samples with {sim.METHODS[name].sampler}")
    import optuna
    import torch

    torch.set_num_threads(1)  # the truth runs on one core, as the table was recorded (each trial has its own)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    table = sim.Table.load(args.table)
    budget = args.budget or sim.default_budget(table)
    try:
        search_config(sim.METHODS[name], table, 0, budget, args.workdir, args.data_dir)
    except ValueError as e:
        p.error(str(e))
    args.workdir.mkdir(parents=True, exist_ok=True)
    truth = Truth(table, args.truth, args.data_dir)
    for seed in args.seeds:
        key = f"{name}{'@table' if args.table_only else ''}/{seed}/{budget}"
        if key in out["runs"]:
            print(f"{key}: done before (truth HV {out['runs'][key]['truth_hv']:.4f})")
            continue
        run = run_one(sim.METHODS[name], seed, table, budget, args.workdir, truth, args.data_dir, args.table_only)
        out["runs"][key] = run
        args.out.write_text(json.dumps(out, indent=1))
        print(f"{key}: {run['trials']} trials, {run['epochs']} epochs, {run['wall_s']:.0f} s; front of "
              f"{len(run['front'])} ({sum(m['in_table'] for m in run['front'])} in the table); truth HV "
              f"{run['truth_hv']:.4f}")
    print(report(out, sim_out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
