"""Proxy training and evaluation of one candidate architecture.

A trial (DESIGN.md, "A trial"): build the model from genes, train it a few epochs with AdamW and a
cosine schedule with warm-up (timm's ``create_optimizer_v2`` / ``create_scheduler_v2``, stepped per
update), label smoothing, bf16 autocast on CUDA, seeded; report validation top-1 accuracy after each
epoch; then measure params, FLOPs, throughput and peak memory.
"""

from __future__ import annotations

import math
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
from .measure import count_flops, count_params, measure_throughput, peak_memory, resolve_device

__all__ = ["ProxyConfig", "TrialResult", "NonFiniteLossError", "train_proxy", "evaluate", "evaluate_architecture",
           "seed_everything"]

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
        throughput_batch: batch for the throughput and memory measurement (images).
        amp: bf16 autocast; default on CUDA only.
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

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs: must be a positive integer, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size: must be a positive integer, got {self.batch_size!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: must be a positive number, got {self.lr!r}")


@dataclass
class TrialResult:
    """Everything a trial produces. ``accuracy`` is the last epoch's validation top-1 (fraction in [0, 1])."""

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

    def metrics(self) -> dict[str, Any]:
        """JSON-able measurements (no model)."""
        return {
            "accuracy": self.accuracy, "params": self.params, "flops": self.flops, "throughput": self.throughput,
            "peak_memory": self.peak_memory, "device": self.device, "train_seconds": self.train_seconds,
            "wall_seconds": self.wall_seconds,
        }


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _autocast(device: torch.device, amp: bool | None):
    use = device.type == "cuda" if amp is None else amp
    return torch.autocast(device.type, dtype=torch.bfloat16) if use else nullcontext()


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


def train_proxy(model: nn.Module, data: ImageData, config: ProxyConfig, report: ReportFn | None = None,
                device: torch.device | None = None) -> list[dict[str, float]]:
    """Train ``model`` in place for ``config.epochs`` epochs; return the per-epoch history.

    Raises:
        NonFiniteLossError: the loss became NaN or infinite (the message says when).
    """
    device = device or resolve_device(config.device)
    model.to(device)
    steps_per_epoch = max(1, math.ceil(len(data.y_train) / config.batch_size))
    optimizer = create_optimizer_v2(model, opt="adamw", lr=config.lr, weight_decay=config.weight_decay)
    scheduler, _ = create_scheduler_v2(
        optimizer, sched="cosine", num_epochs=config.epochs, warmup_epochs=int(math.ceil(config.warmup_epochs)),
        warmup_lr=config.lr * 0.01, min_lr=config.lr * 0.01, step_on_epochs=False, updates_per_epoch=steps_per_epoch,
    )
    g = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    update = 0
    for epoch in range(config.epochs):
        model.train()
        perm = torch.randperm(len(data.y_train), generator=g)
        total, count = 0.0, 0
        for step in range(steps_per_epoch):
            idx = perm[step * config.batch_size:(step + 1) * config.batch_size]
            x = data.normalize(data.x_train[idx].to(device, non_blocking=True))
            y = data.y_train[idx].to(device, non_blocking=True)
            with _autocast(device, config.amp):
                loss = F.cross_entropy(model(x).float(), y, label_smoothing=config.label_smoothing)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            update += 1
            scheduler.step_update(update)
            total += loss.item() * len(idx)
            count += len(idx)
        accuracy = evaluate(model, data, device, amp=config.amp)
        record = {"epoch": epoch + 1, "train_loss": total / count, "val_accuracy": accuracy}
        history.append(record)
        if report is not None:
            report(epoch + 1, record)
    return history


def evaluate_architecture(arch: Architecture, data: ImageData, config: ProxyConfig = ProxyConfig(),
                          report: ReportFn | None = None,
                          prepare: Callable[[nn.Module], None] | None = None) -> TrialResult:
    """Build, proxy-train and measure ``arch`` on ``data``.

    ``prepare(model)``, if given, runs on the built model before training (e.g. fault injection in tests).

    Raises:
        GeneError: invalid genes or genes that do not fit the image size.
        NonFiniteLossError: the training diverged.
    """
    wall_start = time.perf_counter()
    device = resolve_device(config.device)
    seed_everything(config.seed)
    model = build_model(arch, img_size=data.img_size, in_chans=data.in_chans, num_classes=data.num_classes)
    model.to(device)
    if prepare is not None:
        prepare(model)
    train_start = time.perf_counter()
    history = train_proxy(model, data, config, report=report, device=device)
    train_seconds = time.perf_counter() - train_start
    model.eval()
    input_shape = (data.in_chans, data.img_size, data.img_size)
    result = TrialResult(
        arch=arch,
        accuracy=history[-1]["val_accuracy"],
        params=count_params(model),
        flops=count_flops(model, input_shape, device=device),
        throughput=measure_throughput(model, input_shape, batch_size=config.throughput_batch, device=device,
                                      amp=config.amp),
        peak_memory=peak_memory(model, input_shape, batch_size=config.throughput_batch, device=device),
        history=history,
        device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        train_seconds=train_seconds,
        wall_seconds=0.0,
        model=model,
    )
    result.wall_seconds = time.perf_counter() - wall_start
    return result
