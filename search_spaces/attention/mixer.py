"""MLP-Mixer token mixing: an MLP across the token axis (Tolstikhin et al., arXiv 2105.01601)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from timm.layers import Mlp
from torch import nn

from ..registry import MechanismSpec
from .common import AttentionModule, TokenLayout, check_num_tokens

if TYPE_CHECKING:  # pragma: no cover
    from ..genes import Architecture

__all__ = ["TokenMixingMLP", "MECHANISM"]


class TokenMixingMLP(AttentionModule):
    """MLP-Mixer token-mixing MLP in place of attention (Tolstikhin et al., arXiv 2105.01601, eq. 1)::

        U[:, i] = X[:, i] + W_2 GELU(W_1 LayerNorm(X)[:, i]),   i = 1..C

    Only the bracketed MLP lives here: the surrounding block supplies the LayerNorm and the residual.
    Every channel i is mixed across the N tokens by the same two-layer MLP N -> D_S -> N with GELU
    (timm's ``Mlp``: ``mlp.fc1``, ``mlp.fc2``, with biases as in the paper's code), so the weights are
    shared across channels. D_S = ``max(1, int(hidden_ratio * C))``: the paper's configurations use
    D_S = C / 2 (Mixer-B/16: C = 768, D_S = 384). No queries or keys (so no rotary encoding).

    The layer is tied to the token count N it was built for (prefix tokens included): a different N at
    forward (or in the layout given to :meth:`macs`) raises ``ValueError``.

    Args:
        dim: C. num_tokens: N. hidden_ratio: D_S / C.

    Shapes: ``x`` (B, N, C) -> (B, N, C). Parameters: ``2 N D_S + D_S + N``.

    Multiply-adds per image: ``2 N D_S C`` (two linear maps over the token axis for each of C channels).
    See :meth:`macs`.
    """

    def __init__(self, dim: int, num_tokens: int, hidden_ratio: float = 0.5):
        super().__init__()
        if num_tokens < 1 or hidden_ratio <= 0:
            raise ValueError(f"mixer: num_tokens and hidden_ratio must be positive, got {num_tokens}, {hidden_ratio}")
        self.dim = dim
        self.num_tokens = num_tokens
        self.hidden = max(1, int(hidden_ratio * dim))
        self.mlp = Mlp(num_tokens, self.hidden, num_tokens, act_layer=nn.GELU)

    def macs(self, layout: TokenLayout) -> int:
        """Analytic multiply-adds per image (see the class docstring).

        Raises:
            ValueError: ``layout`` has a token count other than the built one.
        """
        check_num_tokens("mixer", "the token-mixing MLP", self.num_tokens, layout.num_tokens)
        return 2 * self.num_tokens * self.hidden * self.dim

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        check_num_tokens("mixer", "the token-mixing MLP", self.num_tokens, x.shape[1])
        return self.mlp(x.transpose(1, 2)).transpose(1, 2)


def _build(arch: Architecture, layer_index: int, layout: TokenLayout) -> TokenMixingMLP:
    return TokenMixingMLP(arch.embed_dim, num_tokens=layout.num_tokens)


MECHANISM = MechanismSpec(
    name="mixer", order=8, module=TokenMixingMLP, build=_build, has_qkv=False, fixed_tokens=True,
    uses_heads=False, summary="MLP-Mixer token mixing in place of attention (arXiv 2105.01601)",
)
