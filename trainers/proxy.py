"""Proxy training and evaluation of one candidate architecture.

A trial (docs/design.md, "A trial"): build the model from genes, train it a few epochs with AdamW and a
cosine schedule with warm-up (timm's ``create_optimizer_v2`` / ``create_scheduler_v2``, stepped per
update), label smoothing, bf16 autocast on CUDA, seeded; report validation top-1 accuracy after each
epoch; then measure params, FLOPs, throughput and peak memory at the deployment shape
(:class:`ProxyConfig` ``target_*``: by default the proxy's own).

On a GPU the loop does not wait for the device: the training images live on the device when they fit
(a quarter of its free memory), batches are indexed there, the running loss is summed on the device and
a non-finite loss is recorded on the device (the first step it happened) and checked every
``check_every`` steps and at the end of each epoch, the only host synchronisations besides validation.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn

from search_spaces import Architecture, build_model

from .data import ImageData
from .measure import (
    DTYPES,
    DeviceLock,
    GpuMonitor,
    TargetShapeError,
    ThroughputCache,
    autocast,
    count_flops,
    count_params,
    device_name,
    measure_throughput_vs_reference,
    peak_memory,
    reference_architecture,
    resolve_device,
)

__all__ = ["ProxyConfig", "TrialResult", "NonFiniteLossError", "TargetShapeError", "train_proxy", "evaluate",
           "evaluate_architecture", "seed_everything"]

#: ``report(epoch, metrics)`` is called after every epoch with ``{"epoch", "train_loss", "val_accuracy"}``.
ReportFn = Callable[[int, dict[str, float]], None]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the trial is failed with this message as its reason."""


@dataclass(frozen=True)
class ProxyConfig:
    """How a candidate is judged.

    Attributes:
        epochs: proxy training epochs (>= 1).
        batch_size: training batch (images).
        lr: peak AdamW learning rate; weight_decay: AdamW weight decay.
        warmup_epochs: linear warm-up length (epochs, may be fractional; updates stepped per batch).
        label_smoothing: cross-entropy label smoothing.
        seed: seeds Python, NumPy and torch, and the batch order.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        throughput_batch: batch for the throughput and memory measurement (images): the deployment batch.
        amp: bf16 autocast in training; default on CUDA only.
        target_img_size: deployment image side in pixels (None: the data set's own); params, FLOPs,
            throughput and peak memory are measured on the same genes built at that size.
        target_dtype: deployment dtype, ``float32`` or ``bfloat16`` (None: bfloat16 on CUDA, else float32).
        measure_rounds: timed rounds of the throughput protocol (median of the per-round ratios).
        min_block_seconds: shortest timed block of the protocol (passes are repeated up to it).
        max_pass_seconds: a model whose one pass at the deployment shape takes longer fails (None: no limit).
        cache_path: SQLite file of the :class:`~trainers.measure.ThroughputCache` (None: nothing kept).
        check_every: steps between checks for a non-finite loss (each check waits for the device).
    """

    epochs: int = 6
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    seed: int = 0
    device: str = "auto"
    throughput_batch: int = 64
    amp: bool | None = None
    target_img_size: int | None = None
    target_dtype: str | None = None
    measure_rounds: int = 15
    min_block_seconds: float = 0.04
    max_pass_seconds: float | None = 120.0
    cache_path: str | None = None
    check_every: int = 50

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs: must be a positive integer, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size: must be a positive integer, got {self.batch_size!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: must be a positive number, got {self.lr!r}")
        if self.target_dtype is not None and self.target_dtype not in DTYPES:
            raise ValueError(f"target_dtype: unknown value {self.target_dtype!r}; allowed: {', '.join(DTYPES)}")
        for name in ("throughput_batch", "measure_rounds", "check_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}: must be a positive integer, got {getattr(self, name)!r}")
        if self.target_img_size is not None and (not isinstance(self.target_img_size, int)
                                                 or not 1 <= self.target_img_size <= 4096):
            raise ValueError(f"target_img_size: must be an integer in [1, 4096], got {self.target_img_size!r}")

    def dtype_on(self, device: torch.device) -> str:
        """The deployment dtype on ``device``: :attr:`target_dtype`, else bfloat16 on CUDA and float32 elsewhere."""
        return self.target_dtype or ("bfloat16" if device.type == "cuda" else "float32")


@dataclass
class TrialResult:
    """Everything a trial produces. ``accuracy`` is the last epoch's validation top-1 (fraction in [0, 1])
    at the proxy's shape; ``params``, ``flops``, ``throughput`` and ``peak_memory`` belong to ``target``
    (the deployment shape: ``img_size``, ``batch``, ``dtype``, ``device``). ``throughput`` is the protocol's
    ratio to the reference times the reference's calibrated img/s; ``throughput_detail`` holds the raw
    figures (``img_s``, ``ratio``, ``reference_img_s``, ``reference_calibrated``, ``spread``, ``cached``).
    """

    arch: Architecture
    accuracy: float
    params: int
    flops: int
    throughput: float
    peak_memory: int
    history: list[dict[str, float]]
    device: str
    train_seconds: float
    wall_seconds: float
    model: nn.Module = field(repr=False)
    target: dict[str, Any] = field(default_factory=dict)
    throughput_detail: dict[str, Any] = field(default_factory=dict)
    proxy_params: int | None = None
    train_peak_memory: int | None = None  # bytes allocated at most while training (CUDA only)
    gpu_busy: float | None = None  # NVML's utilisation of the device while training, 0-1 (CUDA with NVML only)

    def metrics(self) -> dict[str, Any]:
        """JSON-able measurements (no model)."""
        return {
            "accuracy": self.accuracy, "params": self.params, "flops": self.flops, "throughput": self.throughput,
            "peak_memory": self.peak_memory, "device": self.device, "train_seconds": self.train_seconds,
            "wall_seconds": self.wall_seconds, "target": self.target, "throughput_detail": self.throughput_detail,
            "proxy_params": self.proxy_params, "train_peak_memory": self.train_peak_memory,
            "gpu_busy": self.gpu_busy,
        }


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _autocast(device: torch.device, amp: bool | None):
    use = device.type == "cuda" if amp is None else amp
    return autocast(device, "bfloat16" if use else "float32")


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageData, device: torch.device, batch_size: int = 256,
             amp: bool | None = None) -> float:
    """Validation top-1 accuracy (fraction in [0, 1])."""
    model.eval()
    correct = 0
    for start in range(0, len(data.y_val), batch_size):
        x = data.normalize(data.x_val[start:start + batch_size].to(device))
        y = data.y_val[start:start + batch_size].to(device)
        with _autocast(device, amp):
            logits = model(x)
        correct += (logits.argmax(dim=1) == y).sum().item()
    return correct / max(len(data.y_val), 1)


def _resident(data: ImageData, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images and labels on ``device`` when it is a GPU with room for them (a quarter of its
    free memory), else where they are."""
    if device.type == "cuda" and data.x_train.device != device:
        free, _ = torch.cuda.mem_get_info(device)
        if data.x_train.numel() * data.x_train.element_size() < free // 4:
            return data.x_train.to(device), data.y_train.to(device)
    return data.x_train, data.y_train


def train_proxy(model: nn.Module, data: ImageData, config: ProxyConfig, report: ReportFn | None = None,
                device: torch.device | None = None, lock: DeviceLock | None = None, *,
                pause_at: int | None = None, state: dict[str, Any] | None = None) -> list[dict[str, float]]:
    """Train ``model`` in place for ``config.epochs`` epochs; return the per-epoch history.

    ``lock``: held shared for each step, so a throughput measurement on the same device (which holds it
    exclusively) never overlaps a training step.

    Pause and resume (successive halving with promotion, ASHA's pause, arXiv 1810.05934): with ``pause_at``
    the run stops after that epoch, its schedule still sized to ``config.epochs``, and ``state`` (a dict) is
    filled with what resuming needs: ``epoch``, ``model`` and ``optimizer`` state dicts (AdamW's moments),
    ``update`` (the schedule's step), the batch-order generator's and torch's RNG states and the history so
    far; plain tensors and numbers, for ``torch.save``. Given such a ``state`` (and no ``pause_at``, or a
    later one), the run resumes there: the weights are loaded into ``model`` and the returned history is the
    whole run's. On the CPU, pausing and resuming gives the same curve as one uninterrupted run.

    Raises:
        NonFiniteLossError: the loss became NaN or infinite (the message says at which step); checked every
            ``config.check_every`` steps and at the end of each epoch, so up to that many steps may run first.
        ValueError: ``pause_at`` not in ``[1, config.epochs)`` or not after the resumed epoch, or ``pause_at``
            without a ``state`` dict to fill.
    """
    start = int(state["epoch"]) if state else 0
    if pause_at is not None and (not isinstance(pause_at, int) or not start < pause_at < config.epochs):
        raise ValueError(f"pause_at: must be an integer in [{start + 1}, {config.epochs - 1}] (after the resumed "
                         f"epoch {start}, before the run's {config.epochs} epochs), got {pause_at!r}")
    if pause_at is not None and state is None:
        raise ValueError("state: pause_at needs a dict to fill with the paused run's state")
    if start >= config.epochs:
        raise ValueError(f"state: the paused run is at epoch {start}, not before the run's {config.epochs} epochs")
    device = device or resolve_device(config.device)
    if start:
        model.load_state_dict(state["model"])
    model.to(device)
    x_all, y_all = _resident(data, device)
    steps_per_epoch = max(1, math.ceil(len(data.y_train) / config.batch_size))
    optimizer = create_optimizer_v2(model, opt="adamw", lr=config.lr, weight_decay=config.weight_decay)
    scheduler, _ = create_scheduler_v2(
        optimizer, sched="cosine", num_epochs=config.epochs, warmup_epochs=int(math.ceil(config.warmup_epochs)),
        warmup_lr=config.lr * 0.01, min_lr=config.lr * 0.01, step_on_epochs=False, updates_per_epoch=steps_per_epoch,
    )
    g = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    update = 0
    if start:
        optimizer.load_state_dict(state["optimizer"])
        update = int(state["update"])
        scheduler.step_update(update)
        g.set_state(state["generator"])
        torch.set_rng_state(state["rng"])
        history = [dict(r) for r in state["history"]]
    step_lock = lock.shared if lock is not None else nullcontext
    for epoch in range(start, pause_at or config.epochs):
        model.train()
        perm = torch.randperm(len(data.y_train), generator=g).to(x_all.device)
        total = torch.zeros((), device=device)
        first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first step with a non-finite loss
        bad_value = torch.zeros((), device=device)  # and that loss
        for step in range(steps_per_epoch):
            idx = perm[step * config.batch_size:(step + 1) * config.batch_size]
            x = data.normalize(x_all[idx].to(device, non_blocking=True))
            y = y_all[idx].to(device, non_blocking=True)
            with step_lock():
                with _autocast(device, config.amp):
                    loss = F.cross_entropy(model(x).float(), y, label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            update += 1
            scheduler.step_update(update)
            detached = loss.detach()
            new_bad = (first_bad < 0) & ~torch.isfinite(detached)
            first_bad = torch.where(new_bad, step, first_bad)
            bad_value = torch.where(new_bad, detached.float(), bad_value)
            total += detached * len(idx)
            if (step + 1) % config.check_every == 0 or step + 1 == steps_per_epoch:
                bad = int(first_bad.item())
                if bad >= 0:
                    raise NonFiniteLossError(f"loss is {bad_value.item()} at epoch {epoch + 1}, step {bad + 1}")
        accuracy = evaluate(model, data, device, amp=config.amp)
        record = {"epoch": epoch + 1, "train_loss": float(total.item()) / len(data.y_train),
                  "val_accuracy": accuracy}
        history.append(record)
        if report is not None:
            report(epoch + 1, record)
    if pause_at is not None:
        state.clear()
        state.update(epoch=pause_at, update=update, history=[dict(r) for r in history], generator=g.get_state(),
                     rng=torch.get_rng_state(), model={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                     optimizer=optimizer.state_dict())
    return history


def evaluate_architecture(arch: Architecture, data: ImageData, config: ProxyConfig = ProxyConfig(),
                          report: ReportFn | None = None,
                          prepare: Callable[[nn.Module], None] | None = None,
                          check: Callable[[dict[str, Any]], None] | None = None, *,
                          pause_at: int | None = None, state: dict[str, Any] | None = None) -> TrialResult:
    """Build, proxy-train and measure ``arch`` on ``data``.

    ``pause_at``, ``state``: pause the training after that epoch and fill ``state``, or resume from a
    ``state`` a paused run filled (:func:`train_proxy`); the result's accuracy is the last epoch trained.

    Accuracy comes from the proxy (the data set's image size). Params, FLOPs, throughput and peak memory
    are measured first (independent of the weights; each epoch's ``report`` carries ``params`` and
    ``throughput`` too, for a scheduler that stops trials early), at the deployment shape:
    ``config.target_img_size`` (default: the data set's), ``config.throughput_batch`` images,
    ``config.dtype_on(device)``, on the trial's device. At another
    image size the same genes are built there (same patch size, so the token count grows with the area)
    and take the trained weights through :func:`search_spaces.model.checkpoint_filter_fn` (position
    embeddings resampled as timm does); mechanisms tied to a token count (Linformer, Mixer) keep their
    fresh token-axis weights, built for the target's token count.

    ``prepare(model)``, if given, runs on the built model (on its device) before anything is measured or trained.
    ``check(measured)``, if given, is called with the measured ``params``, ``flops``, ``throughput`` and
    ``peak_memory`` before training, and may raise to stop the evaluation there (a budget the design breaks:
    nothing is trained).

    Raises:
        GeneError: invalid genes or genes that do not fit the image size (proxy or target).
        NonFiniteLossError: the training diverged.
        TargetShapeError: the model cannot run at the deployment shape (out of memory, or too slow).
    """
    wall_start = time.perf_counter()
    device = resolve_device(config.device)
    seed_everything(config.seed)
    model = build_model(arch, img_size=data.img_size, in_chans=data.in_chans, num_classes=data.num_classes)
    target_size = config.target_img_size or data.img_size
    if target_size != data.img_size:
        arch.check_image(target_size)  # refuse before training, not after
    model.to(device)
    if prepare is not None:
        prepare(model)
    lock = DeviceLock(device)
    try:
        # Efficiency first: it does not depend on the weights, and a scheduler that may stop the trial
        # early needs it with every epoch's accuracy (each report carries params and throughput).
        proxy_params = count_params(model)
        with lock.exclusive():
            measured, target, detail = _measure_at_target(arch, model, data, config, device, target_size)
        if check is not None:
            check(dict(measured))
        seed_everything(config.seed)  # training's randomness does not depend on whether the cache answered

        def on_epoch(epoch: int, record: dict[str, float]) -> None:
            if report is not None:
                report(epoch, {**record, "params": measured["params"], "throughput": measured["throughput"]})

        train_start = time.perf_counter()
        with GpuMonitor(device) as monitor:  # what packing trials on one GPU needs to know (CUDA only)
            history = train_proxy(model, data, config, report=on_epoch, device=device, lock=lock, pause_at=pause_at,
                                  state=state)
        train_seconds = time.perf_counter() - train_start
        model.eval()
    finally:
        lock.close()
    result = TrialResult(
        arch=arch, accuracy=history[-1]["val_accuracy"], history=history, device=device_name(device),
        train_seconds=train_seconds, wall_seconds=0.0, model=model, target=target, throughput_detail=detail,
        proxy_params=proxy_params, train_peak_memory=monitor.peak_memory, gpu_busy=monitor.busy, **measured,
    )
    result.wall_seconds = time.perf_counter() - wall_start
    return result


def _target_model(arch: Architecture, model: nn.Module, data: ImageData, size: int, device: torch.device) -> nn.Module:
    """``arch`` built for ``size`` pixels with ``model``'s trained weights where they carry over."""
    from search_spaces import registry
    from search_spaces.model import checkpoint_filter_fn

    target = build_model(arch, img_size=size, in_chans=data.in_chans, num_classes=data.num_classes).to(device)
    state = model.state_dict()
    if registry.get_mechanism(arch.attention).fixed_tokens:  # token-axis weights: no resampling exists
        own = target.state_dict()
        state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    else:
        state = checkpoint_filter_fn(state, target)
    target.load_state_dict(state, strict=False)
    return target.eval()


def _measure_at_target(arch: Architecture, model: nn.Module, data: ImageData, config: ProxyConfig,
                       device: torch.device, size: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(params/flops/throughput/peak_memory, the target shape, the throughput protocol's figures)."""
    dtype = config.dtype_on(device)
    batch = config.throughput_batch
    shape = (data.in_chans, size, size)
    where = device_name(device)
    target = {"img_size": size, "batch": batch, "dtype": dtype, "device": where}
    try:
        measured_model = model if size == data.img_size else _target_model(arch, model, data, size, device)
        params = count_params(measured_model)
        flops = count_flops(measured_model, shape, device=device)
        if device.type == "cpu":  # no allocator to raise OutOfMemoryError: refuse before the machine swaps
            _check_host_memory(peak_memory(measured_model, shape, batch_size=1, device=device, dtype=dtype), batch)
        memory = peak_memory(measured_model, shape, batch_size=batch, device=device, dtype=dtype)
        cache = ThroughputCache(config.cache_path)
        try:
            detail = _throughput(arch, measured_model, data, config, device, size, dtype, cache, where)
        finally:
            cache.close()
    except torch.OutOfMemoryError:
        raise TargetShapeError(f"out of memory at the deployment shape ({size} px, batch {batch}, {dtype}, "
                               f"{where})") from None
    except TargetShapeError as exc:
        raise TargetShapeError(f"at the deployment shape ({size} px, batch {batch}, {dtype}): {exc}") from None
    measured = {"params": params, "flops": flops, "throughput": detail["throughput"], "peak_memory": memory}
    return measured, target, detail


def _check_host_memory(per_image: int, batch: int, share: float = 0.5) -> None:
    """Refuse a CPU measurement whose activations (``per_image`` bytes at batch 1, times ``batch``) would
    take more than ``share`` of the memory available now (on the CPU an oversized batch does not raise:
    the operating system swaps or kills a process, maybe not this one).

    Raises:
        TargetShapeError: it would not fit.
    """
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system that says
        return
    need = per_image * batch
    if need > share * available:
        raise TargetShapeError(f"out of memory: the activations need about {need / 2**30:.1f} GiB, more than "
                               f"{share:.0%} of the {available / 2**30:.1f} GiB available")


def _throughput(arch: Architecture, model: nn.Module, data: ImageData, config: ProxyConfig, device: torch.device,
                size: int, dtype: str, cache: ThroughputCache, where: str) -> dict[str, Any]:
    """The protocol's figures for ``model``, from the cache when this model was timed before."""
    shape = (data.in_chans, size, size)
    batch = config.throughput_batch
    model_key = cache.key("model", arch.canonical_key(size), data.in_chans, data.num_classes, where, size, batch,
                          dtype)
    known = cache.get(model_key)
    if known is not None:
        return {**known, "cached": True}
    ref_arch = reference_architecture(size)
    reference = build_model(ref_arch, img_size=size, in_chans=data.in_chans, num_classes=data.num_classes).to(device)
    seed_everything(config.seed)
    got = measure_throughput_vs_reference(model, reference, shape, batch_size=batch, device=device, dtype=dtype,
                                          rounds=config.measure_rounds, min_block_seconds=config.min_block_seconds,
                                          max_pass_seconds=config.max_pass_seconds)
    # The reference's img/s is calibrated once per (device, shape, dtype, torch): the first measurement wins.
    calibrated = cache.calibrated_reference(got.reference_img_s, img_size=size, in_chans=data.in_chans,
                                            num_classes=data.num_classes, device=where, batch=batch, dtype=dtype)
    detail = {**got.to_dict(), "reference_calibrated": calibrated, "throughput": got.ratio * calibrated}
    cache.put_first(model_key, detail)
    return {**detail, "cached": False}
