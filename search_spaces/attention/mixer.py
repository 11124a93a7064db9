"""MLP-Mixer token mixing: an MLP across the token axis (Tolstikhin et al., arXiv 2105.01601)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from timm.layers import Mlp
from torch import nn

from .common import AttentionModule, TokenLayout, check_num_tokens

if TYPE_CHECKING:  # pragma: no cover
    from ..genes import Architecture

__all__ = ["TokenMixingMLP", "build"]


#: The floor of the token-MLP width D_S: Mixer-S's, the paper's smallest (arXiv 2105.01601, Table 1).
MIN_TOKEN_HIDDEN = 256


class TokenMixingMLP(AttentionModule):
    """MLP-Mixer token-mixing MLP in place of attention (Tolstikhin et al., arXiv 2105.01601, eq. 1)::

        U[:, i] = X[:, i] + W_2 GELU(W_1 LayerNorm(X)[:, i]),   i = 1..C

    Only the bracketed MLP lives here: the surrounding block supplies the LayerNorm and the residual.
    Every channel i is mixed across the N tokens by the same two-layer MLP N -> D_S -> N with GELU
    (timm's ``Mlp``: ``mlp.fc1``, ``mlp.fc2``, with biases as in the paper's code), so the weights are
    shared across channels. No queries or keys (so no rotary encoding).

    Token-MLP width: D_S = ``max(int(hidden_ratio * C), min_hidden)`` (256 by default, the builder's
    choice), independent of the token count N, as in the paper: its widths "are selected independently of
    the number of input patches", which is what makes Mixer's cost linear in N (arXiv 2105.01601, section 2).
    The paper's configurations set D_S = C / 2 (Table 1: Mixer-S 256, Mixer-B 384, Mixer-L 512, Mixer-H
    640), never narrower than the token count at its 224 px pre-training (N = 49 to 256). At vitnas' C = 32
    to 96, C / 2 would be a 16 to 48-wide bottleneck for the proxy's 17 to 197 tokens, which no paper model
    has; so D_S is floored at 256, the paper's smallest width (ours): at least N wherever N <= 256 (every
    proxy grid), and fixed beyond, as the paper keeps it when it fine-tunes at a higher resolution. Cost:
    2 N D_S C multiply-adds, linear in N.

    The layer is tied to the token count N it was built for (prefix tokens included): a different N at
    forward (or in the layout given to :meth:`macs`) raises ``ValueError``.

    Args:
        dim: C. num_tokens: N. hidden_ratio: D_S / C before the floor (0.5, the paper's).
        min_hidden: the floor of D_S (:data:`MIN_TOKEN_HIDDEN`, 256; 1 gives ``int(hidden_ratio * C)`` alone).

    Shapes: ``x`` (B, N, C) -> (B, N, C). Parameters: ``2 N D_S + D_S + N``.

    Multiply-adds per image: ``2 N D_S C`` (two linear maps over the token axis for each of C channels).
    See :meth:`macs`.
    """

    def __init__(self, dim: int, num_tokens: int, hidden_ratio: float = 0.5, min_hidden: int | None = None):
        super().__init__()
        if num_tokens < 1 or hidden_ratio <= 0:
            raise ValueError(f"mixer: num_tokens and hidden_ratio must be positive, got {num_tokens}, {hidden_ratio}")
        self.dim = dim
        self.num_tokens = num_tokens
        self.hidden = max(1, int(hidden_ratio * dim), MIN_TOKEN_HIDDEN if min_hidden is None else min_hidden)
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


def build(arch: Architecture, layer_index: int, layout: TokenLayout) -> TokenMixingMLP:
    return TokenMixingMLP(arch.embed_dim, num_tokens=layout.num_tokens)
