"""The attention zoo: one mechanism per file, each an ``nn.Module`` from (B, N, C) to (B, N, C).

Every file declares its module (an :class:`~.common.AttentionModule`: ``forward(x, layout)`` with a
required :class:`~.common.TokenLayout`, ``macs(layout)``, ``reset_parameters_extra()``) and, next to it,
a ``MECHANISM`` spec that :mod:`search_spaces.registry` finds by itself. :func:`build_attention` maps
genes to modules through that registry.

Adding a mechanism: a new file here with the module (a subclass of ``AttentionModule``, docstring with
the paper, the equation, the shapes and the MAC formula), its ``build(arch, layer_index, layout)``
function and ``MECHANISM = MechanismSpec(...)`` with the next free ``order``; plus its tests. The files
are imported while :mod:`search_spaces.genes` loads, so they import ``Architecture`` only for type
checking (``if TYPE_CHECKING:``), never at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import get_mechanism
from .common import QKV, AttentionModule, Rotary, TokenLayout

if TYPE_CHECKING:  # pragma: no cover
    from ..genes import Architecture

__all__ = ["build_attention", "AttentionModule", "TokenLayout", "Rotary", "QKV"]


def build_attention(arch: Architecture, layer_index: int, layout: TokenLayout) -> AttentionModule:
    """The attention module for layer ``layer_index`` (0-based) of ``arch`` on a model with ``layout``.

    Raises:
        GeneError: (a ``ValueError``) an attention name outside the registry.
    """
    return get_mechanism(arch.attention).build(arch, layer_index, layout)
