"""QnA: local attention with learned queries (arXiv 2112.11435): the registry's spec, the window gene and
the rule that keeps the window local on small token grids.

The layer: :class:`search_spaces.attention.qna.QnAAttention`.
"""

from __future__ import annotations

from typing import Any

from ..registry import Design, GeneSpec, MechanismSpec, or_list

__all__ = ["QNA_WINDOWS", "qna_window_for_grid", "MECHANISM"]

#: Domain of the window side k (3 in QnA-ViT-Tiny, 7 in the paper's larger-window variant).
QNA_WINDOWS: tuple[int, ...] = (3, 5, 7)


def qna_window_for_grid(window: int, grid: tuple[int, int]) -> int:
    """The window side built on a (rows, cols) token grid: ``min(window, s)``, s the largest odd number
    below the grid's shorter side (at least 1).

    QnA is local attention (arXiv 2112.11435: window 3 in QnA-ViT-Tiny, 7 in its larger-window
    variant). A window at least as wide as the grid covers all of it from some position (from every
    position when k >= 2 side - 1): the layer is then global, not local. Clamped, every window misses at
    least one row and one column of the grid: on the space's grids 4x4 -> 3, 7x7 -> 5 (windows 5 and 7
    there build 3 and 5), 8x8 and larger keep the gene. Genes that build the same window are one model
    (:meth:`~search_spaces.genes.Architecture.canonical_key`).
    """
    side = min(grid)
    largest = side - 1 if side % 2 == 0 else side - 2
    return max(1, min(window, largest))


def _canonical(arch: Design, img_size: Any, genes: dict[str, Any]) -> None:
    """Windows clamped to the same side on the token grid are one model (5 and 7 on a 4x4 grid build 3)."""
    genes["qna_window"] = qna_window_for_grid(arch.qna_window, arch.check_image(img_size))


MECHANISM = MechanismSpec(
    name="qna", order=3, module="search_spaces.attention.qna:QnAAttention",
    build="search_spaces.attention.qna:build", has_qkv=False, class_token=False, canonical=_canonical,
    summary="QnA: local attention with learned queries (arXiv 2112.11435)",
    genes=(
        GeneSpec(name="qna_window", choices=QNA_WINDOWS, neutral=None, item="window",
                 label=lambda arch: f"k{arch.qna_window}",
                 rule=f"{{owners}} only (required): {or_list(QNA_WINDOWS)}; built as at most the largest odd side "
                      "below the token grid's side, so the window stays local (4x4: 3, 7x7: 5)"),
    ),
)
