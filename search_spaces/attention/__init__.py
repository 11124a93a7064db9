"""The attention zoo: one mechanism per file, each an ``nn.Module`` from (B, N, C) to (B, N, C).

Every file holds its module (an :class:`~.common.AttentionModule`: ``forward(x, layout)`` with a
required :class:`~.common.TokenLayout`, ``macs(layout)``, ``reset_parameters_extra()``) and its
``build(arch, layer_index, layout)`` function. What the registry knows of the mechanism (genes, rules,
paper) is the torch-free file of the same name in :mod:`search_spaces.mechanisms`, whose ``MECHANISM``
spec names this file's module and ``build`` (``"search_spaces.attention.<name>:build"``).
:func:`build_attention` maps genes to modules through that registry.

Adding a mechanism: a new file here with the module (a subclass of ``AttentionModule``, docstring with
the paper, the equation, the shapes and the MAC formula) and its ``build`` function; a new file in
:mod:`search_spaces.mechanisms` with ``MECHANISM = MechanismSpec(...)`` (the next free ``order``) and the
pure-Python rules the genes and the layer share; plus its tests. These files import ``Architecture`` only
for type checking (``if TYPE_CHECKING:``), never at run time.
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
    return get_mechanism(arch.attention).build_layer(arch, layer_index, layout)
