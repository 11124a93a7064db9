"""Linformer: keys and values projected along the tokens (arXiv 2006.04768): the registry's spec and the
rule for the projected length.

The layer: :class:`search_spaces.attention.linformer.LinformerAttention`.
"""

from __future__ import annotations

from ..registry import MechanismSpec

__all__ = ["LINFORMER_MAX_K", "linformer_k", "MECHANISM"]

#: Vision Xformers' projected length (arXiv 2107.02239), reached from N = 256 tokens on.
LINFORMER_MAX_K = 64


def linformer_k(num_tokens: int) -> int:
    """The projected length k for N = ``num_tokens`` tokens: ``k = min(64, max(1, floor(N / 4)))``.

    Source of the rule: Linformer's own experiments compress the sequence by 2 to 4 (arXiv 2006.04768,
    section 5: n = 512 with k = 128 or 256); the rule keeps at least their strongest compression, 4. Vision
    Xformers (arXiv 2107.02239) fixes k = 64 at N = 1,025 tokens (about N / 16). A fixed k = 64 clamped to
    N would be a square E at the proxy's 17 to 197 tokens, i.e. no compression at all; with this rule
    E compresses at every N (k <= N / 4), and k = 64 holds from N = 256 on (the 112 px deployment grids
    of 784 and 3,136 patches use the paper's 64).
    """
    return min(LINFORMER_MAX_K, max(1, num_tokens // 4))


MECHANISM = MechanismSpec(
    name="linformer", order=5, module="search_spaces.attention.linformer:LinformerAttention",
    build="search_spaces.attention.linformer:build", fixed_tokens=True,
    summary="Linformer: keys and values projected along the tokens (arXiv 2006.04768)",
    scaling="k = min(64, floor(N/4)): at least the 4x compression of Linformer's own runs (arXiv 2006.04768: "
            "n = 512, k = 128), and Vision Xformers' k = 64 at N = 1,025 (arXiv 2107.02239)",
)
