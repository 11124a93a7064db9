"""The attention zoo: one mechanism per file, each an ``nn.Module`` from (B, N, C) to (B, N, C).

Every module's ``forward(x, layout)`` takes the tokens and a :class:`~.common.TokenLayout` (grid size,
prefix tokens, rotary encoding). :func:`build_attention` is the one place that maps genes to modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from .common import QKV, Rotary, TokenLayout

if TYPE_CHECKING:  # pragma: no cover
    from ..genes import Architecture

__all__ = ["build_attention", "layer_mask_ratios", "TokenLayout", "Rotary", "QKV"]


def layer_mask_ratios(arch: "Architecture", layer_index: int) -> tuple[float, ...]:
    """MaiT mask ratios of the heads of layer ``layer_index`` (0-based).

    ``mask_layers == "all"``: every layer uses ``arch.mask_ratios``. ``"paper"``: MaiT (arXiv
    2207.03006, section 4.3) masks most in early layers: the first third of the layers uses all the
    given masks, the middle third keeps only the first masked head (the others become global), the
    last third is unmasked.
    """
    ratios = tuple(arch.mask_ratios)
    if arch.mask_layers == "all":
        return ratios
    third = layer_index * 3 // arch.depth  # 0, 1 or 2
    if third == 0:
        return ratios
    if third == 1:
        out, kept = [], False
        for r in ratios:
            out.append(r if (r > 0 and not kept) else 0.0)
            kept = kept or r > 0
        return tuple(out)
    return tuple(0.0 for _ in ratios)


def build_attention(arch: "Architecture", layer_index: int, layout: TokenLayout) -> nn.Module:
    """The attention module for layer ``layer_index`` of ``arch`` on a model with ``layout``.

    Raises:
        ValueError: an attention name outside the zoo.
    """
    a, dim, heads = arch.attention, arch.embed_dim, arch.num_heads
    if a == "mhsa":
        from .mhsa import MHSA
        return MHSA(dim, heads, compact=arch.compact)
    if a == "mait":
        from .mait import MaiTAttention
        return MaiTAttention(dim, heads, mask_ratios=layer_mask_ratios(arch, layer_index), compact=arch.compact)
    if a == "refiner":
        from .refiner import RefinerAttention
        return RefinerAttention(dim, heads, expansion=arch.refiner_expansion, compact=arch.compact)
    if a == "qna":
        from .qna import QnAAttention
        return QnAAttention(dim, heads, window=arch.qna_window)
    if a == "performer":
        from .performer import PerformerAttention
        return PerformerAttention(dim, heads, compact=arch.compact)
    if a == "linformer":
        from .linformer import LinformerAttention
        return LinformerAttention(dim, heads, num_tokens=layout.num_tokens, compact=arch.compact)
    if a == "nystrom":
        from .nystrom import NystromAttention
        return NystromAttention(dim, heads, compact=arch.compact)
    if a == "fnet":
        from .fnet import FNetMixing
        return FNetMixing(dim)
    if a == "mixer":
        from .mixer import TokenMixingMLP
        return TokenMixingMLP(dim, num_tokens=layout.num_tokens)
    raise ValueError(f"attention: unknown value {a!r}")
