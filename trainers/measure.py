"""Measurements of a candidate: parameters, FLOPs, throughput and peak memory.

Units: ``params`` trainable parameters (exact count); ``flops`` multiply-adds per image (fvcore's
convention: one fused multiply-add counts 1); ``throughput`` images per second of inference;
``peak_memory`` bytes.

Throughput protocol (:func:`measure_throughput_vs_reference`; docs/design.md, "A trial", step 5): inference
mode, a fixed batch and dtype, warm-up, blocks of passes long enough to time (``min_block_seconds``),
the device synchronised around each block, the candidate's blocks interleaved with a fixed reference
model's (:func:`reference_architecture`) in alternating order, and the median of the per-round ratios.
The ratio is what a shared, noisy machine cannot move much (both models see the same load); the img/s
figure a search stores is that ratio times the reference's img/s calibrated once per (device, shape,
dtype, torch version) and kept in a :class:`ThroughputCache`, which also keeps each measured model's
result so the same model is not timed again. Measuring holds the device exclusively
(:class:`DeviceLock`): trials training on the same device (fractional GPUs, several CPU trials) pause
between steps until it is done.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import socket
import sqlite3
import statistics
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .torch_adapter import TorchDispatchMode

__all__ = [
    "count_params", "count_flops", "count_module_flops", "measure_throughput", "peak_memory", "PeakMemoryTracker",
    "resolve_device", "DTYPES", "ThroughputResult", "measure_throughput_vs_reference", "reference_architecture",
    "ThroughputCache", "DeviceLock", "TargetShapeError", "device_name", "autocast", "GpuMonitor",
]

#: Inference dtypes of the throughput protocol: float32, or bfloat16 autocast.
DTYPES: tuple[str, ...] = ("float32", "bfloat16")


class TargetShapeError(RuntimeError):
    """A model cannot be measured at the deployment shape (out of memory, or one pass over the time limit);
    the trial fails with this message as its reason."""


def device_name(device: torch.device) -> str:
    """What a figure measured on ``device`` belongs to: ``cpu`` or the CUDA device's name."""
    return str(device) if device.type != "cuda" else torch.cuda.get_device_name(device)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/``None`` -> CUDA when available, else CPU; otherwise ``torch.device(device)``.

    Raises:
        ValueError: an unknown device string, or CUDA asked for where there is none.
    """
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: unknown device {device!r}; use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda asked for, but no CUDA device is available")
    return dev


def count_params(model: nn.Module) -> int:
    """Exact number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------- FLOPs (fvcore)
def _shape(value: Any) -> list[int]:
    from fvcore.nn.jit_handles import get_shape

    return get_shape(value)


def _sdpa_flop(inputs: list, outputs: list) -> int:
    """scaled_dot_product_attention: Q K^T and A V, B*H*N*M*(d + d_v) multiply-adds."""
    q, k, v = (_shape(t) for t in inputs[:3])
    *batch, n, d = q
    m, dv = k[-2], v[-1]
    return math.prod(batch) * n * m * (d + dv)


def _fft_flop(inputs: list, outputs: list) -> int:
    """FFT over a transform of total size n per batch element: n * log2(n) multiply-adds (radix-2 count)."""
    out = _shape(outputs[0])
    inp = _shape(inputs[0])
    # The transformed dims are the ones fvcore cannot see; assume the last two (FNet's 2-D transform)
    # unless the op is 1-D.
    total = math.prod(out) if out else math.prod(inp)
    n = max(inp[-1], 1) * (max(inp[-2], 1) if len(inp) >= 2 else 1)
    return int(total * math.log2(n)) if n > 1 else 0


_EXTRA_HANDLES: dict[str, Callable] = {
    "aten::scaled_dot_product_attention": _sdpa_flop,
    "aten::fft_fft2": _fft_flop,
    "aten::fft_fftn": _fft_flop,
}


def count_module_flops(module: nn.Module, *inputs: Any) -> int:
    """Multiply-adds of ``module(*inputs)`` by fvcore, with vitnas's extra op handles.

    The handles are the ones :func:`count_flops` uses (``scaled_dot_product_attention``, 2-D FFTs);
    element-wise operations are not counted. The module is traced in eval mode under ``no_grad`` and its
    training flag restored afterwards. Inputs may be any values ``torch.jit.trace`` accepts (tensors or
    tuples of tensors); wrap a module whose forward takes other arguments (a layout, say) in a small
    ``nn.Module`` that supplies them.
    """
    from fvcore.nn import FlopCountAnalysis

    was_training = module.training
    module.eval()
    try:
        analysis = FlopCountAnalysis(module, inputs if len(inputs) != 1 else inputs[0])
        analysis.set_op_handle(**_EXTRA_HANDLES)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        with torch.no_grad():
            return int(analysis.total())
    finally:
        module.train(was_training)


def count_flops(model: nn.Module, input_shape: tuple[int, int, int], device: str | torch.device = "cpu") -> int:
    """Multiply-adds of one forward pass on one image of shape ``input_shape`` (C, H, W), by fvcore.

    fvcore counts matmul, linear, einsum, convolution and batch-norm; vitnas adds handles for
    ``scaled_dot_product_attention`` (B H N M (d + d_v)) and 2-D FFTs (n log2 n per transform of size n).
    Element-wise operations (softmax, GELU, additions) are not counted, as fvcore does not count them.
    """
    return count_module_flops(model, torch.zeros(1, *input_shape, device=device))


# ---------------------------------------------------------------------- throughput
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_throughput(model: nn.Module, input_shape: tuple[int, int, int], *, batch_size: int = 64,
                       device: str | torch.device = "cpu", warmup: int = 2, runs: int = 5,
                       amp: bool | None = None) -> float:
    """Inference throughput in images/s: median over ``runs`` timed forward passes of ``batch_size``
    images after ``warmup`` untimed passes, the device synchronised around each timing.

    ``amp`` (default: on CUDA) runs under bf16 autocast, as the proxy training does.
    """
    device = torch.device(device)
    amp = device.type == "cuda" if amp is None else amp
    was_training = model.training
    model.eval()
    x = torch.randn(batch_size, *input_shape, device=device)
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()
    times = []
    try:
        with torch.inference_mode(), ctx:
            for _ in range(warmup):
                model(x)
            for _ in range(runs):
                _sync(device)
                start = time.perf_counter()
                model(x)
                _sync(device)
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return batch_size / statistics.median(times)


def autocast(device: torch.device, dtype: str):
    """The context a forward pass in ``dtype`` runs under: bfloat16 autocast on ``device``, or nothing for
    float32 (:data:`DTYPES`)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bfloat16" else nullcontext()


@dataclass(frozen=True)
class ThroughputResult:
    """One protocol measurement (:func:`measure_throughput_vs_reference`).

    Attributes:
        img_s: the candidate's median img/s over the rounds (raw, as this machine's load allowed).
        ratio: median over rounds of candidate img/s / reference img/s measured next to it.
        reference_img_s: the reference's median img/s in the same rounds.
        spread: (max - min) / median of the per-round ratios (how steady the rounds were).
        rounds: timed rounds; passes: forward passes per timed block of the candidate.
    """

    img_s: float
    ratio: float
    reference_img_s: float
    spread: float
    rounds: int
    passes: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def reference_architecture(img_size: int):
    """The fixed reference model of the throughput protocol: DeiT-style MHSA, embed_dim 64, depth 4,
    4 heads, mlp_ratio 2, learned positions, the largest of patch sizes 4, 2, 1 that divides ``img_size``."""
    from search_spaces import Architecture

    patch = next(p for p in (4, 2, 1) if img_size % p == 0)
    return Architecture(attention="mhsa", embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0, patch_size=patch,
                        pos_encoding="learned", stem="patch")


def measure_throughput_vs_reference(model: nn.Module, reference: nn.Module, input_shape: tuple[int, int, int], *,
                                    batch_size: int = 64, device: str | torch.device = "cpu",
                                    dtype: str = "float32", rounds: int = 15, min_block_seconds: float = 0.04,
                                    warmup: int = 2, max_pass_seconds: float | None = None) -> ThroughputResult:
    """Inference throughput of ``model`` by the fixed protocol, interleaved with ``reference``.

    Both models run under ``torch.inference_mode`` on ``batch_size`` random images of ``input_shape``
    (C, H, W) in ``dtype`` (``float32``, or ``bfloat16`` autocast). After ``warmup`` untimed passes each,
    a block is as many passes as last ``min_block_seconds`` (at least one); each of ``rounds`` rounds
    times one block of each model, the device synchronised around every block, the order alternating
    between rounds so a drift in the machine's load hits both alike.

    Raises:
        ValueError: an unknown ``dtype``, or ``rounds`` < 1.
        TargetShapeError: out of memory, or a warm-up pass over ``max_pass_seconds``.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype: unknown value {dtype!r}; allowed: {', '.join(DTYPES)}")
    if rounds < 1:
        raise ValueError(f"rounds: must be >= 1, got {rounds!r}")
    device = torch.device(device)
    modes = (model.training, reference.training)
    model.eval()
    reference.eval()
    try:
        with torch.inference_mode(), autocast(device, dtype):
            x = torch.randn(batch_size, *input_shape, device=device)

            def block(m: nn.Module, n: int) -> float:
                _sync(device)
                start = time.perf_counter()
                for _ in range(n):
                    m(x)
                _sync(device)
                return time.perf_counter() - start

            passes = []
            for m in (model, reference):
                pass_time = min(block(m, 1) for _ in range(max(1, warmup)))
                if max_pass_seconds is not None and pass_time > max_pass_seconds:
                    raise TargetShapeError(f"one pass over {batch_size} images of {input_shape[1]}x{input_shape[2]} "
                                           f"took {pass_time:.1f} s, over the limit of {max_pass_seconds:g} s")
                passes.append(max(1, math.ceil(min_block_seconds / max(pass_time, 1e-9))))
            rates: dict[int, list[float]] = {0: [], 1: []}
            for r in range(rounds):
                for i in ((0, 1) if r % 2 == 0 else (1, 0)):
                    m = model if i == 0 else reference
                    rates[i].append(batch_size * passes[i] / block(m, passes[i]))
    except torch.OutOfMemoryError:
        raise TargetShapeError(f"out of memory on {device} with {batch_size} images of "
                               f"{input_shape[1]}x{input_shape[2]}") from None
    finally:
        model.train(modes[0])
        reference.train(modes[1])
    ratios = [a / b for a, b in zip(rates[0], rates[1], strict=True)]
    ratio = statistics.median(ratios)
    return ThroughputResult(img_s=statistics.median(rates[0]), ratio=ratio,
                            reference_img_s=statistics.median(rates[1]),
                            spread=(max(ratios) - min(ratios)) / ratio, rounds=rounds, passes=passes[0])


class ThroughputCache:
    """Throughput figures kept on disk (SQLite), so a model is timed once per (canonical key, device, shape,
    dtype, torch version) and the reference is calibrated once per (device, shape, dtype, torch version).

    Safe for several processes (SQLite's own locking). ``path=None``: an in-memory cache (nothing kept).
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = str(path) if path is not None else ":memory:"
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60.0)
        with self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS throughput (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    @staticmethod
    def key(kind: str, *parts: Any) -> str:
        """``kind|part|...|torch version``."""
        return "|".join(str(p) for p in (kind, *parts, torch.__version__))

    def get(self, key: str) -> dict[str, Any] | None:
        """What the cache holds under ``key`` (None: nothing)."""
        row = self._db.execute("SELECT value FROM throughput WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put_first(self, key: str, value: dict[str, Any]) -> dict[str, Any]:
        """Store ``value`` unless ``key`` holds one already; returns what the cache holds (the first wins,
        so every reader agrees on a calibration)."""
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO throughput (key, value) VALUES (?, ?)", (key, json.dumps(value)))
        return self.get(key) or value

    def calibrated_reference(self, reference_img_s: float, *, img_size: int, in_chans: int, num_classes: int,
                             device: str, batch: int, dtype: str) -> float:
        """The reference model's calibrated img/s at this (device, shape, dtype, torch version): the first
        measurement ever stored (``reference_img_s`` when this is the first), so every search agrees."""
        ref = reference_architecture(img_size)
        key = self.key("reference", ref.canonical_key(img_size), in_chans, num_classes, device, img_size, batch, dtype)
        return float(self.put_first(key, {"img_s": reference_img_s})["img_s"])

    def close(self) -> None:
        self._db.close()


class DeviceLock:
    """A per-device readers-writer lock between processes on one machine (``fcntl`` file locks).

    Training holds it shared for each step (:meth:`shared`); measuring holds it exclusively
    (:meth:`exclusive`), so no trial trains on the device while another's throughput is timed. A turnstile
    lock, taken by both sides before the main lock, keeps a waiting measurement from being starved by
    trainers that keep taking shared turns.
    """

    def __init__(self, device: str | torch.device, folder: str | Path | None = None) -> None:
        device = torch.device(device)
        index = device.index if device.index is not None else (torch.cuda.current_device()
                                                                 if device.type == "cuda" else 0)
        folder = Path(folder or Path(tempfile.gettempdir()) / f"vitnas-locks-{os.getuid()}")
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        stem = f"{socket.gethostname()}-{device.type}{index}"
        self._main = os.open(folder / f"{stem}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._gate = os.open(folder / f"{stem}.gate", os.O_RDWR | os.O_CREAT, 0o600)

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        fcntl.flock(self._gate, fcntl.LOCK_EX)
        fcntl.flock(self._main, fcntl.LOCK_SH)
        fcntl.flock(self._gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(self._main, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        fcntl.flock(self._gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(self._main, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._main, fcntl.LOCK_UN)
        finally:
            fcntl.flock(self._gate, fcntl.LOCK_UN)

    def close(self) -> None:
        for fd in (self._main, self._gate):
            with contextlib.suppress(OSError):
                os.close(fd)


# ---------------------------------------------------------------------- memory
class PeakMemoryTracker(TorchDispatchMode):
    """Tracks the peak bytes of tensors alive at once that were created inside the ``with`` block.

    Built on ``TorchDispatchMode``, which torch exports only from a private module (see
    :mod:`trainers.torch_adapter`, the one place vitnas imports it).

    Works on any device (it follows tensor storages, not the allocator), so it measures activation
    memory on CPU too. ``peak`` and ``current`` are in bytes; memory that existed before entry (inputs,
    weights) is not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _track(self, t: torch.Tensor) -> None:
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return
        key = storage.data_ptr()
        if key in self._seen or storage.nbytes() == 0:
            return
        self._seen.add(key)
        size = storage.nbytes()
        self.current += size
        self.peak = max(self.peak, self.current)

        def release(key: int = key, size: int = size) -> None:
            self._seen.discard(key)
            self.current -= size

        weakref.finalize(storage, release)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in _tensors(out):
            if not t.is_meta:
                self._track(t)
        return out


def _tensors(value) -> list[torch.Tensor]:
    """The tensors in an op's output (a tensor, or tuples/lists of them)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def peak_memory(model: nn.Module, input_shape: tuple[int, int, int], *, batch_size: int = 64,
                device: str | torch.device = "cpu", train: bool = False, dtype: str = "float32") -> int:
    """Peak memory in bytes of one pass over ``batch_size`` images.

    On CUDA: ``torch.cuda.max_memory_allocated`` (weights included). On CPU: the peak of tensors alive
    at once during the pass (activations, plus gradients when ``train``), by :class:`PeakMemoryTracker`.
    ``train`` runs forward and backward; otherwise inference only. ``dtype``: ``float32`` or ``bfloat16``
    autocast.

    Raises:
        TargetShapeError: out of memory.
    """
    device = torch.device(device)
    was_training = model.training
    model.train(train)
    x = torch.randn(batch_size, *input_shape, device=device)
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            with (nullcontext() if train else torch.inference_mode()), autocast(device, dtype):
                out = model(x)
                if train:
                    out.float().sum().backward()
            _sync(device)
            return int(torch.cuda.max_memory_allocated(device))
        tracker = PeakMemoryTracker()
        with (nullcontext() if train else torch.inference_mode()), autocast(device, dtype), tracker:
            out = model(x)
            if train:
                out.float().sum().backward()
        return int(tracker.peak)
    except torch.OutOfMemoryError:
        raise TargetShapeError(f"out of memory on {device} with {batch_size} images of "
                               f"{input_shape[1]}x{input_shape[2]}") from None
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)



class GpuMonitor:
    """Peak training memory and GPU busy fraction while a block runs on a CUDA device (on the CPU: nothing).

    ``with GpuMonitor(device) as m: train()`` then ``m.peak_memory`` (bytes, ``torch.cuda.max_memory_allocated``
    since the block began) and ``m.busy`` (0-1: the mean of NVML's utilisation, the fraction of time a kernel
    ran on the device, sampled every ``interval`` seconds by a background thread through
    ``torch.cuda.utilization``; None where NVML is not installed). The busy fraction is the device's, so
    trials sharing a GPU each see the total.
    """

    def __init__(self, device: torch.device, interval: float = 0.2) -> None:
        self.device, self.interval = device, interval
        self.peak_memory: int | None = None
        self.busy: float | None = None
        self._samples: list[float] = []
        self._stop: Any = None
        self._thread: Any = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._samples.append(float(torch.cuda.utilization(self.device)) / 100.0)
            except Exception:  # noqa: BLE001 - NVML missing or not answering: no busy figure
                return

    def __enter__(self) -> GpuMonitor:
        if self.device.type == "cuda":
            import threading

            torch.cuda.reset_peak_memory_stats(self.device)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type != "cuda":
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak_memory = int(torch.cuda.max_memory_allocated(self.device))
        self.busy = sum(self._samples) / len(self._samples) if self._samples else None
