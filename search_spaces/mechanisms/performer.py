"""Performer: FAVOR+ random features (arXiv 2009.14794), as in Vision Xformers (arXiv 2107.02239): the
registry's spec and the rule for the number of random features.

The layer: :class:`search_spaces.attention.performer.PerformerAttention`.
"""

from __future__ import annotations

import math

from ..registry import MechanismSpec

__all__ = ["default_num_features", "performer_num_features", "MECHANISM"]


def default_num_features(head_dim: int) -> int:
    """m = floor(d ln d), the paper's default number of random features (at least 1)."""
    return max(1, int(math.floor(head_dim * math.log(head_dim)))) if head_dim > 1 else 1


def performer_num_features(head_dim: int, num_tokens: int) -> int:
    """m for head width d and N = ``num_tokens`` tokens: ``m = min(floor(d ln d), max(1, floor(N / 4)))``.

    FAVOR+ costs ``4 N m C + N m H`` multiply-adds against exact attention's ``2 N^2 C`` (both on top of
    the same projections), so m random features pay off only while m < N / 2 (arXiv 2009.14794 sells
    FAVOR+ as O(N m d) instead of O(N^2 d), i.e. for m << N). The paper's default m = floor(d ln d) is
    16 to 185 for the space's head widths 8 to 48, as many as or more than the 17 to 197 tokens of the
    proxy: there FAVOR+ would cost up to several times exact attention and estimate it with more
    features than keys. The cap N / 4 (ours) keeps the attention part at about half of exact attention's
    at every N; from N = 4 floor(d ln d) on (176 tokens at d = 16, 1,064 at d = 64) the paper's m holds
    unchanged.
    """
    return max(1, min(default_num_features(head_dim), num_tokens // 4))


MECHANISM = MechanismSpec(
    name="performer", order=4, module="search_spaces.attention.performer:PerformerAttention",
    build="search_spaces.attention.performer:build",
    summary="Performer: FAVOR+ random features, as in Vision Xformers (arXiv 2009.14794, 2107.02239)",
    scaling="m = min(floor(d ln d), floor(N/4)) random features: with m >= N/2 FAVOR+ costs more than exact "
            "attention (arXiv 2009.14794: O(N m d) vs O(N^2 d)); compact keys are scaled by 0.02 sqrt(C)",
)
