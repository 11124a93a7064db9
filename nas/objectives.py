"""The objectives of a vitnas search, described once.

Every place that needs an objective's name, direction, unit, axis scale, display format or hypervolume
reference reads it from :data:`OBJECTIVES_SPEC`: the Optuna study (metric names, directions), Ray Tune's
``mode`` list, the Pareto front and its knee, the hypervolume, the CLI tables, the dashboard figures, the
HTML report and the model card. The order of :data:`OBJECTIVES_SPEC` is the order of ``trial.values``.

Adding an objective (latency, memory, ...) is one more :class:`Objective` in :data:`OBJECTIVES_SPEC`, plus
its measurement (the trial must report a value under the objective's ``name``)::

    Objective("latency", "minimize", unit="ms", scale="log", per_device=True, fmt=".2f", worst=100.0, hv_unit="ms"),

Helpers read :data:`OBJECTIVES_SPEC` when they are called, so a test may replace it at run time.

The hypervolume here is exact and self-contained: Optuna 5.0 has no public hypervolume function (only
the private ``optuna._hypervolume`` module and the ``plot_hypervolume_history`` figure), so
:func:`hypervolume` computes it by sweeping the last objective (2-D staircases; 3-D by a cumulative
minimum over the grid of the points' coordinates), which is exact for any number of objectives.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from optuna.study import StudyDirection
from optuna.trial import TrialState

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = [
    "Objective", "OBJECTIVES_SPEC", "spec", "get", "primary", "names", "directions", "direction_names",
    "ray_modes", "labels", "format_value", "record", "loss_vector", "hv_vector", "reference_point",
    "hv_units", "describe_reference", "hypervolume", "pareto_mask", "front_trials", "knee_distances",
]

_STYLES = ("text", "web", "card")


@dataclass(frozen=True)
class Objective:
    """One objective of the search.

    Attributes:
        name: metric name on the Optuna study, key in records and reports (``accuracy``).
        direction: ``"maximize"`` or ``"minimize"``.
        unit: unit of a value (``img/s``); empty for a fraction or a count.
        note: what the value is, where the name does not say it (``validation top-1``); empty if none.
        scale: ``"linear"`` or ``"log"``: the axis type of figures, and the scale on which the knee pick
            and the gene importances compare values.
        log_floor: values below it are clipped to it before a logarithm (log scale only).
        integer: the value is a count (records keep it as ``int``).
        per_device: the value depends on the device it was measured on (the model card names it).
        fmt: Python format spec of a value in text tables (CLI).
        web_fmt: format spec in plotly hover labels and HTML tables (must be valid for both Python and d3);
            default ``fmt``.
        card_fmt: format spec of a value standing alone (model card); default ``fmt``.
        progress: ``str.format`` template of the value (already formatted) in a one-line progress report;
            default ``"{name} {}"``.
        short_unit, short_scale: where space is short (parallel coordinates) values are divided by
            ``short_scale`` and labelled with ``short_unit`` (``k``).
        worst: default hypervolume reference value, in the objective's own unit (a value no better than
            any design worth keeping).
        hv_scale, hv_unit: the hypervolume uses ``value / hv_scale``, whose unit is called ``hv_unit``
            (``M params``).

    Raises:
        ValueError: an unknown ``direction`` or ``scale``, an empty ``name``, a non-positive scale.
    """

    name: str
    direction: str
    unit: str = ""
    note: str = ""
    scale: str = "linear"
    log_floor: float = 1e-9
    integer: bool = False
    per_device: bool = False
    fmt: str = "g"
    web_fmt: str | None = None
    card_fmt: str | None = None
    progress: str | None = None
    short_unit: str = ""
    short_scale: float = 1.0
    worst: float = 0.0
    hv_scale: float = 1.0
    hv_unit: str = ""

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"name: an objective needs a non-empty name, not {self.name!r}")
        if self.direction not in ("maximize", "minimize"):
            raise ValueError(f"direction: {self.direction!r} for {self.name!r}; allowed: maximize, minimize")
        if self.scale not in ("linear", "log"):
            raise ValueError(f"scale: {self.scale!r} for {self.name!r}; allowed: linear, log")
        for field in ("log_floor", "short_scale", "hv_scale"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{field}: must be > 0 for {self.name!r}, not {getattr(self, field)!r}")

    # ---------------------------------------------------------------- directions
    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    @property
    def study_direction(self) -> StudyDirection:
        """Optuna's ``StudyDirection``."""
        return StudyDirection.MAXIMIZE if self.maximize else StudyDirection.MINIMIZE

    @property
    def mode(self) -> str:
        """Ray Tune's mode: ``"max"`` or ``"min"``."""
        return "max" if self.maximize else "min"

    @property
    def sign(self) -> int:
        """+1 when bigger is better, -1 otherwise."""
        return 1 if self.maximize else -1

    # ---------------------------------------------------------------- labels
    @property
    def label(self) -> str:
        """Name and unit: ``throughput (img/s)``, ``params``."""
        return f"{self.name} ({self.unit})" if self.unit else self.name

    @property
    def title(self) -> str:
        """Name and what it is (or its unit): ``accuracy (validation top-1)``, ``throughput (img/s)``."""
        what = self.note or self.unit
        return f"{self.name} ({what})" if what else self.name

    @property
    def header(self) -> str:
        """Column header of a table: ``throughput img/s``."""
        return f"{self.name} {self.unit}".strip()

    @property
    def short_label(self) -> str:
        """Label where space is short, with :attr:`short_unit`: ``params (k)``."""
        unit = self.short_unit or self.unit
        return f"{self.name} ({unit})" if unit else self.name

    # ---------------------------------------------------------------- values
    def record(self, value: Any) -> int | float | None:
        """``value`` as stored in a JSON record: an ``int`` for counts, else a ``float``; ``None`` stays ``None``."""
        if value is None:
            return None
        if self.integer and isinstance(value, float) and not math.isfinite(value):
            return value  # int(inf) overflows
        return int(value) if self.integer else float(value)

    def format(self, value: Any, style: str = "text", missing: str = "-") -> str:
        """``value`` formatted for ``style``: ``"text"`` (CLI tables), ``"web"`` (hover, HTML) or ``"card"``.

        ``None`` (and non-finite values) give ``missing``.

        Raises:
            ValueError: an unknown ``style``.
        """
        if style not in _STYLES:
            raise ValueError(f"style: {style!r}; allowed: {', '.join(_STYLES)}")
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return missing
        spec = {"text": self.fmt, "web": self.web_fmt or self.fmt, "card": self.card_fmt or self.fmt}[style]
        return builtins.format(int(value) if self.integer else value, spec)

    def brief(self, value: Any) -> str:
        """The value in a one-line progress report (:attr:`progress` template): ``acc 0.9500``."""
        return (self.progress or self.name + " {}").format(self.format(value))

    def loss(self, value: float) -> float:
        """Minimisation form (Optuna's convention): ``-value`` when maximised."""
        return -value if self.maximize else value

    def score(self, value: float) -> float:
        """Bigger is better, on the objective's scale (``log10`` for log objectives)."""
        v = math.log10(max(value, self.log_floor)) if self.scale == "log" else value
        return v if self.maximize else -v

    def hv_value(self, value: float) -> float:
        """Minimisation form in hypervolume units: ``loss(value) / hv_scale``."""
        return (-value if self.maximize else value) / self.hv_scale


#: The objectives, in the order of ``trial.values``.
OBJECTIVES_SPEC: tuple[Objective, ...] = (
    Objective("accuracy", "maximize", note="validation top-1", fmt=".4f", progress="acc {}",
              worst=0.0, hv_unit="accuracy"),
    Objective("params", "minimize", scale="log", log_floor=1.0, integer=True, fmt=",.0f", progress="params {:>9}",
              short_unit="k", short_scale=1e3, worst=5e6, hv_scale=1e6, hv_unit="M params"),
    Objective("throughput", "maximize", unit="img/s", scale="log", per_device=True, fmt=".0f", web_fmt=",.0f",
              card_fmt=".1f", progress="{:>8} img/s", worst=0.0, hv_scale=1e3, hv_unit="k img/s"),
)


def spec() -> tuple[Objective, ...]:
    """The objectives now in force (:data:`OBJECTIVES_SPEC`)."""
    return OBJECTIVES_SPEC


def get(name: str) -> Objective:
    """The objective called ``name``.

    Raises:
        ValueError: no such objective (the message lists them).
    """
    for o in OBJECTIVES_SPEC:
        if o.name == name:
            return o
    raise ValueError(f"objective: unknown {name!r}; allowed: {', '.join(names())}")


def primary() -> Objective:
    """The first objective (accuracy): tables sort by it, figures colour by it."""
    return OBJECTIVES_SPEC[0]


def names() -> tuple[str, ...]:
    """Metric names, in ``trial.values`` order."""
    return tuple(o.name for o in OBJECTIVES_SPEC)


def directions() -> list[StudyDirection]:
    """Optuna ``StudyDirection`` of each objective."""
    return [o.study_direction for o in OBJECTIVES_SPEC]


def direction_names() -> tuple[str, ...]:
    """``"maximize"`` / ``"minimize"`` of each objective (what ``optuna.create_study(directions=...)`` takes)."""
    return tuple(o.direction for o in OBJECTIVES_SPEC)


def ray_modes() -> list[str]:
    """Ray Tune's ``mode`` list (``"max"`` / ``"min"``), for ``OptunaSearch(metric=names(), mode=...)``."""
    return [o.mode for o in OBJECTIVES_SPEC]


def labels() -> dict[str, str]:
    """Axis label of each objective by name (:attr:`Objective.label`)."""
    return {o.name: o.label for o in OBJECTIVES_SPEC}


def format_value(name: str, value: Any, style: str = "text", missing: str = "-") -> str:
    """``value`` of objective ``name`` formatted for ``style`` (see :meth:`Objective.format`).

    Raises:
        ValueError: an unknown objective or style.
    """
    return get(name).format(value, style, missing)


def record(values: Sequence[float] | None) -> dict[str, Any]:
    """``{name: value}`` of a trial's ``values`` (``None`` each when the trial has none)."""
    values = values if values is not None else [None] * len(OBJECTIVES_SPEC)
    return {o.name: o.record(v) for o, v in zip(OBJECTIVES_SPEC, values, strict=True)}


def loss_vector(values: Sequence[float]) -> list[float]:
    """``values`` in minimisation form (each maximised objective negated), in their own units."""
    return [o.loss(v) for o, v in zip(OBJECTIVES_SPEC, values, strict=True)]


def hv_vector(values: Sequence[float]) -> list[float]:
    """``values`` in minimisation form and hypervolume units (:meth:`Objective.hv_value`)."""
    return [o.hv_value(v) for o, v in zip(OBJECTIVES_SPEC, values, strict=True)]


def reference_point(**worst: float) -> list[float]:
    """Hypervolume reference point in minimisation form and hypervolume units.

    Each objective's :attr:`Objective.worst` unless given by name (``params=10e6``), in the objective's
    own unit. Defaults: accuracy 0, 5 M params, 0 img/s, i.e. ``[0.0, 5.0, 0.0]``.

    Raises:
        ValueError: a keyword that is not an objective.
    """
    unknown = set(worst) - set(names())
    if unknown:
        raise ValueError(f"reference point: unknown objective {sorted(unknown)[0]!r}; allowed: {', '.join(names())}")
    # ``+ 0.0`` turns the -0.0 of a negated zero into 0.0.
    return [o.hv_value(float(worst.get(o.name, o.worst))) + 0.0 for o in OBJECTIVES_SPEC]


def hv_units() -> str:
    """Unit of the hypervolume: ``accuracy x M params x k img/s``."""
    return " x ".join(o.hv_unit or o.name for o in OBJECTIVES_SPEC)


def describe_reference(ref: Sequence[float]) -> str:
    """``ref`` (minimisation form, hypervolume units) in words: ``0 accuracy, 5 M params, 0 k img/s``."""
    return ", ".join(f"{(-r if o.maximize else r) + 0.0:g} {o.hv_unit or o.name}"
                     for o, r in zip(OBJECTIVES_SPEC, ref, strict=True))


# ---------------------------------------------------------------------------- hypervolume
def hypervolume(points: Iterable[Sequence[float]], ref: Sequence[float]) -> float:
    """Exact hypervolume dominated by ``points`` (minimisation form) and bounded by ``ref``.

    Points that are not strictly better than ``ref`` in every objective add nothing and are ignored.
    Any number of objectives: 1 and 2 directly, 3 by a cumulative minimum over the grid of the points'
    coordinates (O(n^2)), more by slicing along the last objective down to 3.

    Raises:
        ValueError: a point's length differs from ``ref``'s, or ``ref`` is not finite.
    """
    r = np.asarray(ref, dtype=float)
    p = np.asarray(list(points), dtype=float).reshape(-1, r.size)
    if not np.all(np.isfinite(r)):
        raise ValueError(f"ref: the reference point must be finite, not {list(r)}")
    p = p[np.all(p < r, axis=1)]
    if len(p) == 0:
        return 0.0
    return float(_hv(_nondominated(p), r))


def _nondominated(p: np.ndarray) -> np.ndarray:
    """The distinct non-dominated rows of ``p``."""
    u = np.unique(p, axis=0)
    return u[pareto_mask(u)]


def _hv(p: np.ndarray, r: np.ndarray) -> float:
    n, d = p.shape
    if d == 1:
        return float(r[0] - p[:, 0].min())
    if d == 2:  # staircase: sorted by x, the best y so far bounds each strip
        order = np.lexsort((p[:, 1], p[:, 0]))
        x, y = p[order, 0], np.minimum.accumulate(p[order, 1])
        return float(np.diff(np.append(x, r[0])) @ (r[1] - y))
    if d == 3:
        # Cell (i, j) of the grid of sorted x and y coordinates is covered up to the smallest z among
        # the points whose x rank <= i and y rank <= j.
        ix, iy = np.argsort(p[:, 0], kind="stable"), np.argsort(p[:, 1], kind="stable")
        rank_x, rank_y = np.empty(n, dtype=int), np.empty(n, dtype=int)
        rank_x[ix], rank_y[iy] = np.arange(n), np.arange(n)
        z = np.full((n, n), r[2])
        z[rank_x, rank_y] = p[:, 2]
        z = np.minimum.accumulate(np.minimum.accumulate(z, axis=0), axis=1)
        dx = np.diff(np.append(p[ix, 0], r[0]))
        dy = np.diff(np.append(p[iy, 1], r[1]))
        return float(dx @ (r[2] - z) @ dy)
    # d > 3: slabs between consecutive values of the last objective
    p = p[np.argsort(p[:, -1], kind="stable")]
    edges = np.append(p[:, -1], r[-1])
    total = 0.0
    for i in range(n):
        depth = edges[i + 1] - edges[i]
        if depth > 0:
            total += depth * _hv(_nondominated(p[: i + 1, :-1]), r[:-1])
    return total


# ---------------------------------------------------------------------------- Pareto front and knee
def pareto_mask(losses: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Which rows of ``losses`` (minimisation form) no other row dominates (as good in every objective
    and better in one). Equal rows are all kept. Returns a bool array."""
    x = np.asarray(losses, dtype=float)
    if x.size == 0:
        return np.zeros(len(x), dtype=bool)
    uniq, inverse = np.unique(x, axis=0, return_inverse=True)  # lexicographically sorted
    on_front = np.zeros(len(uniq), dtype=bool)
    left = np.arange(len(uniq))
    while left.size:
        # The lexicographically first row left is dominated by none: a row dominating it would come
        # before it and would either be on the front or dominated by a front row, which removes both.
        first, left = left[0], left[1:]
        on_front[first] = True
        left = left[np.any(uniq[left] < uniq[first], axis=1)]
    return on_front[inverse.reshape(-1)]


def front_trials(trials: Sequence[FrozenTrial],
                 study_directions: Sequence[StudyDirection] | None = None) -> list[FrozenTrial]:
    """The Pareto-optimal complete trials among already-loaded ``trials``, as ``Study.best_trials``
    decides: if any trial carries constraints, only feasible trials (every constraint <= 0) compete.

    ``study_directions`` defaults to :func:`directions`.

    Raises:
        ValueError: a complete trial has another number of values than there are directions.
    """
    dirs = list(study_directions) if study_directions is not None else directions()
    constrained = any(len(t.constraints) > 0 for t in trials)
    done = [t for t in trials if t.state == TrialState.COMPLETE
            and not (constrained and any(c > 0 for c in t.constraints.values()))]
    if not done:
        return []
    if any(len(t.values) != len(dirs) for t in done):
        raise ValueError(f"values: trials must have {len(dirs)} objective values, one per direction")
    losses = [[-v if d == StudyDirection.MAXIMIZE else v for v, d in zip(t.values, dirs, strict=True)] for t in done]
    return [t for t, keep in zip(done, pareto_mask(losses), strict=True) if keep]


def knee_distances(rows: Sequence[Sequence[float]]) -> list[float]:
    """Distance of each row of objective values to the ideal point: the knee pick's criterion.

    Each objective is turned into :meth:`Objective.score` (bigger is better, log scale where the
    objective is logarithmic), scaled to [0, 1] over the rows (1 when all rows are equal), and the
    Euclidean distance to (1, ..., 1) is returned for each row; the knee is the row with the smallest.
    """
    if not rows:
        return []
    cols = [[o.score(row[k]) for row in rows] for k, o in enumerate(OBJECTIVES_SPEC)]
    scaled = []
    for col in cols:
        lo, hi = min(col), max(col)
        scaled.append([(v - lo) / (hi - lo) if hi > lo else 1.0 for v in col])
    ideal = (1.0,) * len(cols)
    return [math.dist(ideal, point) for point in zip(*scaled, strict=True)]
