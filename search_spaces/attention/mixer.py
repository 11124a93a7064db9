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
    shared across channels. No queries or keys (so no rotary encoding).

    Token-MLP width: D_S = ``max(int(hidden_ratio * C), N)`` (``min_hidden_tokens=True``, the builder's
    choice), at least 1. The paper's configurations set D_S = C / 2 (arXiv 2105.01601, Table 1), which at
    their 224 px pre-training resolution is never narrower than the token count: Mixer-S/32 N = 49,
    D_S = 256; Mixer-S/16 N = 196, D_S = 256; Mixer-B/16 N = 196, D_S = 384; Mixer-H/14 N = 256,
    D_S = 640. At the proxy's C = 32 to 96 and 17 to 197 tokens C / 2 would be a 16 to 48-wide
    bottleneck those models never have, so D_S is floored at N (ours): the paper's C / 2 wherever
    C / 2 >= N. The cost stays quadratic in N, as the token MLP's always is: 2 N^2 C multiply-adds once
    the floor applies (at a 112 px deployment with patch 4, N = 785 and D_S = 785).

    The layer is tied to the token count N it was built for (prefix tokens included): a different N at
    forward (or in the layout given to :meth:`macs`) raises ``ValueError``.

    Args:
        dim: C. num_tokens: N. hidden_ratio: D_S / C before the floor (0.5, the paper's).
        min_hidden_tokens: floor D_S at N (default; ``False`` gives ``int(hidden_ratio * C)`` alone).

    Shapes: ``x`` (B, N, C) -> (B, N, C). Parameters: ``2 N D_S + D_S + N``.

    Multiply-adds per image: ``2 N D_S C`` (two linear maps over the token axis for each of C channels).
    See :meth:`macs`.
    """

    def __init__(self, dim: int, num_tokens: int, hidden_ratio: float = 0.5, min_hidden_tokens: bool = True):
        super().__init__()
        if num_tokens < 1 or hidden_ratio <= 0:
            raise ValueError(f"mixer: num_tokens and hidden_ratio must be positive, got {num_tokens}, {hidden_ratio}")
        self.dim = dim
        self.num_tokens = num_tokens
        self.hidden = max(1, int(hidden_ratio * dim), num_tokens if min_hidden_tokens else 1)
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
    scaling="token-MLP width D_S = max(C/2, N): the paper's C/2 is never below N in its 224 px models "
            "(Mixer-B/16: N = 196, D_S = 384; arXiv 2105.01601, Table 1)",
)
