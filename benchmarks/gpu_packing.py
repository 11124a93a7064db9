"""Trials packed on one GPU: trials per hour, GPU busy fraction, memory per trial and stored throughput.

    python -m benchmarks.gpu_packing                      # on a CUDA machine: 1, 2, 4, 8, 16 trials per GPU
    python -m benchmarks.gpu_packing --packs 1,4,8
    python -m benchmarks.gpu_packing --dry-run            # the same pipeline, tiny, on the CPU (the test suite)

What runs: for each packing ``k``, ``k`` proxy trials of the same design (the ``deit`` preset by default) start
at once, each in its own process, each doing what a search trial does (:func:`trainers.evaluate_architecture`:
throughput timed at the deployment shape under the per-device timing lock, then proxy training on
Fashion-MNIST at 28 px with the data resident on the GPU, seeds ``0 .. k-1``). The parent samples NVML's
utilisation of the GPU while they run. Reported per ``k``: trials per hour (``k`` over the wall time of the
batch), the ratio to ``k = 1``, mean GPU busy, peak training memory per trial, each trial's stored
throughput against the one timed alone (``k = 1``) and the accuracies (the proxy's statistics must not move).
It also times the proxy trainer against a bare PyTorch loop (same model, batch and steps; no validation, no
schedule, no checks) alone on the device.

This runs the trials without Ray (the packing Ray does is a GPU fraction per trial; what is measured here is
what sharing the device costs and gives). CUDA MPS (``nvidia-cuda-mps-control -d``) lets the processes'
kernels run side by side instead of time-slicing; the output says whether an MPS daemon was seen.
``--dry-run``: CPU, digits, 1 epoch, 200 images, packs 1 and 2: checks the pipeline, measures nothing useful.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "results" / "gpu_packing.json"


def _worker(spec: dict) -> dict:
    """One trial, as a search trial runs it; returns its measurements."""
    import torch

    from search_spaces.presets import PRESETS
    from trainers import ProxyConfig, evaluate_architecture, load_dataset

    torch.set_num_threads(1)
    data = load_dataset(spec["dataset"], spec.get("data_dir"), train_subset=spec.get("train_subset"),
                        val_subset=spec.get("val_subset"), img_size=spec.get("img_size"))
    config = ProxyConfig(epochs=spec["epochs"], seed=spec["seed"], device=spec["device"], cache_path=None,
                         measure_rounds=spec.get("measure_rounds", 15),
                         min_block_seconds=spec.get("min_block_seconds", 0.04))
    result = evaluate_architecture(PRESETS[spec["preset"]], data, config)
    return {"seed": spec["seed"], "accuracy": result.accuracy, "throughput": result.throughput,
            "train_seconds": result.train_seconds, "wall_seconds": result.wall_seconds,
            "train_peak_memory": result.train_peak_memory, "gpu_busy": result.gpu_busy}


def _bare_loop(spec: dict) -> dict:
    """The same steps as the proxy trainer, as a plain loop: AdamW, cross-entropy, bf16 autocast on CUDA."""
    import torch
    import torch.nn.functional as F

    from search_spaces import build_model
    from search_spaces.presets import PRESETS
    from trainers import ProxyConfig, load_dataset, train_proxy

    torch.set_num_threads(1)
    device = torch.device(spec["device"])
    data = load_dataset(spec["dataset"], spec.get("data_dir"), train_subset=spec.get("train_subset"),
                        val_subset=spec.get("val_subset"), img_size=spec.get("img_size"))
    out = {}
    for name in ("bare", "proxy"):
        torch.manual_seed(0)
        model = build_model(PRESETS[spec["preset"]], img_size=data.img_size, in_chans=data.in_chans,
                            num_classes=data.num_classes).to(device)
        start = time.perf_counter()
        if name == "proxy":
            train_proxy(model, data, ProxyConfig(epochs=spec["epochs"], device=spec["device"]), device=device)
        else:
            opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
            x_all, y_all = data.x_train.to(device), data.y_train.to(device)
            for _ in range(spec["epochs"]):
                perm = torch.randperm(len(y_all), device=device)
                for s in range(0, len(y_all), 32):
                    idx = perm[s:s + 32]
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                        loss = F.cross_entropy(model(data.normalize(x_all[idx])).float(), y_all[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        out[f"{name}_seconds"] = time.perf_counter() - start
    return out


def _mps_running() -> bool:
    try:
        out = subprocess.run(["pgrep", "-f", "nvidia-cuda-mps"], capture_output=True, text=True, timeout=5)
        return bool(out.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return False


def _busy_sampler(device: str, stop: threading.Event, samples: list[float]) -> None:
    import torch

    while not stop.wait(0.25):
        try:
            samples.append(torch.cuda.utilization(torch.device(device)) / 100.0)
        except Exception:  # noqa: BLE001 - no NVML: no busy figure
            return


def run_pack(k: int, spec: dict, tmp: Path) -> dict:
    """``k`` trials at once, each in its own process; their results and the batch's wall time."""
    procs, outs = [], []
    sampled: list[float] = []
    stop = threading.Event()
    sampler = None
    if spec["device"].startswith("cuda"):
        sampler = threading.Thread(target=_busy_sampler, args=(spec["device"], stop, sampled), daemon=True)
        sampler.start()
    start = time.perf_counter()
    for seed in range(k):
        path = tmp / f"k{k}_s{seed}.json"
        env = dict(os.environ, OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, "-m", "benchmarks.gpu_packing", "--worker",
                                       json.dumps({**spec, "seed": seed}), "--out", str(path)], cwd=ROOT, env=env))
        outs.append(path)
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - start
    stop.set()
    if sampler is not None:
        sampler.join(timeout=5)
    if any(codes):
        raise RuntimeError(f"pack {k}: a trial process failed (exit codes {codes})")
    trials = [json.loads(p.read_text()) for p in outs]
    return {"k": k, "wall_seconds": wall, "trials_per_hour": 3600 * k / wall,
            "gpu_busy": statistics.fmean(sampled) if sampled else None, "trials": trials}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--packs", default="1,2,4,8,16")
    p.add_argument("--preset", default="deit")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--img-size", type=int, default=28)
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--val-subset", type=int, default=2000)
    p.add_argument("--dry-run", action="store_true", help="CPU, digits, 1 epoch, 200 images, packs 1,2")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:  # one trial's process
        args.out.write_text(json.dumps(_worker(json.loads(args.worker))))
        return 0
    import torch

    if args.dry_run:
        spec = {"dataset": "digits", "data_dir": None, "train_subset": 200, "val_subset": 100, "img_size": None,
                "epochs": 1, "preset": "vix_fnet", "device": "cpu", "measure_rounds": 3, "min_block_seconds": 0.01}
        packs = [1, 2]
    else:
        if not torch.cuda.is_available():
            p.error("device: no CUDA device here; run with --dry-run to check the pipeline on the CPU")
        spec = {"dataset": args.dataset, "data_dir": args.data_dir, "train_subset": args.train_subset,
                "val_subset": args.val_subset, "img_size": args.img_size, "epochs": args.epochs,
                "preset": args.preset, "device": "cuda"}
        packs = [int(v) for v in args.packs.split(",")]
    result = {"spec": spec, "mps": _mps_running(), "device": torch.cuda.get_device_name(0) if spec["device"] ==
              "cuda" else "cpu", "packs": []}
    torch.set_num_threads(1)
    result["trainer"] = _bare_loop(spec)  # alone on the device, before any pack
    with tempfile.TemporaryDirectory() as tmp:
        for k in packs:
            row = run_pack(k, spec, Path(tmp))
            result["packs"].append(row)
            alone = result["packs"][0]
            tput_alone = statistics.median(t["throughput"] for t in alone["trials"])
            row["speedup"] = row["trials_per_hour"] / alone["trials_per_hour"]
            row["throughput_vs_alone"] = [t["throughput"] / tput_alone for t in row["trials"]]
            peaks = [t["train_peak_memory"] for t in row["trials"] if t["train_peak_memory"]]
            busy = "n/a" if row["gpu_busy"] is None else f"{row['gpu_busy']:.0%}"
            print(f"{k:>3} per GPU: {row['trials_per_hour']:8.1f} trials/h ({row['speedup']:.2f}x), busy {busy}, "
                  f"peak {max(peaks) / 2**20 if peaks else 0:,.0f} MiB/trial, stored throughput "
                  f"{min(row['throughput_vs_alone']):.2f}-{max(row['throughput_vs_alone']):.2f} of alone, "
                  f"accuracy {statistics.fmean(t['accuracy'] for t in row['trials']):.4f}", flush=True)
    t = result["trainer"]
    print(f"trainer alone: proxy {t['proxy_seconds']:.1f} s, bare loop {t['bare_seconds']:.1f} s "
          f"({t['proxy_seconds'] / t['bare_seconds']:.2f}x); MPS daemon seen: {result['mps']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
