"""Replay a search over the recorded benchmark table and score it by what full training says.

    python -m benchmarks.simulate --method default --seeds 30      # the truth-HV curve of the default
    python -m benchmarks.simulate --method random --seeds 30
    python -m benchmarks.simulate --method all --seeds 30 --json benchmarks/results/simulate_fashion_mnist.json
    python -m benchmarks.simulate --list                           # the methods and what each one is
    python -m benchmarks.simulate --from-json F --paired default   # every method against the default, seed by seed

Search methods in this field are compared on recorded tables (NAS-Bench-201, HPOBench, YAHPO, Syne Tune's
blackbox repository and simulator): every design of a pool is trained once with its full learning curve, and
any sampler and scheduler is then replayed over the pool in seconds, for many seeds, charging the recorded
epochs and seconds. This module replays vitnas' own samplers and schedulers over vitnas' own table
(:mod:`benchmarks.table`, Fashion-MNIST at 16 px).

What is real and what is simulated:

- **the samplers are the real ones** (:func:`nas.engine.settings.make_sampler`: Optuna's RandomSampler,
  GPSampler, NSGA-II, multi-objective TPE, and vitnas' ``auto``) asking through the real search space
  (:meth:`search_spaces.SearchSpace.suggest`). Each proposal is snapped to the nearest table design not yet
  used (fewest differing Optuna parameters, ties broken at random); the proposal is told FAIL and the snapped
  design is added to the study with its own parameters, so the sampler learns what was trained;
- **the schedulers are the real ones**, driven through their Ray Tune hooks (``on_trial_add`` and
  ``on_trial_result`` with per-epoch results, as Ray Tune calls them): vitnas' ``ParetoASHA`` and
  ``AccuracyASHA``, Ray's ``AsyncHyperBandScheduler`` with three brackets, Syne Tune's MOASHA
  (:mod:`benchmarks._moasha`, when syne-tune is installed);
- **training is the table**: a trial of design ``d`` under simulation seed ``s`` reads one of ``d``'s two
  recorded full-budget runs (chosen at random by ``s``), epoch by epoch, or one of its recorded 6-epoch proxy
  runs, drawn per design and ``s`` among the table's seed and the proxy seeds recorded beside it
  (``TABLE_proxy_seed*.jsonl``; ``--one-proxy-seed`` replays the table's own run alone), as each trial of a
  real search trains under its own seed (the 3-epoch run, one seed, for a method with ``proxy_epochs=3``);
  it is charged the epochs it ran and their recorded seconds. Trials run one at a time (one worker).

**The truth of a design** is its mean final accuracy over the two recorded full-budget seeds. A method's front
is chosen by what the method observed (the accuracy of the run it read, the proxy's where it ran the proxy,
the exact params and throughput), and then **every front member is scored by its truth**: the truth
hypervolume is :func:`nas.objectives.normalised_hypervolume` of ``(truth, params, throughput)`` of the
front members, with bounds spanning the table. A method that trusts a lucky seed or a fast starter is scored
by what its picks really reach.

The budget ``B`` is in epochs: by default ``27 x max(4, designs // 20)``, the cost of full-budget random
search training a twentieth of the table. It is kept small against the table because the space holds millions
of designs and the table only a sample: a method that exhausts the sample (a 6-epoch proxy with early
stopping can) looks better than it would on the space; at a tenth, the proxy methods tried all of a
48-design table. Curves are read at ``B/4, B/2, 3B/4, B``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_TABLE = Path(__file__).resolve().parent / "results" / "table_fashion_mnist.jsonl"


# ---------------------------------------------------------------------------------------------- the table
@dataclass
class Design:
    """One table design: genes, costs at the deployment shape, recorded runs and the truth."""

    key: str
    arch: dict
    preset: str
    params: float
    throughput: float
    full: dict[int, list[dict]]  # seed -> per-epoch {"epoch", "val_accuracy", "train_loss", "seconds"}
    proxy: list[dict]
    truth: float = 0.0
    optuna_params: dict = field(default_factory=dict)
    #: shorter proxies recorded besides the main one (``benchmarks.table --extra-proxy-epochs``): epochs -> curve
    short_proxies: dict[int, list[dict]] = field(default_factory=dict)
    #: the main proxy under every recorded seed (``Table.load(proxy_from=...)``): seed -> curve; ``proxy`` is one of them
    proxies: dict[int, list[dict]] = field(default_factory=dict)

    def costs(self) -> list[float]:
        return [self.params, self.throughput]

    def proxy_run(self, epochs: int) -> list[dict]:
        """The recorded proxy run of ``epochs`` epochs (the main proxy or a shorter one).

        Raises:
            KeyError: no proxy of that length was recorded for this design.
        """
        return self.proxy if epochs == len(self.proxy) else self.short_proxies[epochs]


@dataclass
class Table:
    """The designs of a recorded table that are complete (costs, both full-budget seeds and the proxy)."""

    designs: list[Design]
    protocol: dict
    epochs: int
    proxy_epochs: int
    reference_img_s: float = 0.0  # the one reference speed every design's throughput ratio is scaled by
    truth_seeds: int = 2  # full-budget seeds the truth is the mean of
    proxy_seeds: int = 1  # seeds of the main proxy a replay draws from (one per design and replay)

    @classmethod
    def load(cls, path: Path = DEFAULT_TABLE, truth_from: tuple[Path, ...] = (),
             proxy_from: tuple[Path, ...] = ()) -> Table:
        """Read the JSON lines of :mod:`benchmarks.table`; designs missing a run are left out.

        ``truth_from``: tables of further full-budget seeds of the same designs (``benchmarks.table record
        --designs-from ... --kinds full --full-seeds 2``). Their final accuracies join the truth's mean and
        nothing else: a replay observes the same runs and spends the same epochs, only its score changes.

        ``proxy_from``: tables of further seeds of the main proxy (``benchmarks.table record --kinds proxy
        --proxy-seeds 1``). A replay then trains each design under one of the recorded proxy seeds, drawn per
        design and replay seed (:func:`replay`), as each trial of a real search trains under its own seed; with
        the recorded seed alone every replay sees the same proxy accuracy of a design, and its spread over
        replay seeds misses that noise.

        A design's throughput is its measured speed relative to the reference model (``throughput_ratio``)
        times **one** reference speed for the whole table, the median of the reference timings of its rows:
        the search's convention (ratio times a reference speed calibrated once per machine). Each row's own
        ``throughput`` multiplies by the reference timed beside that design, which varies 2x over the table
        (5,900-12,700 img/s, the machine shared by two recorders) and would add that noise to the truth.

        Raises:
            ValueError: the file holds no complete design; a ``truth_from`` or ``proxy_from`` table holds a failed
                run, or further seeds for only some of the designs.
        """
        from benchmarks.table import read_rows

        by_key: dict[str, dict[str, Any]] = {}
        protocol: dict = {}
        for row in read_rows(Path(path)):
            if row.get("error"):
                continue
            d = by_key.setdefault(row["key"], {"arch": row["arch"], "preset": row.get("preset", ""), "full": {}})
            protocol = row.get("protocol") or protocol
            if row["kind"] == "cost":
                d["params"], d["ratio"] = float(row["params"]), float(row["throughput_ratio"])
                d["reference"] = float(row["throughput_reference_img_s"])
            elif row["kind"] == "full":
                d["full"][int(row["seed"])] = row["curve"]
            elif row["kind"] == "proxy" and int(row.get("epochs", len(row["curve"]))) == int(
                    (row.get("protocol") or {}).get("proxy_epochs", len(row["curve"]))):
                d["proxy"] = row["curve"]
            elif row["kind"] == "proxy":  # a shorter proxy (its own cosine schedule), kept beside the main one
                d.setdefault("short", {})[int(row["epochs"])] = row["curve"]
        complete = {k: d for k, d in by_key.items() if "params" in d and "proxy" in d and len(d["full"]) >= 2}
        if not complete:
            raise ValueError(f"table: {path} holds no complete design (cost, two full-budget runs and the proxy)")
        reference = statistics.median(d["reference"] for d in complete.values())
        extra: dict[str, dict[int, float]] = defaultdict(dict)  # key -> seed -> final accuracy, for the truth only
        for other in truth_from:
            for row in read_rows(Path(other)):
                if row["kind"] == "full" and row.get("protocol") == protocol and row["key"] in complete:
                    if row.get("error") or row.get("final") is None:
                        raise ValueError(f"truth_from: {other} holds a failed run of a design the table trained")
                    if int(row["seed"]) not in complete[row["key"]]["full"]:
                        extra[row["key"]][int(row["seed"])] = float(row["final"])
        proxies: dict[str, dict[int, list[dict]]] = defaultdict(dict)  # key -> further proxy seed -> curve
        for other in proxy_from:
            for row in read_rows(Path(other)):
                if (row["kind"] == "proxy" and row.get("protocol") == protocol and row["key"] in complete
                        and int(row.get("epochs", 0)) == len(complete[row["key"]]["proxy"])):
                    if row.get("error") or not row.get("curve"):
                        raise ValueError(f"proxy_from: {other} holds a failed run of a design the table trained")
                    if int(row.get("seed", 0)) != 0:
                        proxies[row["key"]][int(row["seed"])] = row["curve"]
        if proxy_from:
            seeds = {tuple(sorted(v)) for v in proxies.values()}
            if len(proxies) != len(complete) or len(seeds) != 1:
                raise ValueError(f"proxy_from: the same further proxy seeds are needed for all {len(complete)} "
                                 f"designs; {len(proxies)} have some ({sorted(seeds)})")
        if truth_from:
            seeds = {tuple(sorted(v)) for v in extra.values()}
            if len(extra) != len(complete) or len(seeds) != 1:
                raise ValueError(f"truth_from: the same further seeds are needed for all {len(complete)} designs; "
                                 f"{len(extra)} have some ({sorted(seeds)})")
        designs = []
        for key, d in complete.items():
            full = {s: c for s, c in sorted(d["full"].items())}
            truth = statistics.fmean([*(c[-1]["val_accuracy"] for c in full.values()), *extra[key].values()])
            designs.append(Design(key, d["arch"], d["preset"], d["params"], d["ratio"] * reference, full, d["proxy"],
                                  truth, short_proxies=dict(d.get("short", {})),
                                  proxies={0: d["proxy"], **proxies[key]}))
        epochs = len(next(iter(designs[0].full.values())))
        return cls(sorted(designs, key=lambda d: d.key), protocol, epochs, len(designs[0].proxy), reference,
                   len(designs[0].full) + len(extra[designs[0].key]), len(designs[0].proxies))

    def proxy_lengths(self) -> list[int]:
        """The proxy lengths (epochs) recorded for every design: the main proxy's and each complete shorter one."""
        short = set.intersection(*(set(d.short_proxies) for d in self.designs)) if self.designs else set()
        return sorted({self.proxy_epochs, *short})

    def bounds(self):
        """Hypervolume bounds spanning the table: every observed and true accuracy, params and throughput."""
        from nas import objectives

        accs = [d.truth for d in self.designs] + [c[-1]["val_accuracy"] for d in self.designs for c in
                                                  (*d.full.values(), d.proxy)]
        lo = math.floor(min(accs) * 100) / 100
        return objectives.HVBounds(((lo, 1.0),
                                    (min(d.params for d in self.designs), max(d.params for d in self.designs)),
                                    (min(d.throughput for d in self.designs),
                                     max(d.throughput for d in self.designs))))

    def true_front(self, max_params: float | None = None) -> set[str]:
        """Keys of the designs that are Pareto-optimal by truth over the whole table (over its designs within
        ``max_params``, when given)."""
        pool = [d for d in self.designs if max_params is None or d.params <= max_params]
        rows = [[d.truth, *d.costs()] for d in pool]
        return {pool[i].key for i in _front_indices(rows)}


def _front_indices(rows: list[list[float]]) -> list[int]:
    """Indices of the non-dominated rows of ``(accuracy, params, throughput)`` (:mod:`nas.objectives`' sort)."""
    from nas import objectives

    if not rows:
        return []
    losses = [[-r[0], r[1], -r[2]] for r in rows]
    return [int(i) for i in objectives.nondominated_sort(losses)[0]]


# ---------------------------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class Method:
    """A search method as the simulator replays it.

    ``sampler``: a :func:`nas.engine.settings.make_sampler` name; ``scheduler``: ``none``, ``pareto``
    (vitnas' ParetoASHA), ``accuracy`` (vitnas' AccuracyASHA), ``hyperband`` (Ray's AsyncHyperBandScheduler,
    3 brackets) or ``moasha`` (Syne Tune's); ``fidelity``: ``full`` (the 27-epoch runs) or ``proxy`` (the
    6-epoch proxy runs); ``proxy_epochs``: with ``fidelity="proxy"``, which recorded proxy (None: the table's
    main one, 6 epochs; 3: the 3-epoch proxy, its cosine schedule sized to 3 epochs); ``retrain``: after
    ``1 - retrain`` of the budget on the proxy, the proxy front is
    retrained under the full protocol, most accurate first, and the front is then chosen by those runs.
    """

    name: str
    sampler: str
    scheduler: str = "none"
    fidelity: str = "full"
    presets: bool = False
    grace: int = 1
    eta: int = 3
    retrain: float = 0.0
    proxy_epochs: int | None = None
    curve: bool = False  # ParetoASHA's learning-curve-aware stopping
    startup: int | None = None  # knowncost's random start-up proposals (None: make_sampler's rule)
    #: promotion at one synchronous rung: for this fraction of the search budget trials run ``proxy_epochs``
    #: epochs; then the Pareto front of those runs (``promote_fronts``) goes on to the main proxy (most accurate first),
    #: the other first-stage designs count as stopped at that rung, and the search goes on with the main proxy
    #: (0: no promotion)
    promote_at: float = 0.0
    #: with ``promote_at``: the first stage runs the first ``proxy_epochs`` epochs of the main proxy (its cosine
    #: schedule sized to the main length) and promotion resumes them, charging the epochs left (ASHA's pause and
    #: resume); without it, the first stage is the recorded shorter proxy and promotion trains from scratch
    resume: bool = False
    #: with ``promote_at``: how many of the rung's non-dominated fronts are promoted (1: its Pareto front)
    promote_fronts: int = 1
    #: with ``promote_at``: once those fronts have resumed, each other first-stage design resumes unless even this
    #: quantile of its predicted accuracy is dominated (``SearchConfig.promote_gate``; 0: they stay stopped)
    promote_gate: float = 0.0
    #: with ``promote_gate``: the designs the gate lets through are not resumed at once; before each new
    #: proposal, the one whose predicted accuracy has the largest expected hypervolume improvement per epoch
    #: left resumes if that rate is at least the sampler's best candidate's EHVI per epoch of the main proxy
    #: (a freeze-thaw choice, arXiv 1406.3896); the others wait, and those left when the budget ends count as stopped
    thaw: bool = False
    #: KnownCostSampler attributes set after make_sampler (e.g. the former default's ``calibrate=False``)
    sampler_attrs: tuple[tuple[str, Any], ...] = ()
    about: str = ""


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("random", "random", about="random search, every design trained the full 27 epochs"),
    Method("gp", "gp", about="Optuna's GPSampler (log EHVI), full budget"),
    Method("nsga2", "nsga2", about="Optuna's NSGA-II, full budget"),
    Method("tpe", "tpe", about="Optuna's multi-objective TPE, full budget"),
    Method("asha", "random", "accuracy", about="random designs, ASHA on accuracy (grace 1, eta 3)"),
    Method("hyperband", "random", "hyperband", about="random designs, Ray's async Hyperband: 3 brackets"),
    Method("moasha", "random", "moasha", about="random designs, Syne Tune's MOASHA (grace 1, eta 3)"),
    Method("pareto_asha", "random", "pareto", about="random designs, vitnas' ParetoASHA (grace 1, eta 3)"),
    Method("today", "auto", "pareto", "proxy", presets=True,
           about="vitnas' default before the table: presets, auto sampler, ParetoASHA on the 6-epoch proxy"),
    Method("today_retrain", "auto", "pareto", "proxy", presets=True, retrain=0.5,
           about="today's default on half the budget, then vitnas retrain of its front (27 epochs, 1 seed)"),
    Method("auto_pareto", "auto", "pareto", about="auto sampler (GPSampler, then NSGA-II), ParetoASHA, full"),
    Method("today_no_presets", "auto", "pareto", "proxy", about="today's default with --no-presets"),
    Method("today_curve", "auto", "pareto", "proxy", presets=True, curve=True,
           about="today's default with curve-aware ParetoASHA (--scheduler curve)"),
    Method("knowncost_proxy", "knowncost", "pareto", "proxy",
           about="known-cost EHVI (presets among its candidates), ParetoASHA on the 6-epoch proxy"),
    Method("knowncost_proxy_retrain", "knowncost", "pareto", "proxy", retrain=0.5,
           about="knowncost_proxy on half the budget, then vitnas retrain of its front (27 epochs, 1 seed)"),
    Method("knowncost_proxy_curve", "knowncost", "pareto", "proxy", curve=True,
           about="known-cost EHVI, curve-aware ParetoASHA on the 6-epoch proxy"),
    Method("knowncost_proxy_curve_s8", "knowncost", "pareto", "proxy", curve=True, startup=8,
           about="the default with 8 start-up proposals (the smallest, then random; the rule of min(8, trials // 3))"),
    Method("knowncost_proxy_curve_tree_spread", "knowncost", "pareto", "proxy", curve=True,
           sampler_attrs=(("calibrate", False), ("smallest_first", False)),
           about="the former default: accuracy spread over trees (floor 0.01), 2 random start-up proposals"),
    Method("knowncost_proxy3_curve", "knowncost", "pareto", "proxy", curve=True, proxy_epochs=3,
           about="the default on the 3-epoch proxy (--epochs 3): twice the designs for the same epochs"),
    Method("knowncost_proxy3", "knowncost", "pareto", "proxy", proxy_epochs=3,
           about="known-cost EHVI, ParetoASHA (rank rule, rung 1) on the 3-epoch proxy"),
    Method("knowncost_proxy3_nostop", "knowncost", "none", "proxy", proxy_epochs=3,
           about="known-cost EHVI on the 3-epoch proxy, no early stopping"),
    Method("knowncost_promote_restart", "knowncost", "pareto", "proxy", curve=True, proxy_epochs=3, promote_at=0.25,
           about="the 3-epoch proxy for B/4, then its Pareto front retrained on the 6-epoch proxy, then 6 epochs"),
    Method("knowncost_promote_resume", "knowncost", "pareto", "proxy", curve=True, proxy_epochs=3, promote_at=0.25,
           resume=True, about="6-epoch runs paused at epoch 3 for B/4, then their Pareto front resumed to 6, then 6"),
    Method("knowncost_promote_resume_2f", "knowncost", "pareto", "proxy", curve=True, proxy_epochs=3,
           promote_at=0.25, resume=True, promote_fronts=2,
           about="knowncost_promote_resume promoting the rung's first two non-dominated fronts"),
    Method("knowncost_promote_resume_3f", "knowncost", "pareto", "proxy", curve=True, proxy_epochs=3,
           promote_at=0.25, resume=True, promote_fronts=3,
           about="knowncost_promote_resume promoting the rung's first three non-dominated fronts"),
    Method("knowncost_promote_gate", "knowncost", "pareto", "proxy", curve=True, proxy_epochs=3, promote_at=0.25,
           resume=True, promote_fronts=1, promote_gate=0.999,
           about="knowncost_promote_resume, then each other paused design resumed unless even the 0.999 quantile of "
                 "its predicted accuracy is dominated"),
    # the gated default promoting later: more designs paused at the rung, fewer epochs after it
    *(Method(f"knowncost_promote_gate_at{round(100 * at)}", "knowncost", "pareto", "proxy", curve=True, proxy_epochs=3,
             promote_at=at, resume=True, promote_fronts=1, promote_gate=0.999,
             about=f"knowncost_promote_gate promoting after {at:g} of the budget instead of 0.25") for at in (0.33, 0.5)),
    Method("knowncost_promote_thaw", "knowncost", "pareto", "proxy", curve=True, proxy_epochs=3, promote_at=0.25,
           resume=True, promote_fronts=1, promote_gate=0.999, thaw=True,
           about="knowncost_promote_gate whose let-through designs wait and resume one at a time when their expected "
                 "hypervolume improvement per epoch beats the sampler's best new design's"),
    Method("knowncost_proxy_g3", "knowncost", "pareto", "proxy", grace=3,
           about="known-cost EHVI, ParetoASHA's rank rule at one rung, epoch 3 of the 6-epoch proxy"),
    Method("knowncost", "knowncost", about="known-cost EHVI (params exact, throughput predicted), full budget"),
    Method("knowncost_pareto", "knowncost", "pareto", about="known-cost EHVI, ParetoASHA (grace 1, eta 3), full"),
    Method("pareto_curve", "random", "pareto", curve=True,
           about="random designs, ParetoASHA stopping only what even its optimistic predicted final is dominated"),
    Method("auto_pareto_curve", "auto", "pareto", curve=True, about="auto sampler, curve-aware ParetoASHA, full"),
    Method("knowncost_curve", "knowncost", "pareto", curve=True, about="known-cost EHVI, curve-aware ParetoASHA"),
    Method("gp_pareto_g3", "gp", "pareto", grace=3, about="GPSampler, ParetoASHA with grace 3 (rungs 3, 9)"),
    Method("auto_pareto_presets", "auto", "pareto", presets=True,
           about="auto sampler with the presets first, ParetoASHA, full budget"),
    # another --sampler under the search's other defaults (6-epoch proxy, curve rule), without and with promotion
    *(m for s in ("tpe", "nsga2", "gp") for m in (
        Method(f"{s}_proxy_curve", s, "pareto", "proxy", curve=True,
               about=f"--sampler {s} with the default's proxy and curve rule, no promotion (--promote-at 0)"),
        Method(f"{s}_promote_resume_3f", s, "pareto", "proxy", curve=True, proxy_epochs=3, promote_at=0.25,
               resume=True, promote_fronts=3, about=f"--sampler {s} with every other setting the default's"))),
)}
#: The method vitnas' defaults correspond to (the search's own default settings, replayed).
DEFAULT_METHOD = "knowncost_promote_gate_at33"


# ---------------------------------------------------------------------------------------------- replay
class _RayTrial:
    """What a Ray Tune scheduler reads of a trial: its id and config."""

    def __init__(self, trial_id: str, config: dict) -> None:
        self.trial_id, self.config = trial_id, config


def _scheduler(method: Method, max_t: int, bounds, seed: int):
    from ray.tune.schedulers import AsyncHyperBandScheduler

    from nas.engine.scheduler import ACCURACY_FIELD, EPOCH_FIELD, AccuracyASHA, ParetoASHA

    if method.scheduler == "none":
        return None
    if method.scheduler == "pareto":
        return ParetoASHA(grace_period=method.grace, eta=method.eta, max_t=max_t, bounds=bounds,
                          curve_aware=method.curve)
    if method.scheduler == "accuracy":
        return AccuracyASHA(grace_period=method.grace, eta=method.eta, max_t=max_t)
    if method.scheduler == "hyperband":
        return AsyncHyperBandScheduler(time_attr=EPOCH_FIELD, metric=ACCURACY_FIELD, mode="max", max_t=max_t,
                                       grace_period=method.grace, reduction_factor=method.eta, brackets=3,
                                       stop_last_trials=False)
    if method.scheduler == "moasha":
        from benchmarks._moasha import MOASHAScheduler

        return MOASHAScheduler(method.grace, method.eta, max_t, bounds=bounds, seed=seed)
    raise ValueError(f"scheduler: unknown value {method.scheduler!r}")


class Snapper:
    """Nearest unused table design to a proposal: fewest differing Optuna parameters, ties at random."""

    def __init__(self, table: Table, space, rng: random.Random) -> None:
        self.table, self.rng = table, rng
        self.unused = list(range(len(table.designs)))

    def take(self, params: dict) -> int:
        def distance(i: int) -> int:
            other = self.table.designs[i].optuna_params
            return sum(params.get(k) != other.get(k) for k in set(params) | set(other))

        best = min(distance(i) for i in self.unused)
        choice = self.rng.choice([i for i in self.unused if distance(i) == best])
        self.unused.remove(choice)
        return choice


@dataclass
class Run:
    """One replayed search: its trace (after each trial: epochs spent, seconds spent, truth hypervolume)."""

    method: str
    seed: int
    trace: list[tuple[int, float, float]]
    trials: int
    stopped: int
    optimal_seen: int
    optimal_stopped: int
    refused: int = 0  # proposals over the params budget, refused at 0 epochs
    wasted: int = 0  # epochs spent on designs an already-trained design beat on both costs and on truth
    order: list[str] = field(default_factory=list)  # the keys of the designs trained, in order
    promoted: list[str] = field(default_factory=list)  # the keys promoted at the rung (``Method.promote_at``)


def _truth_hv(front: list[Design], bounds) -> float:
    from nas import objectives

    return objectives.normalised_hypervolume([[d.truth, *d.costs()] for d in front], bounds)


def _observed_front(observed: dict[int, list[float]], table: Table) -> list[Design]:
    keys = list(observed)
    rows = [observed[k] for k in keys]
    return [table.designs[keys[i]] for i in _front_indices(rows)]


def replay(method: Method, table: Table, space, seed: int, budget: int, bounds, true_front: set[str],
           max_params: float | None = None, search_bounds=None) -> Run:
    """Replay ``method`` over ``table`` with simulation seed ``seed`` until ``budget`` epochs are spent (or
    the table runs out of unused designs). With ``max_params``, a design over it is refused before training
    as vitnas' driver refuses it (0 epochs; told to the sampler as complete and infeasible, one Optuna
    constraint), and feasible trials carry the constraint too. ``search_bounds``: the hypervolume bounds the
    sampler and the scheduler work with (default ``bounds``, the table's; :func:`study_bounds` gives those of
    a real search); the truth is always scored on ``bounds``. With a table of several proxy seeds
    (``Table.load(proxy_from=...)``) each design trains under one of them, drawn per design from ``seed``.
    Returns the :class:`Run`."""
    if table.proxy_seeds > 1:  # each design trains under one of the recorded proxy seeds, drawn per replay seed
        saved = {d.key: d.proxy for d in table.designs}
        for d in table.designs:
            d.proxy = d.proxies[random.Random(f"proxy/{seed}/{d.key}").choice(sorted(d.proxies))]
        try:
            return _replay(method, table, space, seed, budget, bounds, true_front, max_params, search_bounds)
        finally:
            for d in table.designs:
                d.proxy = saved[d.key]
    return _replay(method, table, space, seed, budget, bounds, true_front, max_params, search_bounds)


def _replay(method: Method, table: Table, space, seed: int, budget: int, bounds, true_front: set[str],
            max_params: float | None = None, search_bounds=None) -> Run:
    import numpy as np
    import optuna
    import torch
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial
    from ray.tune.schedulers import TrialScheduler

    from nas import objectives
    from nas.engine.scheduler import ACCURACY_FIELD, EPOCH_FIELD, HINT_KEY
    from nas.engine.settings import make_sampler

    rng = random.Random(seed)
    # Libraries that draw from the global generators are seeded too, so a replay is the same in any process and
    # after any other replay: Ray's AsyncHyperBandScheduler draws each trial's bracket from numpy's.
    np.random.seed(seed)
    torch.manual_seed(seed)
    sb = search_bounds or bounds
    max_t = (method.proxy_epochs or table.proxy_epochs) if method.fidelity == "proxy" else table.epochs
    if method.resume and not (method.promote_at and max_t < table.proxy_epochs):
        raise ValueError(f"method {method.name}: resume needs promote_at and proxy_epochs below the main proxy's "
                         f"{table.proxy_epochs}")
    if method.fidelity == "proxy" and max_t not in table.proxy_lengths() and not method.resume:
        raise ValueError(f"method {method.name}: proxy_epochs {max_t} is not recorded for every table design "
                         f"(recorded: {table.proxy_lengths()}; python -m benchmarks.table record adds it)")
    search_budget = budget * (1 - method.retrain)
    context = None
    if method.sampler == "knowncost":  # params exact, throughput predicted; the space restricted to the table
        from nas.engine.known_cost import CostContext

        context = CostContext(space, int(table.protocol.get("img_size", 16)), 1, 10, sb, max_params=max_params,
                              candidates=tuple(d.optuna_params for d in table.designs))
    sampler = make_sampler(method.sampler, seed, max(4, int(search_budget // max_t)), context=context)
    if method.startup is not None:
        sampler.n_startup_trials = method.startup
    for attr, value in method.sampler_attrs:
        setattr(sampler, attr, value)
    study = optuna.create_study(directions=[o.direction for o in objectives.spec()[:3]], sampler=sampler)
    choices = space.param_choices()
    dists = {k: CategoricalDistribution(v) for k, v in choices.items()}
    if method.presets:
        for d in table.designs:
            if d.preset:
                study.enqueue_trial(d.optuna_params)
    scheduler = _scheduler(method, max_t, sb, seed)
    snap = Snapper(table, space, rng)
    observed: dict[int, list[float]] = {}
    spent, seconds, trace, stopped_n, order, refused, wasted = 0, 0.0, [], 0, [], 0, 0
    seen_optimal, stopped_optimal = 0, 0
    promoted, promoted_keys, held = not method.promote_at, [], None
    while spent < search_budget and snap.unused:
        if not promoted and spent >= method.promote_at * search_budget:
            promoted, max_t = True, table.proxy_epochs
            if method.sampler != "knowncost":  # a sampler caches per study (NSGA-II its generations): a fresh one
                sampler = make_sampler(method.sampler, seed, max(4, int(search_budget // table.proxy_epochs)),
                                       context=context)
            study, spent, seconds, demoted, promoted_keys, held = _promote(
                study, observed, table, sampler, max_t, spent, seconds, search_budget, trace, bounds,
                method.proxy_epochs if method.resume else 0, method.promote_fronts, method.promote_gate, method.thaw)
            stopped_n += len(demoted)  # stopped at the rung: never trained further
            stopped_optimal += sum(table.designs[i].key in true_front for i in demoted)
            scheduler = _scheduler(method, max_t, sb, seed)
            continue
        if held and held["pending"]:
            i, dropped = _thaw_choice(held, observed, sampler, study, sb, max_t - method.proxy_epochs,
                                      max_t, method.promote_gate)
            stopped_n += len(dropped)
            stopped_optimal += sum(table.designs[j].key in true_front for j in dropped)
            if i is not None:  # the paused run resumes: the epochs left
                d = table.designs[i]
                run = d.proxy_run(max_t)
                spent += max_t - method.proxy_epochs
                seconds += sum(float(p["seconds"]) for p in run[method.proxy_epochs:])
                observed[i] = [run[-1]["val_accuracy"], d.params, d.throughput]
                held["pairs"].append((held["rung"][i][0], observed[i][0]))
                study.add_trial(create_trial(params=d.optuna_params, distributions=held["dists"][i], values=observed[i],
                                             user_attrs={"arch": d.arch}))
                promoted_keys.append(d.key)
                trace.append((spent, seconds, _truth_hv(_observed_front(observed, table), bounds)))
                continue
        asked = study.ask()
        space.suggest(asked)
        i = snap.take(asked.params)
        study.tell(asked, state=TrialState.FAIL)  # the proposal; the design trained is added below
        system_attrs = dict(study.get_trials(deepcopy=False)[-1].system_attrs)  # NSGA-II's generation, parents
        d = table.designs[i]
        dist = {k: dists[k] for k in d.optuna_params}
        if max_params is not None and d.params > max_params:  # refused before training, as the driver does
            refused += 1
            study.add_trial(create_trial(params=d.optuna_params, distributions=dist, system_attrs=system_attrs,
                                         user_attrs={"arch": d.arch, "refused": True},
                                         values=[sb.bounds[0][0], d.params, sb.bounds[2][0]],
                                         constraints={"max_params": d.params - max_params}))
            if refused > 500:
                break
            continue
        order.append(d.key)
        # a design an already-trained design beats on both costs and on truth: its epochs are wasted
        beaten = any(table.designs[j].truth >= d.truth and table.designs[j].params <= d.params
                     and table.designs[j].throughput >= d.throughput for j in observed)
        if method.resume and not promoted:
            curve = d.proxy[:max_t]
        else:
            curve = d.proxy_run(max_t) if method.fidelity == "proxy" else d.full[rng.choice(sorted(d.full))]
        rt = _RayTrial(str(asked.number), {HINT_KEY: {"params": d.params, "throughput": d.throughput}})
        if scheduler is not None and hasattr(scheduler, "on_trial_add"):
            scheduler.on_trial_add(None, rt)
        ran, stopped = 0, False
        for point in curve:
            if spent >= search_budget:
                break
            ran, spent, seconds = ran + 1, spent + 1, seconds + float(point["seconds"])
            if scheduler is not None and ran < max_t:
                verdict = scheduler.on_trial_result(None, rt, {
                    EPOCH_FIELD: ran, ACCURACY_FIELD: point["val_accuracy"], "train_loss": point["train_loss"],
                    "params": d.params, "throughput": d.throughput})
                if verdict == TrialScheduler.STOP:
                    stopped = True
                    break
        complete = ran == max_t and not stopped
        wasted += ran if beaten else 0
        constraints = {"max_params": d.params - max_params} if max_params is not None else None
        if complete:
            values = [curve[-1]["val_accuracy"], d.params, d.throughput]
            study.add_trial(create_trial(params=d.optuna_params, distributions=dist, values=values,
                                         system_attrs=system_attrs, user_attrs={"arch": d.arch},
                                         constraints=constraints))
            observed[i] = values
        else:
            stopped_n += stopped
            study.add_trial(create_trial(params=d.optuna_params, distributions=dist, state=TrialState.PRUNED,
                                         user_attrs={"arch": d.arch},
                                         intermediate_values={e + 1: p["val_accuracy"]
                                                              for e, p in enumerate(curve[:ran])},
                                         system_attrs=system_attrs))
        if scheduler is not None and complete:
            scheduler.on_trial_complete(None, rt, {})
        if d.key in true_front:
            seen_optimal += 1
            stopped_optimal += stopped
        trace.append((spent, seconds, _truth_hv(_observed_front(observed, table), bounds)))
    if held:  # paused designs the gate let through that never resumed: stopped at the rung
        stopped_n += len(held["pending"])
        stopped_optimal += sum(table.designs[j].key in true_front for j in held["pending"])
    if method.retrain:  # vitnas retrain: the proxy front, most accurate first, one full-budget seed each;
        # the front is then chosen as vitnas pareto_front does: confirmed accuracy where retrained, else proxy
        front = {table.designs.index(d) for d in _observed_front(observed, table)}
        for i in sorted(front, key=lambda k: -observed[k][0]):
            if spent + table.epochs > budget:
                break
            d = table.designs[i]
            run = d.full[rng.choice(sorted(d.full))]
            spent += table.epochs
            seconds += sum(float(p["seconds"]) for p in run)
            observed[i] = [run[-1]["val_accuracy"], d.params, d.throughput]
            trace.append((spent, seconds, _truth_hv(_observed_front(observed, table), bounds)))
    return Run(method.name, seed, trace, len(order), stopped_n, seen_optimal, stopped_optimal, refused, wasted,
               order, promoted_keys)


def _promote(study, observed: dict[int, list[float]], table: Table, sampler, max_t: int, spent: int,
             seconds: float, budget: float, trace: list, bounds, resumed: int = 0, fronts: int = 1, gate: float = 0.0,
             thaw: bool = False):
    """Promotion at one synchronous rung (successive halving keeping the rung's first ``fronts``
    non-dominated fronts; 1: its Pareto front): the designs on those fronts of ``observed`` (first-stage
    results, accuracy, params and throughput) are trained on the ``max_t``-epoch proxy, most
    accurate first, until ``budget`` epochs are spent; ``resumed`` > 0: they resume after that many epochs (a
    paused run), else they train from scratch. The search goes on in a new study where the promoted designs
    are complete with their ``max_t``-epoch accuracy and the other first-stage designs are pruned (seen, never
    proposed again); they leave ``observed`` (updated in place) too. ``gate`` (a quantile): then each other
    first-stage design, most accurate first, is promoted too unless even that quantile of its predicted accuracy
    (:func:`nas.engine.scheduler.predict_final` on the promoted designs' rung and final accuracies) is dominated
    by a promoted design, as :meth:`nas.engine.driver.StudyDriver.gate` decides; with ``thaw`` those it lets through
    wait (:func:`_thaw_choice`). Returns (study, spent, seconds, the indices of the designs stopped at the rung, the
    keys of those promoted, and with ``thaw`` the waiting designs: ``{"pending", "rung", "pairs", "dists"}``, else
    None)."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from nas import objectives

    keys_in = list(observed)
    ranks = objectives.nondominated_sort([[-observed[k][0], observed[k][1], -observed[k][2]] for k in keys_in])
    front = {keys_in[int(j)] for r in ranks[:fronts] for j in r}
    rung = {i: list(v) for i, v in observed.items()}
    by_params = {repr(sorted(table.designs[i].optuna_params.items())): i for i in observed}
    dists = {}
    for t in study.get_trials(deepcopy=False):
        i = by_params.get(repr(sorted(t.params.items()))) if t.state == TrialState.COMPLETE else None
        if i is not None:
            dists[i] = t.distributions
    observed.clear()
    keys = []

    def resume(order: list[int]) -> None:
        nonlocal spent, seconds
        for i in order:
            if spent >= budget:
                break
            d = table.designs[i]
            keys.append(d.key)
            run = d.proxy_run(max_t)
            spent += max_t - resumed
            seconds += sum(float(p["seconds"]) for p in run[resumed:])
            observed[i] = [run[-1]["val_accuracy"], d.params, d.throughput]
            trace.append((spent, seconds, _truth_hv(_observed_front(observed, table), bounds)))

    resume(sorted(front, key=lambda k: -rung[k][0]))
    held = None
    if gate:
        pairs = [(rung[i][0], observed[i][0]) for i in observed]
        full = list(observed.values())
        pending = sorted((i for i in rung if i not in front), key=lambda k: -rung[k][0])
        passed = [i for i in pending if not _surely_dominated(pairs, rung[i], gate, full)]
        if thaw:
            held = {"pending": passed, "rung": rung, "pairs": pairs, "dists": dists}
        else:
            resume(passed)
    new = optuna.create_study(directions=study.directions, sampler=sampler)
    for t in study.get_trials(deepcopy=False):
        i = by_params.get(repr(sorted(t.params.items()))) if t.state == TrialState.COMPLETE else None
        if i is None:
            new.add_trial(t)
        elif i not in observed:
            new.add_trial(create_trial(params=t.params, distributions=t.distributions, state=TrialState.PRUNED,
                                       user_attrs=dict(t.user_attrs), system_attrs=dict(t.system_attrs)))
    for i in observed:  # in the order they resumed
        d = table.designs[i]
        new.add_trial(create_trial(params=d.optuna_params, distributions=dists[i], values=observed[i],
                                   user_attrs={"arch": d.arch}))
    waiting = set(held["pending"]) if held else set()
    demoted = [j for j in rung if j not in observed and j not in waiting]
    return new, spent, seconds, demoted, keys, held


def _surely_dominated(pairs: list[tuple[float, float]], rung: list[float], gate: float, full: list[list[float]]) -> bool:
    """The gate's test (:meth:`nas.engine.driver.StudyDriver.gate`): whether even the ``gate`` quantile of the final
    accuracy predicted from ``rung`` (accuracy, params, throughput at the rung) by the line on ``pairs`` is dominated
    by a trained design of ``full``. False while there is no line (fewer than its minimum of curves)."""
    from nas.engine.scheduler import dominated_by, predict_final

    p = predict_final(pairs, rung[0], gate)
    return p is not None and dominated_by([p[1], *rung[1:]], full)


def _thaw_choice(held: dict, observed: dict[int, list[float]], sampler, study, bounds, left: int,
                 max_t: int, gate: float) -> tuple[int | None, list[int]]:
    """The freeze-thaw choice (Swersky et al., arXiv 1406.3896) between resuming a waiting paused design and a
    new proposal, by expected hypervolume improvement per epoch. Drops (and returns) the waiting designs whose
    ``gate`` quantile has come to be dominated by a trained design. A waiting design's accuracy after ``left``
    more epochs is predicted by the line on the resumed designs' (rung, final) accuracies, as a normal with the
    prediction's one-sigma spread; a new design's by the known-cost sampler's best candidate (``max_t`` epochs).
    Returns (the design to resume or None, the dropped)."""
    import numpy as np
    from optuna.trial import TrialState

    from nas import objectives
    from nas.engine.known_cost import expected_improvement
    from nas.engine.scheduler import predict_final

    full = list(observed.values())
    dropped = []
    for i in list(held["pending"]):
        if _surely_dominated(held["pairs"], held["rung"][i], gate, full):
            held["pending"].remove(i)
            dropped.append(i)
    if not held["pending"]:
        return None, dropped
    norm = np.array([bounds.normalise(list(v)) for v in full]) if full else np.zeros((0, 3))
    front = norm[objectives.nondominated_sort(-norm)[0]] if len(norm) else norm
    lo, hi = bounds.bounds[0]
    scale = (hi - lo) or 1.0
    best, best_rate = None, -1.0
    for i in held["pending"]:
        acc, params, tput = held["rung"][i]
        m = predict_final(held["pairs"], acc, 0.8413)  # one sigma above the mean
        if m is None:
            return i, dropped  # no line yet: as the gate, every waiting design resumes
        _, pn, tn = bounds.normalise([hi, params, tput])
        rate = expected_improvement(front, (m[0] - lo) / scale, max(m[1] - m[0], 1e-6) / scale, pn, tn) / left
        if rate > best_rate:
            best, best_rate = i, rate
    trials = study.get_trials(deepcopy=False)
    sampler.last = {}
    sampler.propose([t for t in trials if t.state == TrialState.COMPLETE and t.values],
                    seen=[t for t in trials if t.params])
    new_rate = float(sampler.last.get("ehvi", 0.0)) / max_t
    return (best if best_rate >= new_rate else None), dropped


def hv_at(run: Run, epochs: float) -> float:
    """The run's truth hypervolume once ``epochs`` were spent (0 before its first finished trial)."""
    hv = 0.0
    for spent, _, value in run.trace:
        if spent > epochs:
            break
        hv = value
    return hv


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        v = values[0] if values else float("nan")
        return v, v, v
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def study_bounds(table: Table, space):
    """The hypervolume bounds a real search on the table's data stores (:func:`nas.objectives.hv_bounds`):
    accuracy from chance (1/10) to 1, params over the space's extremes at the table's image size, throughput
    the fixed :data:`nas.objectives.THROUGHPUT_RANGE`."""
    from nas import objectives
    from search_spaces.extremes import params_range

    img = int(table.protocol.get("img_size", 16))
    return objectives.hv_bounds(10, params_range(space, img, 1, 10))


def default_budget(table: Table) -> int:
    """The comparison's budget ``B`` in epochs: ``27 x max(4, designs // 20)``, full-budget random search
    training a twentieth of the table. A tenth let the proxy methods try every design of a 48-design table
    before ``B`` (the table's best is then theirs by exhaustion); at a twentieth they try about half."""
    return table.epochs * max(4, len(table.designs) // 20)


#: What a forked replay worker reads (set by :func:`simulate` before the pool forks).
_JOB: dict[str, Any] = {}


def _replay_job(name: str, seed: int) -> Run:
    import torch

    torch.set_num_threads(1)  # one core per worker: the pool is the parallelism
    j = _JOB
    return replay(METHODS[name], j["table"], j["space"], seed, j["budget"], j["bounds"], j["true_front"],
                  j["max_params"], j["search_bounds"])


def simulate(methods: list[str], seeds: int, table: Table, budget: int | None = None,
             progress=None, max_params: float | None = None, jobs: int = 1,
             search_bounds: str = "table") -> dict[str, Any]:
    """Replay each method for seeds ``0 .. seeds-1``; return per method the truth-HV quartiles at
    ``B/4, B/2, 3B/4, B``, epochs to reach random search's final median, and the fraction of truly
    Pareto-optimal designs the method stopped early. ``jobs > 1`` replays seeds in that many forked
    processes (one thread each); the result is the same as with one. ``search_bounds``: the bounds the
    samplers and schedulers work with, ``table`` (spanning the table) or ``study`` (what a real search on
    the table's data would store, :func:`study_bounds`); the truth is scored on the table's either way.

    Raises:
        ValueError: an unknown method name or ``search_bounds`` value.
    """
    from search_spaces import SearchSpace
    from search_spaces.genes import Architecture

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"method: unknown value {unknown[0]!r}; allowed: {', '.join(METHODS)}, default, all")
    img = int(table.protocol.get("img_size", 16))
    space = SearchSpace().for_image(img)
    for d in table.designs:
        d.optuna_params = space.to_params(Architecture.from_dict(d.arch))
    if search_bounds not in ("table", "study"):
        raise ValueError(f"search_bounds: unknown value {search_bounds!r}; allowed: table, study")
    budget = budget or default_budget(table)
    bounds, true_front = table.bounds(), table.true_front(max_params)
    sb = study_bounds(table, space) if search_bounds == "study" else None
    points = [budget / 4, budget / 2, 3 * budget / 4, budget]
    out: dict[str, Any] = {"budget_epochs": budget, "max_params": max_params, "designs": len(table.designs),
                           "true_front": len(true_front),
                           "table_best_hv": _truth_hv([d for d in table.designs if d.key in true_front], bounds),
                           "bounds": bounds.to_dict(), "seeds": seeds, "methods": {},
                           "search_bounds": search_bounds, "truth_seeds": table.truth_seeds,
                           "proxy_seeds": table.proxy_seeds}
    pool = None
    if jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        _JOB.update(table=table, space=space, budget=budget, bounds=bounds, true_front=true_front,
                    max_params=max_params, search_bounds=sb)
        pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork"))
    for name in methods:
        t0 = time.perf_counter()
        runs = []
        if pool is not None:
            futures = [pool.submit(_replay_job, name, s) for s in range(seeds)]
        for s in range(seeds):
            runs.append(futures[s].result() if pool is not None else
                        replay(METHODS[name], table, space, s, budget, bounds, true_front, max_params, sb))
            if progress:
                progress(name, s, runs[-1])
        seen = sum(r.optimal_seen for r in runs)
        out["methods"][name] = {
            "about": METHODS[name].about,
            "hv": {f"{p / budget:g}B": _quartiles([hv_at(r, p) for r in runs]) for p in points},
            "final_hv": [hv_at(r, budget) for r in runs],  # per seed, at B
            "hv_per_seed": {f"{p / budget:g}B": [hv_at(r, p) for r in runs] for p in points},  # for paired tests
            "epochs_to": None,
            "curve": [(e, _quartiles([hv_at(r, e) for r in runs])) for e in range(0, budget + 1, max(1, budget // 40))],
            "trials": statistics.median(r.trials for r in runs),
            "optimal_stopped": (sum(r.optimal_stopped for r in runs) / seen) if seen else 0.0,
            "optimal_seen": seen,
            "seconds": round(time.perf_counter() - t0, 1),
            "refused": statistics.median(r.refused for r in runs),
            "wasted_epochs": statistics.median(r.wasted for r in runs),
            "simulated_hours": statistics.median(r.trace[-1][1] for r in runs if r.trace) / 3600,
        }
    if pool is not None:
        pool.shutdown()
    _epochs_to_random(out)
    return out


def _epochs_to_random(out: dict[str, Any]) -> None:
    if "random" in out["methods"]:
        target = out["methods"]["random"]["hv"]["1B"][1]
        out["random_final_median"] = target
        for m in out["methods"].values():
            m["epochs_to"] = next((e for e, q in m["curve"] if q[1] >= target), None)


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new``'s methods added to (or replacing) ``old``'s, when both replayed the same table under the same
    budget and seeds; else ``new`` alone. Lets a long comparison run method by method into one file."""
    plain = json.loads(json.dumps(new))
    absent = {"search_bounds": "table", "truth_seeds": 2, "proxy_seeds": 1}  # what a file without the key means
    same = all(old.get(k, absent.get(k)) == plain.get(k, absent.get(k))
               for k in ("budget_epochs", "designs", "seeds", "max_params", "bounds", "search_bounds", "truth_seeds",
                         "proxy_seeds"))
    if not same:
        return new
    merged = {**old, "methods": {**old["methods"], **new["methods"]}}
    _epochs_to_random(merged)
    return merged


def _print(out: dict[str, Any]) -> None:
    print(f"table: {out['designs']} designs ({out['true_front']} Pareto-optimal by truth; their truth HV "
          f"{out['table_best_hv']:.4f}; truth over {out.get('truth_seeds', 2)} full-budget seeds); "
          f"budget B = {out['budget_epochs']} epochs; {out['seeds']} seeds")
    budget = f"; max_params {out['max_params']:,.0f}" if out.get("max_params") else ""
    print(f"{'method':<22}{'HV at B/4':>24}{'B/2':>24}{'B':>24}{'to random':>11}{'opt. stopped':>14}"
          f"{'wasted ep.':>12}{'refused':>9}{budget}")
    for name, m in out["methods"].items():
        cells = [f"{q[1]:.4f} [{q[0]:.4f}-{q[2]:.4f}]" for k, q in m["hv"].items() if k in ("0.25B", "0.5B", "1B")]
        to = "" if m["epochs_to"] is None else f"{m['epochs_to'] / out['budget_epochs']:.2f}B"
        print(f"{name:<22}{cells[0]:>24}{cells[1]:>24}{cells[2]:>24}{to:>11}"
              f"{m['optimal_stopped']:>13.0%} {m['wasted_epochs']:>11g}{m['refused']:>9g}")
    print("HV: median [quartiles] over seeds of the truth hypervolume of the method's front; 'to random': epochs "
          "at which the median reaches random search's final median; 'opt. stopped': truly Pareto-optimal designs "
          "the method stopped early, of those it tried; 'wasted ep.': median epochs on designs an already-trained "
          "design beat on both costs and on truth; 'refused': median proposals over --max-params (0 epochs)")


def markdown(out: dict[str, Any], against: str | None = None) -> str:
    """The comparison as a markdown table (docs/benchmarks.md), methods by their median truth HV at ``B``; with
    ``against``, a last column compares each method with that one seed by seed at B/4, B/2 and B (:func:`paired`:
    ahead/level/behind, Wilcoxon p)."""
    rows = sorted(out["methods"].items(), key=lambda kv: -kv[1]["hv"]["1B"][1])
    pairs = paired(out, against) if against else {}
    lines = ["| method | what | truth HV at B/4 | B/2 | B (quartiles) | mean at B | reaches random's final at | "
             "truly optimal stopped | wasted epochs | trials |" + (f" against {against}: B/4; B/2; B |" if against else ""),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---|" if against else "")]
    for name, m in rows:
        hv = m["hv"]
        to = "—" if m["epochs_to"] is None else f"{m['epochs_to'] / out['budget_epochs']:.2f} B"
        mean = f"{statistics.fmean(m['final_hv']):.3f}" if m.get("final_hv") else "—"
        vs = "; ".join(f"{c['ahead']}/{c['level']}/{c['behind']} p={c['p']:.2g}" for c in pairs[name].values()) \
            if name in pairs else ""
        lines.append(f"| {name} | {m['about']} | {hv['0.25B'][1]:.3f} | {hv['0.5B'][1]:.3f} | {hv['1B'][1]:.3f} "
                     f"({hv['1B'][0]:.3f}-{hv['1B'][2]:.3f}) | {mean} | {to} | {m['optimal_stopped']:.0%} "
                     f"({m['optimal_seen']}) | {m['wasted_epochs']:g} | {m['trials']:g} |" + (f" {vs} |" if against else ""))
    return "\n".join(lines)


def paired(out: dict[str, Any], against: str, level: float = 1e-6) -> dict[str, dict[str, dict[str, float]]]:
    """Each method of ``out`` against ``against`` seed by seed (both replayed under the same seeds, so seed ``s``
    of one faces seed ``s`` of the other), at ``B/4``, ``B/2`` and ``B``: the seeds where the method's truth HV is
    ahead of, level with (within ``level``) and behind ``against``'s; the median and mean of the differences
    (method minus ``against``); and the two-sided p-value of Wilcoxon's signed-rank test on the differences
    (``scipy.stats.wilcoxon``, zero differences split between the signs; 1 when every seed is level).

    The truth HV falls in steps, so a median over 30 seeds can jump a step between two sets of seeds; two
    methods whose medians differ by less than a step are told apart by this test, not by their medians.

    Raises:
        ValueError: ``against`` is not in ``out``, or a file without per-seed values at those points (written
            before 2026-12-05 it keeps them at ``B`` only).
    """
    from scipy.stats import wilcoxon

    if against not in out["methods"]:
        raise ValueError(f"paired: {against!r} is not among the file's methods ({', '.join(out['methods'])})")
    result: dict[str, dict[str, dict[str, float]]] = {}
    base = out["methods"][against].get("hv_per_seed")
    for name, m in out["methods"].items():
        if name == against:
            continue
        mine = m.get("hv_per_seed")
        if not base or not mine:
            raise ValueError("paired: the file keeps no per-seed truth HV at B/4 and B/2; replay it again")
        result[name] = {}
        for point in ("0.25B", "0.5B", "1B"):
            diffs = [0.0 if abs(a - b) <= level else a - b for a, b in zip(mine[point], base[point])]
            nonzero = [d for d in diffs if d]
            p = float(wilcoxon(diffs, zero_method="zsplit").pvalue) if nonzero else 1.0
            result[name][point] = {"ahead": sum(d > level for d in diffs), "level": len(diffs) - len(nonzero),
                                   "behind": sum(d < -level for d in diffs), "median": statistics.median(diffs),
                                   "mean": statistics.fmean(diffs), "p": p}
    return result


def _print_paired(out: dict[str, Any], against: str) -> None:
    rows = paired(out, against)
    print(f"paired by seed against {against} ({out['seeds']} seeds): ahead/level/behind, mean difference, "
          "Wilcoxon signed-rank p")
    print(f"{'method':<34}" + "".join(f"{k:>34}" for k in ("B/4", "B/2", "B")))
    for name, r in rows.items():
        print(f"{name:<34}" + "".join(f"{c['ahead']:>5}/{c['level']}/{c['behind']:<3} {c['mean']:+.4f} p={c['p']:<8.2g}"
                                     .rjust(34) for c in r.values()))


def figure(out: dict[str, Any], methods: list[str] | None = None, stem: str = "simulate_truth_hv_fashion_mnist"):
    """Truth hypervolume against epochs spent (median line, quartile band) for ``methods`` (default: every
    method in ``out``), written by :func:`benchmarks._common.save_figure`. Returns the path written."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    from benchmarks import _common as C

    names = [m for m in (methods or list(out["methods"])) if m in out["methods"]]
    colors = qualitative.Dark24
    fig = go.Figure()
    for i, name in enumerate(names):
        curve = out["methods"][name]["curve"]
        xs, lo, med, hi = [c[0] for c in curve], [c[1][0] for c in curve], [c[1][1] for c in curve], \
            [c[1][2] for c in curve]
        color = colors[i % len(colors)]
        fig.add_trace(go.Scatter(x=xs + xs[::-1], y=hi + lo[::-1], fill="toself", fillcolor=color, opacity=0.12,
                                 line=dict(width=0, shape="hv"), hoverinfo="skip", showlegend=False, legendgroup=name))
        fig.add_trace(go.Scatter(x=xs, y=med, name=name, mode="lines", legendgroup=name,
                                 line=dict(color=color, shape="hv", width=3 if name == DEFAULT_METHOD else 1.5)))
    fig.add_hline(y=out["table_best_hv"], line=dict(dash="dot", color="gray"),
                  annotation_text="the table's truly optimal designs")
    fig.update_layout(title=f"Truth hypervolume against epochs ({out['designs']} designs; median over "
                            f"{out['seeds']} seeds, band: quartiles)", xaxis_title="epochs spent",
                      yaxis_title="truth hypervolume of the method's front", width=1000, height=600)
    return C.save_figure(fig, stem)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="default", help="a method name, 'default', or 'all' (see --list)")
    p.add_argument("--seeds", type=int, default=30)
    p.add_argument("--budget", type=int, default=None, help="epochs (default: 27 x max(4, designs // 20))")
    p.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    p.add_argument("--json", type=Path, default=None,
                   help="write the results here (merged into a file of the same table, budget and seeds)")
    p.add_argument("--jobs", type=int, default=1, help="replay seeds in this many processes (one core each)")
    p.add_argument("--max-params", type=float, default=None,
                   help="a params budget: designs over it are refused at 0 epochs (vitnas search --max-params)")
    p.add_argument("--truth-from", type=Path, action="append", default=[],
                   help="a table of further full-budget seeds of the same designs: the truth is the mean over all "
                        "(repeatable; the runs a replay observes are unchanged)")
    p.add_argument("--proxy-from", type=Path, action="append", default=[],
                   help="a table of further seeds of the short proxy: each replayed design trains under one of the "
                        "recorded seeds, drawn per design and replay seed (repeatable)")
    p.add_argument("--one-proxy-seed", action="store_true",
                   help="replay every design under the table's own proxy run alone, not the proxy seeds recorded "
                        "beside it (TABLE_proxy_seed*.jsonl, which the replay reads by default)")
    p.add_argument("--paired", default=None, metavar="METHOD",
                   help="also compare every method with METHOD seed by seed (ahead/level/behind, Wilcoxon p)")
    p.add_argument("--search-bounds", choices=("table", "study"), default="table",
                   help="the bounds samplers and schedulers work with: the table's, or a real search's study's")
    p.add_argument("--list", action="store_true", help="list the methods and exit")
    p.add_argument("--markdown", action="store_true", help="print the comparison as a markdown table")
    p.add_argument("--from-json", type=Path, default=None, help="print a stored --json result (no replay)")
    p.add_argument("--figure", default=None, metavar="METHODS",
                   help="with --from-json: draw these methods' truth-HV curves (comma-separated, or 'all')")
    args = p.parse_args(argv)
    if args.list:
        for m in METHODS.values():
            print(f"{m.name:<26}{m.about}" + ("  [default]" if m.name == DEFAULT_METHOD else ""))
        return 0
    if args.from_json is not None:
        out = json.loads(args.from_json.read_text())
        if args.figure:
            print(figure(out, None if args.figure == "all" else args.figure.split(",")))
        elif args.markdown:
            try:
                print(markdown(out, DEFAULT_METHOD if args.paired == "default" else args.paired))
            except ValueError as e:
                p.error(str(e))
            return 0
        else:
            _print(out)
        if args.paired:
            try:
                _print_paired(out, DEFAULT_METHOD if args.paired == "default" else args.paired)
            except ValueError as e:
                p.error(str(e))
        return 0
    if args.seeds < 1:
        p.error(f"seeds: must be >= 1, got {args.seeds}")
    if args.jobs < 1:
        p.error(f"jobs: must be >= 1, got {args.jobs}")
    names = list(METHODS) if args.method == "all" else [
        DEFAULT_METHOD if n == "default" else n for n in args.method.split(",")]
    if "moasha" in names:
        try:
            import syne_tune  # noqa: F401
        except ImportError:
            names.remove("moasha")
            print("moasha left out: syne-tune is not installed (pip install -e .[bench])", file=sys.stderr)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    missing = next((f"{flag}: no such file {str(path)!r}" for flag, paths in (("table", [args.table]),
                    ("truth-from", args.truth_from), ("proxy-from", args.proxy_from)) for path in paths
                    if not path.is_file()), None)
    if missing:
        p.error(missing)
    if args.one_proxy_seed and args.proxy_from:
        p.error("one-proxy-seed: not with --proxy-from, which adds proxy seeds")
    if not args.proxy_from and not args.one_proxy_seed:  # the standard replay: every proxy seed recorded beside it
        args.proxy_from = sorted(args.table.parent.glob(f"{args.table.stem}_proxy_seed*.jsonl"))
        if args.proxy_from:
            print(f"proxy seeds from {', '.join(f.name for f in args.proxy_from)} (--one-proxy-seed: the table's own "
                  "run alone)", file=sys.stderr)
    try:
        table = Table.load(args.table, tuple(args.truth_from), tuple(args.proxy_from))
        out = simulate(names, args.seeds, table, args.budget, max_params=args.max_params, jobs=args.jobs,
                       search_bounds=args.search_bounds,
                       progress=lambda n, s, r: print(f"  {n} seed {s}: {r.trials} trials, truth HV "
                                                      f"{r.trace[-1][2] if r.trace else 0:.4f}", file=sys.stderr))
    except ValueError as e:
        p.error(str(e))
    if args.json and args.json.exists():
        out = merge(json.loads(args.json.read_text()), out)
    if args.markdown:
        print(markdown(out))
    else:
        _print(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    if args.paired:
        try:
            _print_paired(out, DEFAULT_METHOD if args.paired == "default" else args.paired)
        except ValueError as e:
            p.error(str(e))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
