"""MaiT: multi-head self-attention where some heads carry a local 0/1 mask (arXiv 2207.03006): the registry's
spec, the mask genes and the geometry that maps a head's mask ratio to its window on a token grid.

The layer: :class:`search_spaces.attention.mait.MaiTAttention`.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from ..registry import Design, GeneError, GeneSpec, MechanismSpec, format_domain

__all__ = ["MASK_RATIO_CHOICES", "MASK_LAYERS", "MAIT_MIN_WINDOW", "MAIT_RATIO_TOLERANCE", "mait_hidden_fraction",
           "mait_refusal", "mait_window_for_ratio", "layer_mask_ratios", "MECHANISM"]

#: Domain of one head's mask ratio (the fraction of key positions outside its window); 0 = a global head.
#: 0.95 (appended; never reorder or remove) is the paper's setting: a 3x3 window on a 14x14 grid.
MASK_RATIO_CHOICES: tuple[float, ...] = (0.0, 0.5, 0.75, 0.9, 0.95)
#: Which layers carry masks: ``all`` layers use ``mask_ratios`` as given; ``paper`` follows MaiT's finding
#: (all masked heads in the first third, one in the middle third, none in the last); see
#: :func:`layer_mask_ratios`.
MASK_LAYERS: tuple[str, ...] = ("all", "paper")
#: The smallest window side: MaiT's local mask is 3x3 (arXiv 2207.03006); a 1x1 window is not local attention.
MAIT_MIN_WINDOW = 3
#: Largest gap allowed between a requested mask ratio and the hidden fraction of the window it maps to.
MAIT_RATIO_TOLERANCE = 0.1


def _visible_1d(side: int, window: int) -> int:
    """Sum over the positions of one axis of the keys a window of ``window`` sees along it (clipped)."""
    half = window // 2
    return sum(min(i + half, side - 1) - max(i - half, 0) + 1 for i in range(side))


def mait_hidden_fraction(window: int | None, grid: tuple[int, int], num_prefix_tokens: int = 1) -> float:
    """Fraction of keys hidden from a patch query by a ``window`` x ``window`` mask on ``grid``.

    Measured on the mask :func:`local_window_mask` builds: the mean, over the R C patch-query rows, of the
    zeros of the row divided by its N = ``num_prefix_tokens`` + R C keys. Windows are clipped at the
    border (a corner patch sees fewer keys than an interior one). The class-token *column counts* as a
    key (always visible: it is in every row), the class-token *row* does not count (it is never masked).
    Computed in closed form (the window factorises into rows and columns); a test checks it against
    the mask. ``window=None`` (a global head) hides nothing.
    """
    if window is None:
        return 0.0
    rows, cols = grid
    visible = _visible_1d(rows, window) * _visible_1d(cols, window)  # summed over the R C queries
    return (rows * cols * rows * cols - visible) / (rows * cols * (num_prefix_tokens + rows * cols))


@functools.lru_cache(maxsize=1024)
def _closest_window(ratio: float, grid: tuple[int, int], num_prefix_tokens: int) -> tuple[int, float]:
    """The odd window >= :data:`MAIT_MIN_WINDOW` whose hidden fraction on ``grid`` is closest to
    ``ratio`` (the smaller window on a tie), and that fraction."""
    best, best_err, best_hidden = MAIT_MIN_WINDOW, math.inf, 0.0
    for k in range(MAIT_MIN_WINDOW, 2 * max(grid) + 1, 2):
        hidden = mait_hidden_fraction(k, grid, num_prefix_tokens)
        if abs(hidden - ratio) < best_err - 1e-12:
            best, best_err, best_hidden = k, abs(hidden - ratio), hidden
    return best, best_hidden


def mait_refusal(ratio: float, grid: tuple[int, int], num_prefix_tokens: int = 1) -> str | None:
    """Why ``ratio`` cannot be built on ``grid`` (one line naming the gene and the grid), or ``None``.

    A ratio is refused where no window >= 3x3 hides it within :data:`MAIT_RATIO_TOLERANCE` (on the
    space's grids: 0.75, 0.9 and 0.95 on 4x4, 0.95 on 7x7).
    """
    if ratio <= 0:
        return None
    window, hidden = _closest_window(ratio, tuple(grid), num_prefix_tokens)
    if abs(hidden - ratio) <= MAIT_RATIO_TOLERANCE + 1e-12:
        return None
    rows, cols = grid
    return (f"mask_ratios: {ratio:g} is out of reach on the {rows}x{cols} token grid (its closest window of at "
            f"least 3x3, {window}x{window}, hides {hidden:.0%} of the keys); use a smaller ratio or patch_size")


def mait_window_for_ratio(ratio: float, grid: tuple[int, int], num_prefix_tokens: int = 1) -> int | None:
    """Side of the square window whose hidden fraction on ``grid`` is closest to ``ratio``.

    MaiT (arXiv 2207.03006) calls the fraction of key positions outside a head's window its mask
    ratio. ``ratio == 0`` means a global head and returns ``None``. Only odd windows (centred on the
    query patch) of side >= 3 are considered (:data:`MAIT_MIN_WINDOW`); the hidden fraction is the one
    of the real, border-clipped mask with the class-token column counted (:func:`mait_hidden_fraction`;
    MaiT models always have a class token, hence ``num_prefix_tokens=1``). On a 14x14 grid 0.95 gives
    3x3 (95.3% hidden: the paper's setting), 0.9 gives 5x5 (88.9%), 0.75 9x9, 0.5 13x13.

    Raises:
        GeneError: no window >= 3x3 hides ``ratio`` within 0.1 on ``grid`` (see :func:`mait_refusal`).
    """
    if ratio <= 0:
        return None
    reason = mait_refusal(ratio, grid, num_prefix_tokens)
    if reason:
        raise GeneError(reason)
    return _closest_window(ratio, tuple(grid), num_prefix_tokens)[0]


def layer_mask_ratios(arch: Design, layer_index: int) -> tuple[float, ...]:
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


def _grid_choices(gene: str, domain: tuple[Any, ...], grid: tuple[int, int]) -> tuple[Any, ...]:
    """The values of ``domain`` the gene can take on ``grid``: mask ratios that some window >= 3x3 hides
    within 0.1 (all of them from an 8x8 grid on)."""
    if gene != "mask_ratios":
        return domain
    return tuple(r for r in domain if mait_refusal(r, grid) is None)


def _canonical(arch: Design, img_size: Any, genes: dict[str, Any]) -> None:
    """Mask ratios that map to the same window on the token grid are the same mask (e.g. 0.75 and 0.9 on
    a 7x7 grid both give 3x3); with every head global,
    ``mask_layers`` changes nothing. A ratio out of reach on the grid stays as ``"refused <ratio>"``
    (the model cannot be built; the key must still exist for the search's bookkeeping)."""
    grid = arch.check_image(img_size)
    windows: list[Any] = []
    for r in arch.mask_ratios:
        windows.append(f"refused {r:g}" if mait_refusal(r, grid) else mait_window_for_ratio(r, grid))
    genes["mask_ratios"] = windows
    if all(w is None for w in windows):
        genes["mask_layers"] = None


def _masks_label(arch: Design) -> str:
    return "masks=" + ",".join(f"{r:g}" for r in arch.mask_ratios) + f"/{arch.mask_layers}"


MECHANISM = MechanismSpec(
    name="mait", order=1, module="search_spaces.attention.mait:MaiTAttention",
    build="search_spaces.attention.mait:build", explicit_map=True, canonical=_canonical,
    grid_choices=_grid_choices,
    summary="MaiT: local 0/1 masks on some heads (arXiv 2207.03006)",
    genes=(
        GeneSpec(name="mask_ratios", choices=MASK_RATIO_CHOICES, neutral=(), per_head=True, item="ratio",
                 param="mask_ratio", label=_masks_label,
                 rule=f"{{owners}} only: one ratio per head, each in {format_domain(MASK_RATIO_CHOICES)}; "
                      "0 = global head; a ratio maps to the window >= 3x3 whose hidden fraction (border-clipped "
                      "mask, class-token column counted) is closest, and is refused on a grid where none is "
                      "within 0.1 (on 4x4 only 0 and 0.5 remain, on 7x7 all but 0.95; from 8x8 on all): there "
                      "the search asks mask_ratio_<R>x<C>_<i> with the ratios that remain"),
        GeneSpec(name="mask_layers", choices=MASK_LAYERS, neutral="all", label=lambda arch: None,
                 invalid="{gene}: unknown value {value!r}; allowed: {allowed}",
                 rule="{owners} only: 'all' masks every layer, 'paper' masks early layers most (MaiT)"),
    ),
)
