"""How many trials share a GPU (``--gpus-per-trial auto`` on a CUDA cluster).

One proxy trial keeps a large GPU only partly busy (docs/benchmarks.md, "Proxy trainer on a GPU": 15-18% of
an H100 at batch 32), so a search that gives each trial a whole GPU pays for the rest idle. Ray Tune shares a
GPU between trials that ask for a fraction of it; :class:`PackingPlan` chooses the fraction from what the
first trials measured:

- the first trials run alone (one per GPU), so what they measure is theirs: their peak training memory
  (``torch.cuda.max_memory_allocated``) and how busy they kept the GPU (NVML's utilisation, sampled while
  they trained; :func:`trainers.proxy.train_proxy` reports both);
- then ``per_gpu = min(memory bound, busy bound, max_per_gpu)``: the memory bound is how many of the largest
  trial seen fit in the GPU's memory with ``margin`` to spare; the busy bound is ``ceil(target_busy / busy)``
  with the median busy fraction of the trials measured alone;
- a trial that runs out of GPU memory while packed is retried alone (a whole GPU), and the plan halves its
  packing (the memory bound was wrong for this design).

Ray's own resource accounting does the rest: a trial that asks for ``1 / per_gpu`` of a GPU starts when that
much is free. The plan is plain data in the driver process; Ray sees only the fraction in each trial's config.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PackingPlan", "is_out_of_memory", "GPU_SHARE_KEY", "ALONE_KEY"]

#: Config key of the GPU fraction a trial asks Ray for (present only when trials are packed).
GPU_SHARE_KEY = "gpu_share"
#: Config key marking a retry of a trial that ran out of GPU memory while packed (it runs alone).
ALONE_KEY = "alone"


def is_out_of_memory(reason: str | None) -> bool:
    """Whether a trial's failure reason is a CUDA out-of-memory error."""
    return bool(reason) and ("OutOfMemoryError" in reason or "CUDA out of memory" in reason)


@dataclass
class PackingPlan:
    """Trials per GPU, chosen from the measured memory and busy fraction of the first trials.

    Args:
        gpu_memory: bytes of memory of the smallest GPU of the cluster.
        max_per_gpu: at most this many trials on one GPU.
        margin: fraction of GPU memory left free (other processes, fragmentation, CUDA context).
        target_busy: the busy fraction the packed trials should add up to.
        alone_first: trials measured alone before packing starts.

    Raises:
        ValueError: a parameter out of range (the message names it).
    """

    gpu_memory: float
    max_per_gpu: int = 16
    margin: float = 0.2
    target_busy: float = 0.9
    alone_first: int = 1
    peaks: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)
    cap: int | None = None  # lowered by out-of-memory errors

    def __post_init__(self) -> None:
        if not (self.gpu_memory > 0):
            raise ValueError(f"gpu_memory: must be > 0 bytes, got {self.gpu_memory!r}")
        if not (isinstance(self.max_per_gpu, int) and self.max_per_gpu >= 1):
            raise ValueError(f"max_per_gpu: must be an integer >= 1, got {self.max_per_gpu!r}")
        if not (0 <= self.margin < 1):
            raise ValueError(f"margin: must be in [0, 1), got {self.margin!r}")
        if not (0 < self.target_busy <= 1):
            raise ValueError(f"target_busy: must be in (0, 1], got {self.target_busy!r}")

    def observe(self, result: dict[str, Any], alone: bool) -> None:
        """Learn from a finished trial's ``train_peak_memory`` (bytes) and, when it ran ``alone``, its
        ``gpu_busy`` (0-1); results without them (a CPU trial, a failure) teach nothing."""
        peak = result.get("train_peak_memory")
        if isinstance(peak, (int, float)) and peak > 0:
            self.peaks.append(float(peak))
        busy = result.get("gpu_busy")
        if alone and isinstance(busy, (int, float)) and 0 < busy <= 1:
            self.busy.append(float(busy))

    def on_out_of_memory(self) -> None:
        """A packed trial ran out of memory: halve the packing from now on."""
        self.cap = max(1, self.per_gpu() // 2)

    def per_gpu(self) -> int:
        """Trials that share one GPU now: 1 until ``alone_first`` trials were measured alone, then the
        smallest of the memory bound, the busy bound, ``max_per_gpu`` and the out-of-memory cap."""
        if len(self.busy) < self.alone_first or not self.peaks:
            return 1
        memory_bound = max(1, int(self.gpu_memory * (1 - self.margin) // max(self.peaks)))
        busy_bound = max(1, math.ceil(self.target_busy / statistics.median(self.busy)))
        out = min(memory_bound, busy_bound, self.max_per_gpu)
        return min(out, self.cap) if self.cap is not None else out

    def share(self) -> float:
        """The GPU fraction the next trial asks for: ``1 / per_gpu()``."""
        return 1.0 / self.per_gpu()

    def describe(self) -> str:
        """One line for the log: trials per GPU and why."""
        n = self.per_gpu()
        if n == 1 and len(self.busy) < self.alone_first:
            return "1 trial per GPU until the first trial is measured alone"
        busy = f", busy {statistics.median(self.busy):.0%} alone" if self.busy else ""
        peak = f"peak {max(self.peaks) / 2**20:,.0f} MiB" if self.peaks else "peak unknown"
        return f"{n} trial(s) per GPU ({peak} of {self.gpu_memory / 2**30:,.1f} GiB{busy})"
