"""The one module that reaches into torch past its public API, and why (docs/design.md, "Dependencies").

- ``TorchDispatchMode``: the hook :class:`trainers.measure.PeakMemoryTracker` uses to see every tensor an
  inference pass creates, on any device (it follows tensor storages, not an allocator, so it measures
  activation memory on the CPU too). torch documents it ("``__torch_dispatch__``" extending PyTorch) but
  exports it only from ``torch.utils._python_dispatch``; there is no public alias. A torch release that moves
  it breaks this import and tests/test_adapters.py, which runs on the newest torch CI resolves.
"""

from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode  # private module: no public alias (see above)

__all__ = ["TorchDispatchMode"]
