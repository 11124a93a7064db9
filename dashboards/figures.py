"""The dashboard's plotly figures, each from an ``optuna.Study`` or a :class:`~dashboards.data.StudyData`.

Every function takes the study (or one snapshot of it, so several figures share one storage read) and
returns a ``plotly.graph_objects.Figure``. Conventions shared by the figures:

- Pareto-front members (Optuna's ``best_trials``) are drawn strong and coloured by attention type;
  dominated trials are faded grey; constraint-violating trials (see :mod:`dashboards.data`) carry a red
  cross; paper presets are black diamonds labelled with how much the front beats them at equal or lower
  parameter count.
- Hover shows the trial number and its genes.
- Above ``gl_threshold`` points (default 1,500) scatter plots switch to WebGL (``Scattergl``).
- Each trace carries ``meta={"role": ...}`` (``front``, ``dominated``, ``preset``, ``violating``,
  ``curves``, ...) so notebooks and tests can find it.
"""

from __future__ import annotations

import math
import random
import warnings
from typing import Any

import numpy as np
import optuna
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nas import objectives
from nas.study.front import confirmations_from_attrs

from .data import (
    ATTENTION_COLORS,
    StudyData,
    feature_names,
    gene_features,
    hypervolume_series,
    load_data,
    preset_comparison,
)

__all__ = ["pareto_figure", "pareto_2d_figures", "hypervolume_figure", "parallel_coordinates_figure",
           "importance_figure", "gene_importances", "curves_figure", "attention_breakdown_figure"]

GL_THRESHOLD = 1500
FADED = "rgba(150,150,150,0.35)"
PRESET_COLOR = "#111111"
VIOLATION_COLOR = "#e0002a"
CONFIRMED_COLOR = "#0b6e4f"
#: Colour of each objective's panel, by position in :data:`nas.objectives.OBJECTIVES_SPEC`.
OBJECTIVE_COLORS = ("#2a7ab0", "#c0392b", "#27ae60", "#8e44ad", "#d35400", "#16a085")
_FONT = dict(family="Inter, Segoe UI, Helvetica, Arial, sans-serif", size=12)


def _layout(fig: go.Figure, title: str, height: int, **kw: Any) -> go.Figure:
    opts: dict[str, Any] = dict(margin=dict(l=60, r=30, t=60, b=50), legend=dict(itemsizing="constant"))
    opts.update(kw)
    fig.update_layout(title=dict(text=title, x=0.01, xanchor="left", font=dict(size=16)), height=height,
                      template="plotly_white", font=_FONT, **opts)
    return fig


def _strings(texts: list[str]) -> np.ndarray:
    """``texts`` as a numpy string array: plotly checks a list of strings one by one, an array at once
    (the figure's JSON is the same)."""
    return np.array(texts, dtype=str)


def _hover(data: StudyData, idx: np.ndarray) -> np.ndarray:
    """Hover texts (trial number, marks, genes) of the complete trials ``idx``, built once per snapshot."""
    texts = data.derived.get("hover")
    if texts is None:
        out = []
        for i in range(len(data.numbers)):
            n = int(data.numbers[i])
            p = data.presets.get(n)
            tag = f" · preset {p}" if p else ""
            tag += " · on front" if n in data.front else ""
            tag += " · violates constraint" if data.violating[i] else ""
            out.append(f"<b>trial {n}</b>{tag}<br>{data.genes[i]}")
        texts = data.derived["hover"] = _strings(out)
    return texts[np.asarray(idx, dtype=int)]


def _hover_values(*axes: tuple[str, objectives.Objective]) -> str:
    """``accuracy %{x:.4f} · params %{y:,.0f} · throughput %{z:,.0f} img/s`` for plotly hover templates."""
    return " · ".join(f"{o.name} %{{{axis}:{o.web_fmt or o.fmt}}}" + (f" {o.unit}" if o.unit else "")
                      for axis, o in axes)


def _template(*axes: tuple[str, objectives.Objective], head: str = "%{text}") -> str:
    return f"{head}<br>{_hover_values(*axes)}<extra></extra>"


def _axis(o: objectives.Objective, values: np.ndarray, title: str | None = None) -> dict[str, Any]:
    """Plotly axis settings of objective ``o``: title, and a log axis with 1-2-5 ticks where ``o`` is log."""
    axis: dict[str, Any] = {"title": title or o.label}
    if o.scale == "log":
        axis.update(type="log", **log_ticks(values))
    return axis


def _groups(data: StudyData) -> tuple[np.ndarray, np.ndarray]:
    fm = data.front_mask
    return np.flatnonzero(fm), np.flatnonzero(~fm)


def _preset_rows(data: StudyData) -> dict[int, dict[str, Any]]:
    return {r["trial"]: r for r in preset_comparison(data) if "accuracy" in r}


def _si(v: float) -> str:
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:g}{suf}"
    return f"{v:g}"


def log_ticks(values: np.ndarray) -> dict[str, list]:
    """Tick values 1-2-5 x 10^k spanning ``values``, with short SI labels (``20k``, ``1M``), for a log axis."""
    vals = np.asarray(values, dtype=float)
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if not len(vals):
        return {}
    lo, hi = math.floor(math.log10(vals.min() / 1.3)), math.ceil(math.log10(vals.max() * 1.3))
    ticks = [m * 10.0 ** k for k in range(lo, hi + 1) for m in (1, 2, 5)
             if vals.min() / 1.3 <= m * 10.0 ** k <= vals.max() * 1.3]
    if len(ticks) > 9:
        ticks = [t for t in ticks if f"{t:g}".lstrip("0.").startswith("1")] or ticks
    return {"tickvals": ticks, "ticktext": [_si(t) for t in ticks]}


def _label_offsets(x: np.ndarray, y: np.ndarray, sel: np.ndarray, xlog: bool, ylog: bool,
                   height_px: float = 390, gap_px: float = 14, lift_px: float = 24) -> list[tuple[int, int, str]]:
    """(ax, ay, xanchor) of the labels of points ``sel`` of a panel whose points are (``x``, ``y``).

    Pixel heights are estimated from the panel's data range; labels go above-right of their point (left
    in the right third of the panel), stacked downwards so that no two overlap.
    """
    def norm(a: np.ndarray, log: bool) -> np.ndarray:
        a = np.log10(np.maximum(a, 1e-12)) if log else a.astype(float)
        lo, hi = float(np.min(a)), float(np.max(a))
        return (a - lo) / (hi - lo) if hi > lo else np.full_like(a, 0.5)

    nx, ny = norm(x, xlog)[sel], norm(y, ylog)[sel]
    py = ny * height_px * 0.9
    out: dict[int, tuple[int, int, str]] = {}
    last = {True: math.inf, False: math.inf}
    for j in np.argsort(-py):
        right = bool(nx[j] > 0.66)
        target = min(py[j] + lift_px, last[right] - gap_px)
        last[right] = target
        out[int(j)] = (-30 if right else 30, int(round(-(target - py[j]))), "right" if right else "left")
    return [out[j] for j in range(len(sel))]


# ---------------------------------------------------------------------------- Pareto front, 3-D
def pareto_figure(study: optuna.Study | StudyData) -> go.Figure:
    """The Pareto front in 3-D: the first three objectives, accuracy x params x throughput (params and
    throughput on log axes, as :mod:`nas.objectives` says).

    Front members coloured by attention type, dominated trials faded, violating trials crossed, presets
    labelled with how much the best front member at equal or lower params beats them. Designs confirmed by
    ``vitnas retrain`` are drawn again at their confirmed mean accuracy, as open circles with error bars of one
    standard deviation over seeds; the title says how many are confirmed and that the rest are proxy only.
    """
    data = load_data(study)
    fig = go.Figure()
    front, dominated = _groups(data)
    v = data.values.astype(np.float32)  # float32 halves the embedded arrays; exact for params < 16.7M
    ox, oy, oz = objectives.spec()[:3]
    template = _template(("x", ox), ("y", oy), ("z", oz))

    def add(idx: np.ndarray, name: str, role: str, marker: dict, **kw: Any) -> None:
        if len(idx) == 0 and role not in ("front", "dominated"):
            return
        fig.add_trace(go.Scatter3d(
            x=v[idx, 0], y=v[idx, 1], z=v[idx, 2], mode=kw.pop("mode", "markers"), name=name, marker=marker,
            text=kw.pop("text", _hover(data, idx)), hovertemplate=template, customdata=data.numbers[idx],
            meta={"role": role}, **kw))

    add(dominated, f"dominated ({len(dominated)})", "dominated", dict(size=2.5, color=FADED))
    for a in ATTENTION_COLORS:
        idx = np.array([i for i in front if data.attention[i] == a], dtype=int)
        if len(idx):
            add(idx, f"front: {a}", "front", dict(size=5, color=ATTENTION_COLORS[a], line=dict(width=0.5, color="#222")),
                legendgroup="front")
    viol = np.flatnonzero(data.violating)
    add(viol, f"violates constraint ({len(viol)})", "violating",
        dict(size=5, symbol="cross", color=VIOLATION_COLOR, opacity=0.9))
    presets = _preset_rows(data)
    index = {int(n): i for i, n in enumerate(data.numbers)}
    pidx = np.array([index[n] for n in presets], dtype=int)
    if len(pidx):
        add(pidx, "paper presets", "preset", dict(size=6, symbol="diamond", color=PRESET_COLOR),
            mode="markers+text", textposition="top center",
            textfont=dict(size=10, color=PRESET_COLOR),
            text=[presets[int(data.numbers[i])]["short_label"] for i in pidx])
        fig.data[-1].update(hovertext=_hover(data, pidx))
        fig.data[-1].update(hovertemplate=_template(("x", ox), ("y", oy), ("z", oz), head="%{hovertext}<br>%{text}"))
    confirmed = confirmations_from_attrs(data.user_attrs)  # vitnas retrain: open circles, error bars on accuracy
    primary = [o.name for o in (ox, oy, oz)].index(objectives.primary().name) \
        if objectives.primary().name in (ox.name, oy.name, oz.name) else None
    cidx = np.array([index[n] for n in sorted(confirmed) if n in index], dtype=int)
    if len(cidx) and primary is not None:
        rows = [confirmed[int(data.numbers[i])] for i in cidx]
        axes = [v[cidx, 0].astype(float), v[cidx, 1].astype(float), v[cidx, 2].astype(float)]
        axes[primary] = np.array([r["mean"] for r in rows])
        bars = dict(type="data", array=[r["std"] for r in rows], visible=True, color=CONFIRMED_COLOR)
        fig.add_trace(go.Scatter3d(
            x=axes[0], y=axes[1], z=axes[2], mode="markers", name=f"confirmed ({len(cidx)}): mean ± std",
            marker=dict(size=6, symbol="circle-open", color=CONFIRMED_COLOR, line=dict(width=2)),
            **{f"error_{'xyz'[primary]}": bars}, customdata=data.numbers[cidx], meta={"role": "confirmed"},
            text=[f"trial {int(data.numbers[i])}: confirmed {r['mean']:.4f} ± {r['std']:.4f} over {r['seeds']} "
                  f"seed(s), {r['epochs']} epochs (proxy {v[i, primary]:.4f})" for i, r in zip(cidx, rows)],
            hovertemplate="%{text}<extra></extra>"))
    note = f"; {len(cidx)} confirmed (open circles, ± std), the rest proxy only" if len(cidx) else ""
    _layout(fig, f"Pareto front in 3-D — {len(front)} of {len(v)} complete trials{note}", 880,
            legend=dict(orientation="h", y=0, x=0, itemsizing="constant", font=dict(size=10)),
            scene=dict(xaxis=_axis(ox, v[:, 0]), yaxis=_axis(oy, v[:, 1]), zaxis=_axis(oz, v[:, 2]),
                       camera=dict(eye=dict(x=1.6, y=-1.6, z=0.9))),
            margin=dict(l=0, r=0, t=60, b=0))
    return fig


# ---------------------------------------------------------------------------- Pareto front, 2-D
def pairs() -> list[tuple[str, str]]:
    """The (x, y) objective pairs of :func:`pareto_2d_figures`: every other objective against the first
    (accuracy), then the others against each other: ``(params, accuracy), (throughput, accuracy),
    (params, throughput)``."""
    first, *rest = objectives.names()
    return [(o, first) for o in rest] + [(a, b) for i, a in enumerate(rest) for b in rest[i + 1:]]


def _front_2d(x: np.ndarray, y: np.ndarray, x_max: bool, y_max: bool) -> np.ndarray:
    """Indices of the 2-D non-dominated points (:func:`nas.objectives.pareto_mask`), one per distinct
    position (the lowest index), sorted by x (a staircase)."""
    if len(x) == 0:
        return np.array([], dtype=int)
    losses = np.column_stack([-x if x_max else x, -y if y_max else y]).astype(float)
    idx = np.flatnonzero(objectives.pareto_mask(losses))
    _, first = np.unique(losses[idx], axis=0, return_index=True)
    return np.array(sorted(idx[first], key=lambda i: x[i]), dtype=int)


def pareto_2d_figures(study: optuna.Study | StudyData, gl_threshold: int = GL_THRESHOLD) -> go.Figure:
    """The 2-D projections of the front (:func:`pairs`): accuracy vs params, accuracy vs throughput,
    throughput vs params.

    One figure with one panel per pair (log axes for params and throughput). Front members of the 3-D front are
    coloured by attention type, dominated trials faded; a dotted staircase joins the front members that
    are also non-dominated in that pair; presets are labelled in every panel. Designs confirmed by
    ``vitnas retrain`` are drawn again in the accuracy panels at their confirmed mean, as open circles with error
    bars of one sample standard deviation; every other point is the proxy's accuracy only.
    """
    data = load_data(study)
    spec = {o.name: o for o in objectives.spec()}
    col = {name: k for k, name in enumerate(spec)}
    panels = pairs()
    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.07,
                        subplot_titles=[f"{y} vs {x}" for x, y in panels])
    front, dominated = _groups(data)
    v = data.values.astype(np.float32)
    Scatter = go.Scattergl if len(v) > gl_threshold else go.Scatter
    presets = _preset_rows(data)
    index = {int(n): i for i, n in enumerate(data.numbers)}
    confirmed = confirmations_from_attrs(data.user_attrs)  # vitnas retrain: open circles with error bars
    labels: list[dict[str, Any]] = []  # the presets' labels, every panel
    for k, (xn, yn) in enumerate(panels, 1):
        x, y = v[:, col[xn]], v[:, col[yn]]
        ox, oy = spec[xn], spec[yn]
        tmpl = _template(("x", ox), ("y", oy))
        first = k == 1

        def add(idx, name, role, marker, legendgroup, showlegend=first, x=x, y=y, tmpl=tmpl, pair=(xn, yn), k=k, **kw):
            fig.add_trace(Scatter(x=x[idx], y=y[idx], mode=kw.pop("mode", "markers"), name=name, marker=marker,
                                  text=kw.pop("text", _hover(data, idx)), hovertemplate=kw.pop("hovertemplate", tmpl),
                                  customdata=data.numbers[idx], meta={"role": role, "pair": list(pair)},
                                  legendgroup=legendgroup, showlegend=showlegend, **kw), row=1, col=k)

        add(dominated, f"dominated ({len(dominated)})", "dominated", dict(size=4, color=FADED), "dominated")
        stair = front[_front_2d(x[front], y[front], ox.maximize, oy.maximize)] if len(front) else front
        if len(stair) > 1:
            fig.add_trace(go.Scatter(x=x[stair], y=y[stair], mode="lines", line=dict(color="#444", width=1, dash="dot",
                                     shape="hv" if oy.maximize != ox.maximize else "vh"),
                                     hoverinfo="skip", name="2-D trade-off", legendgroup="stair", showlegend=first,
                                     meta={"role": "staircase", "pair": [xn, yn]}), row=1, col=k)
        for a in ATTENTION_COLORS:
            idx = np.array([i for i in front if data.attention[i] == a], dtype=int)
            if len(idx):
                add(idx, f"front: {a}", "front", dict(size=8, color=ATTENTION_COLORS[a], line=dict(width=0.6, color="#222")),
                    f"front:{a}")
        viol = np.flatnonzero(data.violating)
        if len(viol):
            add(viol, f"violates constraint ({len(viol)})", "violating",
                dict(size=7, symbol="x-thin", line=dict(width=2, color=VIOLATION_COLOR), color=VIOLATION_COLOR), "viol")
        pidx = np.array([index[n] for n in presets], dtype=int)
        if len(pidx):
            add(pidx, "paper presets", "preset", dict(size=10, symbol="diamond-open", line=dict(width=2),
                                                        color=PRESET_COLOR), "preset")
            xlog, ylog = ox.scale == "log", oy.scale == "log"
            offsets = _label_offsets(x, y, pidx, xlog, ylog)
            for (ax, ay, anchor), i in zip(offsets, pidx):
                row = presets[int(data.numbers[i])]
                xv, yv = x[i], y[i]
                labels.append(dict(  # added at once below: add_annotation(row=, col=) costs ~50 ms a label
                    x=math.log10(xv) if xlog else xv, y=math.log10(yv) if ylog else yv,
                    xref="x" if k == 1 else f"x{k}", yref="y" if k == 1 else f"y{k}",
                    text=row["label"], showarrow=True, arrowhead=0, arrowwidth=0.7, arrowcolor="#777", ax=ax, ay=ay,
                    font=dict(size=9.5, color=PRESET_COLOR), bgcolor="rgba(255,255,255,0.8)", xanchor=anchor))
        if yn == objectives.primary().name and confirmed:
            cidx = np.array([index[n] for n in sorted(confirmed) if n in index], dtype=int)
            if len(cidx):
                rows = [confirmed[int(data.numbers[i])] for i in cidx]
                fig.add_trace(Scatter(
                    x=x[cidx], y=[r["mean"] for r in rows], mode="markers", name=f"confirmed ({len(cidx)}): mean ± std",
                    marker=dict(size=11, symbol="circle-open", color=CONFIRMED_COLOR, line=dict(width=2)),
                    error_y=dict(type="data", array=[r["std"] for r in rows], visible=True, color=CONFIRMED_COLOR),
                    customdata=data.numbers[cidx], meta={"role": "confirmed", "pair": [xn, yn]},
                    text=[f"trial {int(data.numbers[i])}: confirmed {r['mean']:.4f} ± {r['std']:.4f} over {r['seeds']} "
                          f"seed(s), {r['epochs']} epochs (proxy {y[i]:.4f})" for i, r in zip(cidx, rows)],
                    hovertemplate="%{text}<extra></extra>", legendgroup="confirmed", showlegend=first), row=1, col=k)
        fig.update_xaxes(_axis(ox, x, ox.title), row=1, col=k)
        fig.update_yaxes(_axis(oy, y, oy.title), row=1, col=k)
    if labels:
        fig.update_layout(annotations=[*fig.layout.annotations, *labels])
    note = f"; {len(confirmed)} confirmed (open circles, ± std), the rest proxy only" if confirmed else ""
    _layout(fig, f"Pareto front, pairwise — {len(front)} front members (strong), {len(dominated)} dominated (faded){note}",
            560, legend=dict(orientation="h", y=-0.16, x=0, itemsizing="constant"), margin=dict(l=60, r=20, t=80, b=90))
    return fig


# ---------------------------------------------------------------------------- hypervolume
def hypervolume_figure(study: optuna.Study | StudyData, bounds: objectives.HVBounds | None = None) -> go.Figure:
    """Hypervolume of the front as trials complete (left) and over wall-clock hours (right).

    Values from :func:`dashboards.data.hypervolume_series` (the exact hypervolume of
    :func:`nas.study.hypervolume`: the fraction of the objective cube normalised by the study's bounds).
    """
    data = load_data(study)
    s = hypervolume_series(data, bounds)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=["over completed trials", "over wall-clock time"])
    text = _strings([f"trial {n}" for n in s["trial"]])
    # Arrays rather than lists: plotly checks a list element by element (10,000 trials: ~0.5 s per figure).
    hv, numbers = np.asarray(s["hypervolume"], dtype=float), np.asarray(s["trial"], dtype=int)
    hours = np.array([np.nan if h is None else h for h in s["hours"]], dtype=float)
    fig.add_trace(go.Scatter(x=np.asarray(s["completed"], dtype=int), y=hv, mode="lines", line=dict(shape="hv", width=2.5,
                             color="#1f4e9c"), text=text, customdata=numbers, name="hypervolume",
                             hovertemplate="%{text}: %{x} complete, HV %{y:.4g}<extra></extra>",
                             meta={"role": "hypervolume"}), row=1, col=1)
    fig.add_trace(go.Scatter(x=hours, y=hv, mode="lines", line=dict(shape="hv", width=2.5,
                             color="#1f4e9c"), text=text, customdata=numbers, showlegend=False,
                             hovertemplate="%{text}: %{x:.2f} h, HV %{y:.4g}<extra></extra>",
                             meta={"role": "hypervolume_time"}), row=1, col=2)
    n_presets = sum(1 for t in data.complete if t.number in data.presets)
    if n_presets and len(s["completed"]) > n_presets:
        fig.add_vrect(x0=0.5, x1=n_presets + 0.5, fillcolor="#999", opacity=0.12, line_width=0, row=1, col=1,
                      annotation_text="presets", annotation_position="top left", annotation_font_size=10)
    fig.update_xaxes(title_text="complete trials", row=1, col=1)
    fig.update_xaxes(title_text="hours since the search started", row=1, col=2)
    fig.update_yaxes(title_text="hypervolume", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    final = s["hypervolume"][-1] if s["hypervolume"] else 0.0
    b = bounds or data.bounds
    _layout(fig, f"Hypervolume of the front — now {final:.4g} after {len(s['completed'])} complete trials", 400,
            showlegend=False, margin=dict(l=60, r=30, t=95, b=50))
    fig.update_layout(title_subtitle=dict(text=f"fraction of the objective cube normalised by {b.describe()}; "
                                               "reference: its worst corner",
                                          font=dict(size=11, color="#667")))
    return fig


# ---------------------------------------------------------------------------- parallel coordinates


def _encode(values: list[Any]) -> tuple[np.ndarray, list[float], list[str]]:
    """Categorical or numeric gene values as axis positions, tick values and labels."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    uniq = sorted(set(values), key=lambda u: (u is None, u if numeric else str(u)))
    pos = {u: float(j) for j, u in enumerate(uniq)}
    labels = ["–" if u is None else (f"{u:g}" if isinstance(u, float) else str(u)) for u in uniq]
    return np.array([pos[u] for u in values], dtype=np.float32), list(pos.values()), labels


def parallel_coordinates_figure(study: optuna.Study | StudyData) -> go.Figure:
    """Parallel coordinates from genes to objectives, one line per complete trial, coloured by the first
    objective (accuracy).

    Gene axes are categorical (one tick per value seen; ``–`` where a gene does not apply); objective
    axes are numeric (params in thousands). Drag along an axis to filter.
    """
    data = load_data(study)
    feats = [gene_features(t, data) for t in data.complete]
    dims = []
    names = [g for g in feature_names() if any(g in f for f in feats)]
    for g in names:
        vals = [f.get(g) for f in feats]
        if len(set(vals)) < 2:
            continue
        if len(set(vals)) > 8 and all(isinstance(u, (int, float)) and not isinstance(u, bool) for u in vals):
            dims.append(dict(label=g, values=np.asarray(vals, dtype=np.float32)))
            continue
        enc, tickvals, ticktext = _encode(vals)
        dims.append(dict(label=g, values=enc, tickvals=tickvals, ticktext=ticktext))
    v = data.values.astype(np.float32)
    dims += [dict(label=o.short_label, values=v[:, k] / o.short_scale) for k, o in enumerate(objectives.spec())]
    fig = go.Figure(go.Parcoords(
        dimensions=dims, line=dict(color=v[:, 0], colorscale="Viridis", showscale=True,
                                   colorbar=dict(title=objectives.primary().name, thickness=12)),
        meta={"role": "parcoords"}, labelangle=-20, labelfont=dict(size=11), tickfont=dict(size=9)))
    _layout(fig, f"Genes → objectives — {len(v)} complete trials (drag on an axis to filter)", 520,
            margin=dict(l=70, r=130, t=110, b=40))
    return fig


# ---------------------------------------------------------------------------- importance
def gene_importances(study: optuna.Study | StudyData, max_trials: int = 400, seed: int = 0,
                     evaluator: optuna.importance.BaseImportanceEvaluator | None = None) -> dict[str, dict[str, float]]:
    """Importance of each gene for each objective, by Optuna's importance evaluators.

    The genes of at most ``max_trials`` complete trials (a seeded random sample; every front member is
    kept while it fits) become the parameters of the trials of one in-memory study, whose values are the
    objectives' targets (minus :meth:`nas.objectives.Objective.score`: accuracy, log10 params, log10
    throughput; lower is better for each, as PED-ANOVA assumes). For each objective,
    ``optuna.importance.get_param_importances`` runs on it with ``evaluator`` (default Optuna's,
    PED-ANOVA) and ``target`` that objective's value, which the evaluators treat as a single-objective
    study to minimise. Returns ``{objective: {gene: importance}}``, importances normalised to sum 1;
    empty when fewer than 3 complete trials.
    """
    data = load_data(study)
    n = len(data.complete)
    if n < 3:
        return {}
    idx = list(range(n))
    if n > max_trials:
        rng = random.Random(seed)
        front = [i for i in idx if int(data.numbers[i]) in data.front][:max_trials]
        rest = [i for i in idx if int(data.numbers[i]) not in data.front]
        idx = sorted(front + rng.sample(rest, max_trials - len(front)))
    feats = [gene_features(data.complete[i], data) for i in idx]
    genes = [g for g in dict.fromkeys(k for f in feats for k in f) if len({repr(f.get(g)) for f in feats}) > 1]
    choices = {}
    for g in genes:
        vals = {f.get(g) for f in feats}
        choices[g] = sorted(vals, key=lambda u: (u is None, str(type(u)), u if u is not None else 0))
    dists = {g: optuna.distributions.CategoricalDistribution(choices[g]) for g in genes}
    spec = objectives.spec()
    out: dict[str, dict[str, float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st = optuna.create_study(directions=["minimize"] * len(spec), storage=optuna.storages.InMemoryStorage())
        st.add_trials([optuna.trial.create_trial(
            params={g: f.get(g) for g in genes}, distributions=dists,
            values=[-o.score(float(data.values[i, k])) for k, o in enumerate(spec)]) for i, f in zip(idx, feats)])
        for k, o in enumerate(spec):
            imp = optuna.importance.get_param_importances(st, evaluator=evaluator, target=lambda t, k=k: t.values[k])
            out[o.name] = {g: float(imp.get(g, 0.0)) for g in genes}
    return out


def importance_figure(study: optuna.Study | StudyData, max_trials: int = 400, seed: int = 0,
                      evaluator: optuna.importance.BaseImportanceEvaluator | None = None) -> go.Figure:
    """Which genes matter for each objective: one bar panel per objective (see :func:`gene_importances`)."""
    data = load_data(study)
    imp = gene_importances(data, max_trials=max_trials, seed=seed, evaluator=evaluator)
    names = objectives.names()
    fig = make_subplots(rows=1, cols=len(names), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=list(names))
    if not imp:
        fig.add_annotation(text="fewer than 3 complete trials: no importances yet", showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=0.5)
        return _layout(fig, "Gene importance per objective", 300)
    genes = sorted(next(iter(imp.values())), key=lambda g: sum(imp[o][g] for o in imp))
    for k, obj in enumerate(names, 1):
        vals = [imp[obj][g] for g in genes]
        color = OBJECTIVE_COLORS[(k - 1) % len(OBJECTIVE_COLORS)]
        fig.add_trace(go.Bar(x=vals, y=genes, orientation="h", marker_color=color, name=obj,
                             text=[f"{v:.2f}" for v in vals], textposition="outside", cliponaxis=False,
                             hovertemplate=f"{obj}: %{{y}} %{{x:.3f}}<extra></extra>", meta={"role": "importance",
                             "objective": obj}), row=1, col=k)
        fig.update_xaxes(range=[0, max(max(vals) * 1.25, 0.05)], showticklabels=False, row=1, col=k)
    sample = min(len(data.complete), max_trials)
    ev = (evaluator.__class__.__name__ if evaluator else "PedAnovaImportanceEvaluator").replace("ImportanceEvaluator", "")
    _layout(fig, f"Gene importance per objective — Optuna {ev}, {sample} of {len(data.complete)} complete trials",
            max(300, 60 + 26 * len(genes)), showlegend=False)
    return fig


# ---------------------------------------------------------------------------- learning curves
def _curve(t: optuna.trial.FrozenTrial) -> list[tuple[float, float]]:
    pts = []
    for c in t.user_attrs.get("curve") or []:
        try:
            pts.append((float(c["epoch"]), float(c["val_accuracy"])))
        except (KeyError, TypeError, ValueError):
            continue
    return pts


def curves_figure(study: optuna.Study | StudyData, max_trials: int | None = None, seed: int = 0,
                  gl_threshold: int = GL_THRESHOLD) -> go.Figure:
    """Validation accuracy against epoch for every trial (its ``curve`` user attribute).

    One trace per attention type (curves separated by gaps), faint; front members' curves drawn again
    strong; failed and running trials' partial curves grey and dotted. ``max_trials`` caps the plotted
    complete trials (a seeded sample; front members always kept).
    """
    data = load_data(study)
    fig = go.Figure()
    by_type: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for t, a in zip(data.complete, data.attention):
        by_type.setdefault(a, []).append(t)
    if max_trials is not None and len(data.complete) > max_trials:
        rng = random.Random(seed)
        keep = {t.number for t in rng.sample(data.complete, max_trials)} | data.front
        by_type = {a: [t for t in ts if t.number in keep] for a, ts in by_type.items()}
    curves: dict[int, list[tuple[float, float]]] = {}  # each trial's curve, read once

    def curve(t: optuna.trial.FrozenTrial) -> list[tuple[float, float]]:
        pts = curves.get(t.number)
        if pts is None:
            pts = curves[t.number] = _curve(t)
        return pts

    n_points = sum(len(curve(t)) for ts in by_type.values() for t in ts)
    Scatter = go.Scattergl if n_points > gl_threshold * 4 else go.Scatter

    def lines(trials, label=lambda t: f"trial {t.number}"):
        xs, ys, text = [], [], []
        for t in trials:
            pts = curve(t)
            if not pts:
                continue
            name = label(t)
            for e, acc in pts:
                xs.append(e)
                ys.append(acc)
            text += [name] * len(pts)
            xs.append(np.nan)
            ys.append(np.nan)
            text.append("")
        return np.array(xs, dtype=np.float32), np.array(ys, dtype=np.float32), _strings(text)

    n_curves = 0
    for a in ATTENTION_COLORS:
        ts = by_type.get(a)
        if not ts:
            continue
        x, y, text = lines(ts)
        n_curves += sum(1 for t in ts if curve(t))
        fig.add_trace(Scatter(x=x, y=y, mode="lines", name=f"{a} ({len(ts)})", text=text,
                              line=dict(color=ATTENTION_COLORS[a], width=1), opacity=0.35 if len(ts) > 30 else 0.6,
                              hovertemplate="%{text}: epoch %{x}, val acc %{y:.4f}<extra>" + a + "</extra>",
                              legendgroup=a, meta={"role": "curves", "attention": a}))
    front_by_type: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for t, a in zip(data.complete, data.attention):
        if t.number in data.front:
            front_by_type.setdefault(a, []).append(t)
    for a in ATTENTION_COLORS:
        ts = front_by_type.get(a, []) if len(data.front) < 400 else []
        if ts:
            x, y, text = lines(ts)
            fig.add_trace(Scatter(x=x, y=y, mode="lines", name=f"front: {a}", text=text, legendgroup=a,
                                  showlegend=False, line=dict(color=ATTENTION_COLORS[a], width=2.2),
                                  hovertemplate="%{text} (front): epoch %{x}, val acc %{y:.4f}<extra>" + a + "</extra>",
                                  meta={"role": "front_curves", "attention": a}))
    partial = [t for t in data.trials if t.state.name in ("FAIL", "RUNNING", "PRUNED") and curve(t)]
    if partial:
        x, y, text = lines(partial, label=lambda t: f"trial {t.number} ({t.state.name.lower()})")
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=f"failed / running ({len(partial)})", text=text,
                                 line=dict(color="#555", width=1.2, dash="dot"), marker=dict(size=4),
                                 hovertemplate="%{text}: epoch %{x}, val acc %{y:.4f}<extra></extra>",
                                 meta={"role": "partial_curves"}))
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_yaxes(title_text="validation accuracy")
    _layout(fig, f"Learning curves — {n_curves} trials, coloured by attention type (front members bold)", 480)
    return fig


# ---------------------------------------------------------------------------- breakdown by attention type
def attention_breakdown_figure(study: optuna.Study | StudyData) -> go.Figure:
    """Objectives by attention type: box plots of each objective (accuracy, params, throughput) per mechanism.

    The x labels give the number of complete trials and of front members of each type; each type's
    front members are overlaid as dots.
    """
    data = load_data(study)
    spec = objectives.spec()
    fig = make_subplots(rows=1, cols=len(spec), horizontal_spacing=0.06, subplot_titles=[o.label for o in spec])
    types = [a for a in ATTENTION_COLORS if a in set(data.attention)]
    att = np.array(data.attention, dtype=object)
    fm = data.front_mask
    labels = {a: f"{a} ({int((att == a).sum())}·{int((fm & (att == a)).sum())}★)" for a in types}
    for k in range(len(spec)):
        for a in types:
            sel = att == a
            fig.add_trace(go.Box(y=data.values[sel, k], name=labels[a],
                                 marker_color=ATTENTION_COLORS[a], boxpoints=False, showlegend=False,
                                 hoverinfo="y", meta={"role": "box", "attention": a}), row=1, col=k + 1)
            fsel = sel & fm
            if fsel.any():
                fig.add_trace(go.Scatter(x=[labels[a]] * int(fsel.sum()), y=data.values[fsel, k], mode="markers",
                                         marker=dict(color=ATTENTION_COLORS[a], size=6, line=dict(width=1, color="#222")),
                                         text=[f"trial {int(n)}" for n in data.numbers[fsel]], showlegend=False,
                                         hovertemplate="%{text} (front): %{y:,.4g}<extra></extra>",
                                         meta={"role": "front_points", "attention": a}), row=1, col=k + 1)
    for k, o in enumerate(spec):
        if o.scale == "log":
            fig.update_yaxes(type="log", row=1, col=k + 1, **log_ticks(data.values[:, k]))
    fig.update_xaxes(tickfont=dict(size=10), tickangle=-40)
    _layout(fig, "Objectives by attention type — boxes: all complete trials; dots: front members; "
                 "after each name: (trials · front members★)", 500, showlegend=False)
    return fig
