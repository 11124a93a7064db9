"""The recorded benchmark table: designs of the default space trained with full learning curves.

    python -m benchmarks.table record                 # resumable; appends to benchmarks/results/table_fashion_mnist.jsonl
    python -m benchmarks.table record --limit 3       # ... at most 3 more designs, then stop
    python -m benchmarks.table summary                # what the table holds (designs, runs, seconds per design)
    python -m benchmarks.table record --shards 2 --shard 1   # a second recorder beside the first (one core each)

Search methods in this field are compared on recorded tables (NAS-Bench-201, HPOBench, YAHPO, Syne Tune's
blackbox repository): a pool of designs is trained once with full learning curves, and any sampler and
scheduler is then replayed over the table for many seeds. This script records vitnas' own table.

Protocol (the defaults; every row stores the protocol it was trained under):

- data: Fashion-MNIST from ``--data-dir`` (``../shared/data``, torchvision's layout), resized to 16 px,
  2,000 training images and 1,000 held-out validation images (vitnas' fixed split, seed 0);
- designs: the 11 paper presets plus ``--designs`` (120) designs sampled at random from the default search
  space at 16 px, round-robin over the attention types so every type is represented (Optuna's
  ``RandomSampler``, seed ``--sample-seed``); recorded in a seeded shuffled order so a partial table is a
  random subset of the whole;
- per design: the **full-budget** protocol (``--epochs`` 27, cosine schedule sized to 27 epochs) under
  seeds 0 and 1, and the **short proxy** (``--proxy-epochs`` 6, the search's default) under seed 0, each
  with its per-epoch validation accuracy, training loss and seconds; ``trainers.train_proxy`` is the
  trainer, exactly as in a search trial;
- further seeds of the short proxy with ``--proxy-seeds`` (the simulator's ``--proxy-from``: a replayed trial
  then trains under a seed drawn per design, as a real search's trials each train under their own);
- per design, shorter proxies too (``--extra-proxy-epochs``, default 3: a cosine schedule sized to 3 epochs,
  seed 0), so the simulator can weigh the budget per design; a table recorded before they existed is
  completed by running ``record`` again;
- costs once per design at the deployment shape (16 px, batch 64, float32, this CPU): params (exact),
  FLOPs (fvcore, multiply-adds per image) and throughput (vitnas' protocol against the reference model);
- one thread (``torch.set_num_threads``), so the table records in the background on a shared machine.

The truth of a design is its mean final accuracy over the full-budget seeds. Each finished run is one JSON
line (``kind``: ``cost``, ``full`` or ``proxy``), appended as soon as it ends: a run cut short loses only
the run in progress, and ``record`` skips what the file already holds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "table_fashion_mnist.jsonl"


def protocol(args: argparse.Namespace) -> dict:
    """The recording protocol as stored on every row (rows of another protocol are not mixed in)."""
    return {"dataset": "fashion_mnist", "img_size": args.img_size, "train_subset": args.train_subset,
            "val_subset": args.val_subset, "batch_size": 32, "lr": 3e-3, "epochs": args.epochs,
            "proxy_epochs": args.proxy_epochs}


def designs(n: int, img_size: int, seed: int) -> list[tuple[str, dict, str]]:
    """``(canonical key, genes, preset name or "")`` for the presets and ``n`` sampled designs, shuffled."""
    import optuna

    from search_spaces import SearchSpace
    from search_spaces.presets import PRESETS

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace().for_image(img_size)
    out, seen = [], set()
    for name, arch in PRESETS.items():
        if space.contains(arch):
            key = arch.canonical_key(img_size)
            if key not in seen:
                seen.add(key)
                out.append((key, arch.to_dict(), name))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    kinds = list(space.to_dict()["attention"])
    sampled, turn = 0, 0
    while sampled < n:
        arch = space.suggest(study.ask())
        if arch.attention != kinds[turn % len(kinds)]:
            continue
        key = arch.canonical_key(img_size)
        if key in seen:
            continue
        seen.add(key)
        out.append((key, arch.to_dict(), ""))
        sampled += 1
        turn += 1
    random.Random(seed).shuffle(out)
    return out


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill: the run is recorded again
                continue
    return rows


def _append(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row, separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())


def recorded_designs(path: Path) -> list[tuple[str, dict, str]]:
    """``(canonical key, genes, preset name or "")`` of the designs a recorded table holds, in recorded order
    (no sampling, so no Optuna: what a bare GPU image can run)."""
    out, seen = [], set()
    for r in read_rows(path):
        if r["key"] not in seen:
            seen.add(r["key"])
            out.append((r["key"], r["arch"], r.get("preset", "")))
    return out


def _train(arch, data, epochs: int, seed: int, device: str = "cpu") -> dict:
    import torch

    from search_spaces import build_model
    from trainers import ProxyConfig, train_proxy
    from trainers.proxy import seed_everything

    seed_everything(seed)
    model = build_model(arch, img_size=data.img_size, in_chans=data.in_chans, num_classes=data.num_classes)
    marks = [time.perf_counter()]
    curve: list[dict] = []

    def on_epoch(epoch: int, record: dict) -> None:
        marks.append(time.perf_counter())
        curve.append({"epoch": epoch, "val_accuracy": record["val_accuracy"], "train_loss": record["train_loss"],
                      "seconds": round(marks[-1] - marks[-2], 3)})

    try:
        # float32 everywhere (no bf16 autocast on a GPU): the protocol's numbers, whatever the device
        train_proxy(model, data, ProxyConfig(epochs=epochs, device=device, seed=seed, amp=False), report=on_epoch,
                    device=torch.device(device))
        error = None
    except Exception as exc:  # noqa: BLE001 - a diverged design is a row of the table too
        error = f"{exc.__class__.__name__}: {exc}"[:300]
    return {"curve": curve, "final": curve[-1]["val_accuracy"] if curve and error is None else None,
            "seconds": round(marks[-1] - marks[0], 3), "error": error}


def _cost(arch, data) -> dict:
    import torch

    from search_spaces import build_model
    from trainers.measure import count_flops, count_params, measure_throughput_vs_reference, reference_architecture

    model = build_model(arch, img_size=data.img_size, in_chans=data.in_chans, num_classes=data.num_classes).eval()
    reference = build_model(reference_architecture(data.img_size), img_size=data.img_size, in_chans=data.in_chans,
                            num_classes=data.num_classes).eval()
    shape = (data.in_chans, data.img_size, data.img_size)
    thr = measure_throughput_vs_reference(model, reference, shape, batch_size=64, device=torch.device("cpu"),
                                          dtype="float32")
    return {"params": count_params(model), "flops": count_flops(model, shape), "throughput_ratio": thr.ratio,
            "throughput_reference_img_s": thr.reference_img_s, "throughput": thr.ratio * thr.reference_img_s,
            "throughput_spread": thr.spread}


def record(args: argparse.Namespace) -> None:
    import torch

    from search_spaces import Architecture
    from trainers import load_dataset

    torch.set_num_threads(args.threads)
    path = Path(args.out)
    proto = protocol(args)
    data = load_dataset("fashion_mnist", args.data_dir, train_subset=args.train_subset, val_subset=args.val_subset,
                        img_size=args.img_size)
    machine = (f"{platform.machine()} {platform.processor() or ''}".strip()
               + f", {args.threads} thread(s), torch {torch.__version__}")
    if args.device != "cpu":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # float32 as on the CPU
        machine += f", {torch.cuda.get_device_name(torch.device(args.device))}"
    todo = (recorded_designs(Path(args.designs_from)) if args.designs_from
            else designs(args.designs, args.img_size, args.sample_seed))
    full_seeds = args.full_seeds if args.full_seeds is not None else list(range(args.seeds))
    recorded = 0
    for index, (key, genes, preset) in enumerate(todo):
        if index % args.shards != args.shard:
            continue
        runs = [("cost", 0, 0), *(("proxy", args.proxy_epochs, s) for s in args.proxy_seeds),
                *(("proxy", e, 0) for e in args.extra_proxy_epochs),
                *(("full", args.epochs, s) for s in full_seeds)]
        runs = [r for r in runs if r[0] in args.kinds]
        # Read again before each design: another recorder (another shard, or one resumed) may have written it.
        done = {(r["key"], r["kind"], r.get("seed", 0), r.get("epochs", 0)) for r in read_rows(path)
                if r.get("protocol") == proto}
        missing = [r for r in runs if (key, r[0], r[2], r[1]) not in done]
        if not missing:
            continue
        if args.limit is not None and recorded >= args.limit:
            break
        arch = Architecture.from_dict(genes)
        print(f"[{index + 1}/{len(todo)}] {arch.describe()}", flush=True)
        for kind, epochs, seed in missing:
            base = {"key": key, "arch": genes, "preset": preset, "kind": kind, "seed": seed, "protocol": proto,
                    "machine": machine, "recorded": time.strftime("%Y-%m-%dT%H:%M:%S")}
            if kind == "cost":
                row = {**base, **_cost(arch, data)}
            else:
                row = {**base, "epochs": epochs, **_train(arch, data, epochs, seed, args.device)}
                print(f"    {kind} seed {seed}: {row['final']} in {row['seconds']:.0f} s", flush=True)
            _append(path, row)
        recorded += 1


def _device(machine: str) -> str:
    """The device of a row's ``machine`` (a GPU's name when :func:`record` ran on one, else ``cpu``)."""
    parts = machine.split(", ")
    return parts[3] if len(parts) > 3 else "cpu"


def summary(args: argparse.Namespace) -> None:
    rows = [r for r in read_rows(Path(args.out)) if r.get("protocol") == protocol(args)]
    by_key: dict[str, dict] = defaultdict(dict)
    for r in rows:  # a shorter proxy is kind "proxy<epochs>" here, so it never stands for the main one
        extra = r["kind"] == "proxy" and r.get("epochs", args.proxy_epochs) != args.proxy_epochs
        by_key[r["key"]][(f"proxy{r['epochs']}" if extra else r["kind"], r.get("seed", 0))] = r
    complete = [k for k, runs in by_key.items()
                if {("cost", 0), ("proxy", 0), *(("full", s) for s in range(args.seeds))} <= set(runs)]
    seconds = [sum(r.get("seconds", 0) for (kind, _), r in by_key[k].items() if kind in ("proxy", "full"))
               for k in complete]
    kinds = Counter(by_key[k][("cost", 0)]["arch"]["attention"] for k in complete)
    print(f"{len(complete)} complete designs of {len(by_key)} started; attention: {dict(sorted(kinds.items()))}")
    if seconds:
        seconds.sort()
        print(f"training seconds per design: median {seconds[len(seconds) // 2]:.0f}, total {sum(seconds) / 3600:.2f} h")
        epoch_seconds = sorted(c["seconds"] for k in complete for s in range(args.seeds)
                               for c in by_key[k][("full", s)]["curve"])
        print(f"seconds per full-protocol epoch: median {epoch_seconds[len(epoch_seconds) // 2]:.2f} "
              f"(range {epoch_seconds[0]:.2f}-{epoch_seconds[-1]:.2f})")
    trained = [k for k in complete if all(by_key[k][(kind, s)].get("final") is not None
                                          for kind, s in [("proxy", 0), *(("full", s) for s in range(args.seeds))])]
    if len(trained) >= 3 and args.seeds >= 2:
        from scipy.stats import kendalltau

        finals = [[by_key[k][("full", s)]["final"] for s in range(args.seeds)] for k in trained]
        truth = [sum(f) / len(f) for f in finals]
        proxy = [by_key[k][("proxy", 0)]["final"] for k in trained]
        at_proxy = [sum(by_key[k][("full", s)]["curve"][args.proxy_epochs - 1]["val_accuracy"]
                        for s in range(args.seeds)) / args.seeds for k in trained]
        gaps = sorted(abs(f[0] - f[1]) for f in finals)
        print(f"truth (mean final accuracy over {args.seeds} seeds) of {len(trained)} designs: "
              f"{min(truth):.4f}-{max(truth):.4f}; seed 0 vs seed 1: Kendall tau {kendalltau(*zip(*finals))[0]:.2f}, "
              f"|difference| median {gaps[len(gaps) // 2]:.4f}, max {gaps[-1]:.4f}")
        print(f"Kendall tau against the truth: the {args.proxy_epochs}-epoch proxy {kendalltau(proxy, truth)[0]:.2f}; "
              f"epoch {args.proxy_epochs} of the full runs {kendalltau(at_proxy, truth)[0]:.2f}")
        for other in args.truth_from:  # further full-budget seeds recorded elsewhere (another device, say)
            more = {(r["key"], r["seed"]): r for r in read_rows(Path(other))
                    if r.get("protocol") == protocol(args) and r["kind"] == "full" and r.get("final") is not None}
            for seed in sorted({s for _, s in more}):
                have = [i for i, k in enumerate(trained) if (k, seed) in more]
                finals_s = [more[(trained[i], seed)]["final"] for i in have]
                machines = Counter(_device(more[(trained[i], seed)]["machine"]) for i in have)
                print(f"seed {seed} from {other} ({len(have)} designs; {dict(machines)}): mean final "
                      f"{sum(finals_s) / len(finals_s):.4f} (seeds 0..{args.seeds - 1}: "
                      f"{sum(truth[i] for i in have) / len(have):.4f}); Kendall tau against the truth "
                      f"{kendalltau(finals_s, [truth[i] for i in have])[0]:.2f}, against seed 0 "
                      f"{kendalltau(finals_s, [finals[i][0] for i in have])[0]:.2f}; |difference| from the truth, "
                      f"median {sorted(abs(f - truth[i]) for f, i in zip(finals_s, have))[len(have) // 2]:.4f}")
                if len(have) == len(trained):
                    wider = [(t * args.seeds + f) / (args.seeds + 1) for t, f in zip(truth, finals_s)]
                    print(f"  the truth over {args.seeds + 1} seeds against the truth over {args.seeds}: Kendall tau "
                          f"{kendalltau(wider, truth)[0]:.2f}")
        for e in args.extra_proxy_epochs:
            have = [i for i, k in enumerate(trained) if (by_key[k].get((f"proxy{e}", 0)) or {}).get("final") is not None]
            if len(have) >= 3:
                short = [by_key[trained[i]][(f"proxy{e}", 0)]["final"] for i in have]
                at_e = [sum(by_key[trained[i]][("full", s)]["curve"][e - 1]["val_accuracy"] for s in range(args.seeds))
                        / args.seeds for i in have]
                secs = sorted(by_key[trained[i]][(f"proxy{e}", 0)]["seconds"] for i in have)
                print(f"  the {e}-epoch proxy ({len(have)} designs, {sum(secs) / 60:.0f} min in all): Kendall tau "
                      f"{kendalltau(short, [truth[i] for i in have])[0]:.2f} against the truth, "
                      f"{kendalltau(short, [proxy[i] for i in have])[0]:.2f} against the {args.proxy_epochs}-epoch proxy; "
                      f"epoch {e} of the full runs {kendalltau(at_e, [truth[i] for i in have])[0]:.2f}")


def resume_check(args: argparse.Namespace) -> None:
    """What the replay's promotion assumes (``benchmarks.simulate``, ``Method.resume``): a proxy run paused at
    epoch ``--pause-at`` and resumed from its saved state (``train_proxy(pause_at=..., state=...)`` and
    ``torch.save``) is the recorded uninterrupted run. For the ``--designs`` table designs of the cheapest
    recorded proxy, trains the main proxy uninterrupted and paused then resumed, and prints the largest
    per-epoch accuracy difference between the two and against the recorded curve."""
    import tempfile

    import torch

    from search_spaces import Architecture, build_model
    from trainers import ProxyConfig, load_dataset, train_proxy
    from trainers.proxy import seed_everything

    torch.set_num_threads(args.threads)
    proto = protocol(args)
    recorded = {r["key"]: r for r in read_rows(Path(args.out)) if r.get("protocol") == proto and r["kind"] == "proxy"
                and r.get("epochs") == args.proxy_epochs and r.get("final") is not None}
    data = load_dataset("fashion_mnist", args.data_dir, train_subset=args.train_subset, val_subset=args.val_subset,
                        img_size=args.img_size)
    config = ProxyConfig(epochs=args.proxy_epochs, device="cpu", seed=0)
    for row in sorted(recorded.values(), key=lambda r: r["seconds"])[:args.designs]:
        arch = Architecture.from_dict(row["arch"])

        def fresh(seed: int = 0, arch=arch):  # seed 0: as the recorder builds it
            seed_everything(seed)
            return build_model(arch, img_size=data.img_size, in_chans=data.in_chans, num_classes=data.num_classes)

        whole = train_proxy(fresh(), data, config, device=torch.device("cpu"))
        state: dict = {}
        train_proxy(fresh(), data, config, device=torch.device("cpu"), pause_at=args.pause_at, state=state)
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(state, Path(tmp) / "paused.pt")
            state = torch.load(Path(tmp) / "paused.pt", weights_only=False)
        # another RNG and other initial weights before resuming: the state must carry it all
        resumed = train_proxy(fresh(1), data, config, device=torch.device("cpu"), state=state)
        vs_whole = max(abs(a["val_accuracy"] - b["val_accuracy"]) for a, b in zip(whole, resumed))
        vs_table = max(abs(a["val_accuracy"] - b["val_accuracy"]) for a, b in zip(row["curve"], resumed))
        print(f"{arch.describe()}: resumed at epoch {args.pause_at}, final {resumed[-1]['val_accuracy']:.4f}; "
              f"largest |difference| against the uninterrupted run {vs_whole:.4f}, against the table's {vs_table:.4f}",
              flush=True)


def _kinds(text: str) -> list[str]:
    kinds = text.split(",")
    unknown = [k for k in kinds if k not in ("cost", "proxy", "full")]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown kind {unknown[0]!r}; allowed: cost, proxy, full")
    return kinds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("command", choices=["record", "summary", "resume-check"])
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--designs", type=int, default=120, help="sampled designs (besides the presets)")
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=27, help="full-budget epochs")
    parser.add_argument("--proxy-epochs", type=int, default=6)
    parser.add_argument("--extra-proxy-epochs", type=lambda s: [int(x) for x in s.split(",") if x], default=[3],
                        help="shorter proxies also recorded per design, comma-separated epochs ('' for none)")
    parser.add_argument("--seeds", type=int, default=2, help="full-budget seeds")
    parser.add_argument("--proxy-seeds", type=lambda s: [int(x) for x in s.split(",") if x], default=[0],
                        help="record: the short proxy's seeds, comma-separated (default 0; the simulator's --proxy-from "
                             "reads further ones)")
    parser.add_argument("--img-size", type=int, default=16)
    parser.add_argument("--train-subset", type=int, default=2000)
    parser.add_argument("--val-subset", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="record at most this many more designs")
    parser.add_argument("--shard", type=int, default=0, help="with --shards N: record designs i with i %% N == SHARD")
    parser.add_argument("--shards", type=int, default=1, help="recorders side by side, each on its own shard")
    parser.add_argument("--pause-at", type=int, default=3, help="resume-check: the epoch the proxy pauses after")
    parser.add_argument("--designs-from", default=None,
                        help="record: take the designs of this recorded table (its order) instead of sampling them")
    parser.add_argument("--kinds", type=_kinds, default=["cost", "proxy", "full"],
                        help="record: the runs to record, comma-separated among cost, proxy, full")
    parser.add_argument("--full-seeds", type=lambda s: [int(x) for x in s.split(",") if x], default=None,
                        help="record: the full-budget seeds, comma-separated (default: 0 .. --seeds - 1)")
    parser.add_argument("--truth-from", action="append", default=[],
                        help="summary: a table of further full-budget seeds, compared with the truth (repeatable)")
    parser.add_argument("--device", default="cpu", help="record: cpu or cuda[:N] (training in float32 either way)")
    args = parser.parse_args(argv)
    {"record": record, "summary": summary, "resume-check": resume_check}[args.command](args)


if __name__ == "__main__":
    main()
