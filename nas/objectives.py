"""The objectives of a vitnas search, described once.

Every place that needs an objective's name, direction, unit, axis scale, display format or hypervolume
reference reads it from :data:`OBJECTIVES_SPEC`: the Optuna study (metric names, directions), Ray Tune's
``mode`` list, the Pareto front and its knee, the hypervolume, the CLI tables, the dashboard figures, the
HTML report and the model card. The order of :data:`OBJECTIVES_SPEC` is the order of ``trial.values``.

Adding an objective (latency, memory, ...) is one more :class:`Objective` in :data:`OBJECTIVES_SPEC`, plus
its measurement (the trial must report a value under the objective's ``name``)::

    Objective("latency", "minimize", unit="ms", scale="log", per_device=True, fmt=".2f", worst=100.0, hv_unit="ms"),

Helpers read :data:`OBJECTIVES_SPEC` when they are called, so a test may replace it at run time.

The hypervolume (:func:`normalised_hypervolume`) is a fraction of the unit cube: each objective is
normalised to [0, 1] (1 = best) between bounds fixed when the study is created and stored with it
(:class:`HVBounds`, user attribute ``hv_bounds``): accuracy as ``(acc - 1/C) / (1 - 1/C)`` for C classes,
params and throughput on log scales (params between the smallest and largest models the space can build
at the deployment shape, throughput between fixed decades, :data:`THROUGHPUT_RANGE`). The reference point
is the cube's worst corner, so a design at chance accuracy, the largest size or 1 img/s adds nothing, and
no single objective can dominate the figure by its unit. ``vitnas status``, the dashboard and the
benchmarks all compute this number from the stored bounds. Optuna 5.0 has no public hypervolume function
(only the private ``optuna._hypervolume``), so :func:`hypervolume` computes it exactly here (2-D
staircases; 3-D by a cumulative minimum over the grid of the points' coordinates).
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
    "labels", "format_value", "record", "loss_vector", "HVBounds", "THROUGHPUT_RANGE", "hv_bounds",
    "study_bounds", "normalised_hypervolume", "hypervolume", "pareto_mask", "nondominated_sort", "crowding_distance",
    "front_trials", "knee_distances",
]

_STYLES = ("text", "web", "card")


def _check_bounds(o: Objective, bounds: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"bounds: {o.name!r} needs (lower, upper) numbers, not {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi and (o.scale != "log" or lo > 0)):
        need = "0 < lower < upper" if o.scale == "log" else "lower < upper"
        raise ValueError(f"bounds: {o.name!r} needs finite {need}, not ({lo:g}, {hi:g})")
    return lo, hi


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
        bounds: ``(lower, upper)`` of the hypervolume normalisation, in the objective's unit, used where
            a study stores none (:func:`hv_bounds` sets the study's own when it is created).

    Raises:
        ValueError: an unknown ``direction`` or ``scale``, an empty ``name``, a non-positive scale, bounds
            that are not increasing (or not positive on a log scale).
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
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"name: an objective needs a non-empty name, not {self.name!r}")
        if self.direction not in ("maximize", "minimize"):
            raise ValueError(f"direction: {self.direction!r} for {self.name!r}; allowed: maximize, minimize")
        if self.scale not in ("linear", "log"):
            raise ValueError(f"scale: {self.scale!r} for {self.name!r}; allowed: linear, log")
        for field in ("log_floor", "short_scale"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{field}: must be > 0 for {self.name!r}, not {getattr(self, field)!r}")
        _check_bounds(self, self.bounds)

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

    def normalise(self, value: float, bounds: tuple[float, float] | None = None) -> float:
        """``value`` mapped to [0, 1] between ``bounds`` (default :attr:`bounds`), 1 = best, clipped:
        linear or on ``log10`` as :attr:`scale` says."""
        lo, hi = bounds if bounds is not None else self.bounds
        v = float(value)
        if self.scale == "log":
            v, lo, hi = (math.log10(max(x, self.log_floor)) for x in (v, lo, hi))
        t = (v - lo) / (hi - lo)
        t = t if self.maximize else 1.0 - t
        return min(1.0, max(0.0, t))


#: The objectives, in the order of ``trial.values``.
OBJECTIVES_SPEC: tuple[Objective, ...] = (
    Objective("accuracy", "maximize", note="validation top-1", fmt=".4f", progress="acc {}", bounds=(0.0, 1.0)),
    Objective("params", "minimize", scale="log", log_floor=1.0, integer=True, fmt=",.0f", progress="params {:>9}",
              short_unit="k", short_scale=1e3, bounds=(1e3, 1e8)),
    Objective("throughput", "maximize", unit="img/s", scale="log", per_device=True, fmt=".0f", web_fmt=",.0f",
              card_fmt=".1f", progress="{:>8} img/s", bounds=(1.0, 1e6)),
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


# ---------------------------------------------------------------------------- normalisation bounds
#: Throughput bounds of the hypervolume, img/s: fixed decades (docs/design.md, "Judging a front"), wide enough
#: for a CPU at a large deployment shape (a few img/s) and a GPU at the proxy's (hundreds of thousands).
THROUGHPUT_RANGE: tuple[float, float] = (1.0, 1e6)


@dataclass(frozen=True)
class HVBounds:
    """Per-objective ``(lower, upper)`` bounds, in each objective's unit, that map it to [0, 1] (1 = best)
    for the hypervolume. Fixed when a study is created and stored with it (user attribute ``hv_bounds``,
    :meth:`to_dict`), so every reader computes the same hypervolume.

    Raises:
        ValueError: a missing or unknown objective, or bounds an objective cannot take (see
            :class:`Objective`).
    """

    bounds: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if len(self.bounds) != len(OBJECTIVES_SPEC):
            raise ValueError(f"bounds: one (lower, upper) pair per objective ({', '.join(names())}) is needed")
        object.__setattr__(self, "bounds", tuple(_check_bounds(o, b) for o, b in zip(OBJECTIVES_SPEC, self.bounds,
                                                                                      strict=True)))

    @classmethod
    def from_dict(cls, data: Any) -> HVBounds:
        """From ``{name: [lower, upper]}``; objectives left out take their :attr:`Objective.bounds`.

        Raises:
            ValueError: not a mapping, an unknown objective or unusable bounds.
        """
        if not isinstance(data, dict):
            raise ValueError(f"hv_bounds: a mapping of objective -> [lower, upper] is needed, not {type(data).__name__}")
        unknown = set(data) - set(names())
        if unknown:
            raise ValueError(f"hv_bounds: unknown objective {sorted(unknown)[0]!r}; allowed: {', '.join(names())}")
        return cls(tuple(tuple(data.get(o.name, o.bounds)) for o in OBJECTIVES_SPEC))

    def to_dict(self) -> dict[str, list[float]]:
        """``{name: [lower, upper]}`` (JSON-able; what the study stores)."""
        return {o.name: list(b) for o, b in zip(OBJECTIVES_SPEC, self.bounds, strict=True)}

    def normalise(self, values: Sequence[float]) -> list[float]:
        """``values`` (one per objective, own units) mapped to [0, 1], 1 = best (:meth:`Objective.normalise`)."""
        return [o.normalise(v, b) for o, v, b in zip(OBJECTIVES_SPEC, values, self.bounds, strict=True)]

    def worst(self) -> list[float]:
        """The worst value of each objective within the bounds (the lower bound of one maximised, the upper of
        one minimised): the hypervolume's reference corner in the objectives' own units."""
        return [lo if o.maximize else hi for o, (lo, hi) in zip(OBJECTIVES_SPEC, self.bounds, strict=True)]

    def describe(self) -> str:
        """The bounds in words: ``accuracy 0.1-1, params 1.2e+04-2.3e+06, throughput 1-1e+06 img/s``."""
        return ", ".join(f"{o.name} {lo:.3g}-{hi:.3g}{(' ' + o.unit) if o.unit else ''}"
                         for o, (lo, hi) in zip(OBJECTIVES_SPEC, self.bounds, strict=True))


def hv_bounds(num_classes: int | None = None, params: tuple[float, float] | None = None,
              throughput: tuple[float, float] | None = None) -> HVBounds:
    """The bounds a new study stores: accuracy from chance (1/C) to 1; ``params`` the smallest and largest
    parameter counts the space can build at the deployment shape
    (:func:`search_spaces.extremes.params_range`; a space of one size gets half a decade either side);
    throughput :data:`THROUGHPUT_RANGE` unless given.
    Left-out pieces take the objective's default :attr:`Objective.bounds`.

    Raises:
        ValueError: ``num_classes`` < 2 or unusable bounds.
    """
    given: dict[str, Any] = {}
    if num_classes is not None:
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes: must be an integer >= 2, got {num_classes!r}")
        given["accuracy"] = (1.0 / num_classes, 1.0)
    if params is not None:
        lo, hi = params
        if lo == hi:  # a space of one size: half a decade either side, so the one design scores 0.5
            lo, hi = lo / math.sqrt(10.0), hi * math.sqrt(10.0)
        given["params"] = (lo, hi)
    given["throughput"] = throughput or THROUGHPUT_RANGE
    return HVBounds.from_dict({k: v for k, v in given.items() if k in names()})


def study_bounds(meta: Any) -> HVBounds:
    """The bounds a study stored: ``meta`` is its record (``nas.study.StudyMeta``, read by the study layer),
    or its user attributes as a mapping, or the study itself. A study made before vitnas stored bounds gets
    :func:`hv_bounds` from its ``num_classes`` and the default parameter range."""
    if hasattr(meta, "hv_bounds"):  # the typed record
        stored, classes = meta.hv_bounds, meta.num_classes
    else:
        attrs = getattr(meta, "user_attrs", meta) or {}
        stored, classes = attrs.get("hv_bounds"), attrs.get("num_classes")
    if stored is not None:
        return HVBounds.from_dict(stored)
    return hv_bounds(classes if isinstance(classes, int) and classes >= 2 else None)


def normalised_hypervolume(rows: Iterable[Sequence[float]], bounds: HVBounds) -> float:
    """Fraction of the unit cube dominated by ``rows`` (objective values, one per objective, own units)
    once each is normalised by ``bounds`` (:meth:`HVBounds.normalise`); the reference point is the cube's
    worst corner. 0 for no rows; 1 only for a design at the best bound of every objective. Rows with a
    non-finite value are left out.
    """
    pts = [[1.0 - t for t in bounds.normalise(r)] for r in rows if all(math.isfinite(float(v)) for v in r)]
    return hypervolume(pts, [1.0] * len(OBJECTIVES_SPEC))


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


def nondominated_sort(losses: Sequence[Sequence[float]] | np.ndarray) -> list[np.ndarray]:
    """The fronts of non-dominated sorting (Deb et al., NSGA-II, IEEE TEC 6(2), 2002) of the rows of ``losses``
    (minimisation form): front 1 holds the rows no row dominates, front 2 those dominated only by front 1, and
    so on. Each front is an array of row indices, ascending. Equal rows share a front."""
    x = np.asarray(losses, dtype=float)
    if x.size == 0:
        return []
    a, b = x[:, None, :], x[None, :, :]
    dominates = np.all(a <= b, axis=2) & np.any(a < b, axis=2)  # [i, j]: row i dominates row j
    left = np.ones(len(x), dtype=bool)
    fronts = []
    while left.any():
        free = left & ~np.any(dominates[left], axis=0)
        fronts.append(np.flatnonzero(free))
        left &= ~free
    return fronts


def crowding_distance(values: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of each row of ``values`` (one front; any orientation): per objective, the
    rows at the two ends get infinity and the others the gap between their neighbours over the objective's
    span, summed over objectives. Two rows or fewer: all infinity."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    out = np.zeros(n)
    if n <= 2:
        return np.full(n, math.inf)
    for k in range(x.shape[1]):
        order = np.argsort(x[:, k], kind="stable")
        vals = x[order, k]
        span = vals[-1] - vals[0]
        out[order[0]] = out[order[-1]] = math.inf
        if span > 0:
            out[order[1:-1]] += (vals[2:] - vals[:-2]) / span
    return out


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
