"""One read of a study's storage, shaped for the figures: :class:`StudyData`.

Every figure function of :mod:`dashboards` accepts an ``optuna.Study`` or a :class:`StudyData`;
:func:`build_report` reads the storage once (``study.get_trials``) and hands the snapshot to every figure,
so a report is consistent even while a search keeps writing to the storage.

Objectives are vitnas' (:mod:`nas.objectives`): ``accuracy`` (max, validation top-1 fraction), ``params``
(min, trainable parameters), ``throughput`` (max, images/s).

Constraint violations: vitnas has no constraints yet. A trial counts as violating when its user
attribute ``constraint`` is a number > 0 (the amount by which it breaks a budget, in the budget's unit),
or when one of Optuna's own constraint values (``FrozenTrial.constraints``, written by samplers given a
``constraints_func`` or by ``Trial.set_constraint``) is > 0. Failed trials have no objectives; they appear in the
table (with their ``fail_reason``), in the counts and, where they left a partial curve, on the learning curves.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from nas import objectives
from nas.study import read_trials, superseded
from search_spaces import registry
from search_spaces.genes import ATTENTIONS, Architecture, GeneError

__all__ = ["StudyData", "load_data", "is_violating", "describe_genes", "gene_features", "ATTENTION_COLORS",
           "hypervolume_series", "preset_comparison"]

#: One colour per attention type, the same in every figure.
ATTENTION_COLORS: dict[str, str] = dict(zip(
    ATTENTIONS + ("other",),
    ("#1f77b4", "#d62728", "#9467bd", "#2ca02c", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"),
))


def is_violating(trial: FrozenTrial) -> bool:
    """Whether ``trial`` breaks a constraint: user attribute ``constraint`` > 0 or an Optuna constraint > 0."""
    c = trial.user_attrs.get("constraint")
    if isinstance(c, (int, float)) and not isinstance(c, bool) and c > 0:
        return True
    return any(isinstance(v, (int, float)) and v > 0 for v in trial.constraints.values())


def _arch(trial: FrozenTrial) -> Architecture | None:
    arch = trial.user_attrs.get("arch")
    if not isinstance(arch, dict):
        return None
    try:
        return Architecture.from_dict(arch)
    except (GeneError, ValueError, TypeError):
        return None


_NO_ARCH = object()


def _arch_of(trial: FrozenTrial, archs: dict[int, Any] | None) -> Architecture | None:
    """``_arch(trial)``, parsed once per trial number in ``archs`` (:attr:`StudyData.archs`): validating
    genes is the costly part of describing 10,000 trials."""
    if archs is None:
        return _arch(trial)
    arch = archs.get(trial.number, _NO_ARCH)
    if arch is _NO_ARCH:
        arch = archs[trial.number] = _arch(trial)
    return arch


def describe_genes(trial: FrozenTrial, data: StudyData | None = None) -> str:
    """One line of genes (``Architecture.describe``), or the Optuna params when ``arch`` is missing.
    ``data``: the snapshot ``trial`` belongs to (its genes are then parsed once)."""
    return _describe(trial, _arch_of(trial, data.archs if data is not None else None))


def _describe(trial: FrozenTrial, arch: Architecture | None) -> str:
    if arch is not None:
        return arch.describe()
    if trial.params:
        return " ".join(f"{k}={v}" for k, v in trial.params.items())
    return "?"


def gene_features(trial: FrozenTrial, data: StudyData | None = None) -> dict[str, Any]:
    """Genes of ``trial`` as flat scalar features (for importance and parallel coordinates).

    A per-head gene (MaiT's ``mask_ratios``) becomes its mean, ``<param>_mean`` (``mask_ratio_mean``;
    0 where it does not apply); other genes that do not apply keep their neutral value (``None`` for the
    window and expansion genes). Falls back to the Optuna params when the trial has no valid ``arch``
    user attribute. ``data``: the snapshot ``trial`` belongs to (its genes are then parsed, and its
    features computed, once; each call returns a fresh dict).
    """
    if data is None:
        return _features(trial, _arch(trial), _per_head())
    feats = data.features.get(trial.number)
    if feats is None:
        per_head = data.derived.get("per_head")
        if per_head is None:
            per_head = data.derived["per_head"] = _per_head()
        feats = data.features[trial.number] = _features(trial, _arch_of(trial, data.archs), per_head)
    return dict(feats)


def _per_head() -> tuple[Any, ...]:
    """The registered per-head genes (:attr:`~search_spaces.registry.GeneSpec.per_head`)."""
    return tuple(g for g in registry.genes() if g.per_head)


def _features(trial: FrozenTrial, arch: Architecture | None, per_head: tuple[Any, ...]) -> dict[str, Any]:
    if arch is None:
        return {k: v for k, v in trial.params.items() if isinstance(v, (int, float, str, bool)) or v is None}
    d = arch.to_dict()
    for g in per_head:
        values = d.pop(g.name)
        d[f"{g.param_name}_mean"] = round(float(np.mean(values)), 4) if values else 0.0
    return d


def feature_names() -> tuple[str, ...]:
    """The names :func:`gene_features` gives, in gene order: the macro genes, then every mechanism gene."""
    macro = tuple(f.name for f in dataclasses.fields(Architecture) if not registry.owners(f.name))
    extra = tuple(f"{g.param_name}_mean" if g.per_head else g.name for g in registry.genes())
    return macro + extra


def _finite_values(trial: FrozenTrial) -> bool:
    return (trial.state == TrialState.COMPLETE and trial.values is not None
            and len(trial.values) == len(objectives.spec())
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in trial.values))


@dataclass
class StudyData:
    """A snapshot of a study: every trial, and arrays over the complete ones (in trial-number order).

    Attributes:
        study_name: the study's name.
        directions: Optuna directions of the objectives.
        trials: every trial (any state), by number.
        complete: complete trials with finite values of every objective, by number.
        values: ``(n, k)`` float array of the ``k`` objectives (accuracy, params, throughput) of ``complete``.
        numbers: ``(n,)`` int array of their trial numbers.
        attention: attention type of each complete trial (``"other"`` when unknown).
        genes: one-line genes of each complete trial.
        front: trial numbers of the Pareto front (exactly Optuna's ``best_trials``).
        presets: preset name by trial number (every state).
        violating: ``(n,)`` bool array, constraint violations among ``complete``.
        bounds: the study's hypervolume bounds (:func:`nas.objectives.study_bounds`).
    """

    study_name: str
    directions: list[optuna.study.StudyDirection]
    trials: list[FrozenTrial]
    complete: list[FrozenTrial]
    values: np.ndarray
    numbers: np.ndarray
    attention: list[str]
    genes: list[str]
    front: set[int]
    presets: dict[int, str]
    violating: np.ndarray
    bounds: objectives.HVBounds
    metric_names: list[str] = field(default_factory=lambda: list(objectives.names()))
    user_attrs: dict[str, Any] = field(default_factory=dict)
    loaded_at: _dt.datetime = field(default_factory=_dt.datetime.now)
    #: Parsed genes by trial number (None: no valid ``arch``), filled as figures ask for them.
    archs: dict[int, Any] = field(default_factory=dict, repr=False)
    #: :func:`gene_features` by trial number, filled as figures ask for them (parallel coordinates and
    #: importance share them).
    features: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False)
    #: Other values derived from the snapshot once and shared by the figures (hover texts, per-head genes).
    derived: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def front_mask(self) -> np.ndarray:
        """``(n,)`` bool array: which complete trials are on the front."""
        return np.fromiter((int(n) in self.front for n in self.numbers), dtype=bool, count=len(self.numbers))

    def counts(self) -> dict[str, int]:
        """Number of trials in each state (lower-case state names) and ``total``."""
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.state.name.lower()] = out.get(t.state.name.lower(), 0) + 1
        out["total"] = len(self.trials)
        return out


def load_data(study: optuna.Study | StudyData, bounds: objectives.HVBounds | None = None, *,
              previous: StudyData | None = None) -> StudyData:
    """Read ``study`` once into a :class:`StudyData` (a ``StudyData`` is returned unchanged).

    The read goes through Optuna's trial cache (:func:`nas.study.read_trials`): on a study read before
    in this process only new and unfinished trials come from the storage. ``previous``: an earlier
    snapshot of the same study (the live view's last one), whose parsed genes (and :func:`gene_features`)
    of finished trials are reused, so a redraw parses only the genes of trials that changed.

    Raises:
        ValueError: the study does not have vitnas' objectives.
    """
    if isinstance(study, StudyData):
        return study
    names = objectives.names()
    if len(study.directions) != len(names):
        raise ValueError(f"study: {study.study_name!r} has {len(study.directions)} objectives; "
                         f"the dashboard needs vitnas' {len(names)} ({', '.join(names)})")
    trials = read_trials(study)  # one bulk read of the storage, by number
    complete, finite = [], []  # finite: as study.best_trials reads them, less non-finite complete trials
    for t in trials:
        if t.state != TrialState.COMPLETE:
            finite.append(t)
        elif _finite_values(t):
            complete.append(t)
            finite.append(t)
    values = np.array([t.values for t in complete], dtype=float).reshape(-1, len(names))
    attention, genes = [], []
    archs: dict[int, Any] = {}  # becomes StudyData.archs: each trial's genes parsed once
    features: dict[int, dict[str, Any]] = {}
    if previous is not None and previous.study_name == study.study_name:
        done = {t.number for t in previous.trials if t.state.is_finished()}
        archs.update((n, a) for n, a in previous.archs.items() if n in done)
        features.update((n, f) for n, f in previous.features.items() if n in done)
    for t in complete:
        arch = t.user_attrs.get("arch")
        a = arch.get("attention") if isinstance(arch, dict) else t.params.get("attention")
        attention.append(a if a in ATTENTION_COLORS else "other")
        genes.append(_describe(t, _arch_of(t, archs)))
    # As study.best_trials (as nas.study.pareto_front: trials paused at the promotion rung leave it once promoted).
    gone = superseded(study)
    front = {t.number for t in objectives.front_trials([t for t in finite if t.number not in gone], study.directions)}
    metric_names = getattr(study, "metric_names", None) or list(names)
    return StudyData(
        study_name=study.study_name, directions=list(study.directions), trials=trials, complete=complete,
        values=values, numbers=np.array([t.number for t in complete], dtype=int), attention=attention, genes=genes,
        front=front, presets={t.number: str(t.user_attrs["preset"]) for t in trials if t.user_attrs.get("preset")},
        violating=np.array([is_violating(t) for t in complete], dtype=bool),
        bounds=bounds or objectives.study_bounds(study.user_attrs),
        metric_names=list(metric_names), user_attrs=dict(study.user_attrs), archs=archs, features=features,
    )


def _order_key(t: FrozenTrial) -> tuple:
    done = t.datetime_complete or t.datetime_start or _dt.datetime.max
    return (done, t.number)


def hypervolume_series(study: optuna.Study | StudyData, bounds: objectives.HVBounds | None = None) -> dict[str, list]:
    """Hypervolume of the front after each complete trial, in completion order.

    Returns a dict of equal-length lists: ``trial`` (number of the trial that completed), ``completed``
    (how many complete trials so far), ``time`` (its ``datetime_complete``), ``hours`` (since the first
    trial started) and ``hypervolume`` (:func:`nas.study.hypervolume` of the front so far: the fraction of
    the normalised objective cube, with ``bounds``, default the study's). It is recomputed only when a trial
    changes the front (dominance does not depend on units). The series never decreases; its last value
    is the hypervolume of the final front.
    """
    data = load_data(study)
    bounds = bounds or data.bounds
    order = sorted(range(len(data.complete)), key=lambda i: _order_key(data.complete[i]))
    ordered = [data.complete[i] for i in order]
    starts = [t.datetime_start for t in data.trials if t.datetime_start is not None]
    t0 = min(starts) if starts else None
    k = len(objectives.names())
    values = data.values[order].reshape(len(ordered), k)
    losses = values * np.array([-1.0 if o.maximize else 1.0 for o in objectives.spec()])  # loss_vector of each
    ones = [1.0] * k
    front = np.empty((0, k))  # the loss vectors of the front so far, and the normalised points of its trials
    points = np.empty((0, k))
    hv, series = 0.0, []
    for i, p in enumerate(losses):
        if not (front <= p).all(axis=1).any():  # p is not weakly dominated: the front changes
            keep = ~(p <= front).all(axis=1)
            front = np.vstack([front[keep], p])
            # nas.study.hypervolume(members, bounds): the hypervolume of the members' points (1 - each objective
            # normalised by bounds) under the reference point (1, ..., 1), each point computed once here.
            points = np.vstack([points[keep], [1.0 - x for x in bounds.normalise(values[i].tolist())]])
            hv = max(hv, objectives.hypervolume(points, ones))
        series.append(hv)
    done = [t.datetime_complete for t in ordered]
    return {
        "trial": [t.number for t in ordered],
        "completed": list(range(1, len(ordered) + 1)),
        "time": done,
        "hours": [(d - t0).total_seconds() / 3600.0 if (d and t0) else None for d in done],
        "hypervolume": series,
    }


def preset_comparison(study: optuna.Study | StudyData) -> list[dict[str, Any]]:
    """How the front beats each paper preset at equal or lower parameter count.

    For each complete trial with a ``preset`` user attribute: the front member with the highest accuracy
    among those with ``params`` <= the preset's (the preset itself when it is on the front and nothing
    smaller beats it). Keys: ``preset``, ``trial``, each objective (``accuracy``, ``params``, ``throughput``),
    ``best_trial``, ``best_`` + each objective, ``delta_accuracy`` (best minus preset,
    fraction), ``speedup`` (best throughput / preset's), ``on_front``, ``label`` (short text for plots).
    Presets whose trial did not complete are listed with ``trial`` and ``state`` only.
    """
    data = load_data(study)
    rows: list[dict[str, Any]] = []
    fm = data.front_mask
    front_idx = np.flatnonzero(fm)
    names = objectives.names()
    ka, kp, kt = names.index("accuracy"), names.index("params"), names.index("throughput")
    index = {int(n): i for i, n in enumerate(data.numbers)}
    for number, name in sorted(data.presets.items(), key=lambda kv: kv[0]):
        if number not in index:
            state = next(t.state.name for t in data.trials if t.number == number)
            rows.append({"preset": name, "trial": number, "state": state, "label": f"{name} ({state.lower()})",
                         "short_label": name})
            continue
        i = index[number]
        own = objectives.record(data.values[i])
        cand = [j for j in front_idx if data.values[j, kp] <= data.values[i, kp]]
        best = max(cand, key=lambda j: (data.values[j, ka], data.values[j, kt], -data.values[j, kp])) if cand else i
        top = objectives.record(data.values[best])
        delta = float(top["accuracy"] - own["accuracy"])
        on_front = number in data.front
        if int(data.numbers[best]) == number or delta <= 0:
            label = f"{name}: on the front" if on_front else f"{name}: not beaten in accuracy"
            short = f"{name} (front)" if on_front else name
        else:
            label = f"{name}: +{100 * delta:.1f} pts (#{int(data.numbers[best])})"
            short = f"{name} +{100 * delta:.1f}"
        rows.append({
            "preset": name, "trial": number, "state": "COMPLETE", **own, "best_trial": int(data.numbers[best]),
            **{f"best_{k}": v for k, v in top.items()}, "delta_accuracy": delta,
            "speedup": top["throughput"] / own["throughput"] if own["throughput"] > 0 else None,
            "on_front": on_front, "label": label, "short_label": short,
        })
    return rows
