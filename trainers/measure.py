"""Measurements of a candidate: parameters, FLOPs, throughput and peak memory.

Units: ``params`` trainable parameters (exact count); ``flops`` multiply-adds per image (fvcore's
convention: one fused multiply-add counts 1); ``throughput`` images per second of inference;
``peak_memory`` bytes.
"""

from __future__ import annotations

import math
import statistics
import time
import weakref
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = [
    "count_params", "count_flops", "count_module_flops", "measure_throughput", "peak_memory", "PeakMemoryTracker",
    "resolve_device",
]


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


# ---------------------------------------------------------------------- memory
class PeakMemoryTracker(TorchDispatchMode):
    """Tracks the peak bytes of tensors alive at once that were created inside the ``with`` block.

    Built on ``TorchDispatchMode``, which torch documents and exports only from
    ``torch.utils._python_dispatch`` (there is no public alias); it is the one private torch import here.

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
                device: str | torch.device = "cpu", train: bool = False) -> int:
    """Peak memory in bytes of one pass over ``batch_size`` images.

    On CUDA: ``torch.cuda.max_memory_allocated`` (weights included). On CPU: the peak of tensors alive
    at once during the pass (activations, plus gradients when ``train``), by :class:`PeakMemoryTracker`.
    ``train`` runs forward and backward; otherwise inference only.
    """
    device = torch.device(device)
    was_training = model.training
    model.train(train)
    x = torch.randn(batch_size, *input_shape, device=device)
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            with (nullcontext() if train else torch.inference_mode()):
                out = model(x)
                if train:
                    out.float().sum().backward()
            _sync(device)
            return int(torch.cuda.max_memory_allocated(device))
        tracker = PeakMemoryTracker()
        with (nullcontext() if train else torch.inference_mode()), tracker:
            out = model(x)
            if train:
                out.float().sum().backward()
        return int(tracker.peak)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)

