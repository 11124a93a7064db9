"""What a study says: its trials read for display, the Pareto front, the knee and other picks, the
hypervolume, the deployment shape and the status. Read-only, Ray-free and torch-free.
"""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .. import objectives
from .optuna_adapter import read_trials, with_values
from .record import CONFIRM_PREFIX, confirmation_key, read_meta, read_pausing, read_promotion
from .storage import StudyError

__all__ = ["get_trial", "pareto_front", "nonfinite_trials", "is_infeasible", "trial_record", "knee_trial",
           "pick_trial", "front_records", "describe_arch", "hypervolume", "target_shape", "describe_shape",
           "study_status", "trained_epochs", "read_trials", "confirmation", "confirmations", "confirmation_runs",
           "not_separated", "resolve_trained", "confirmations_from_attrs", "superseded"]

def get_trial(study: optuna.Study, number: int, *, finished: bool = False) -> FrozenTrial:
    """Trial ``number`` of ``study``.

    Raises:
        StudyError: no such trial, or (with ``finished``) the trial did not complete.
    """
    trials = study.get_trials(deepcopy=False)
    match = [t for t in trials if t.number == number]
    if not match:
        last = trials[-1].number if trials else None
        allowed = f"0..{last}" if last is not None else "none yet"
        raise StudyError(f"trial: study {study.study_name!r} has no trial {number}; trials: {allowed}")
    trial = match[0]
    if finished and trial.state != TrialState.COMPLETE:
        reason = trial.user_attrs.get("fail_reason")
        extra = f" ({reason})" if reason else ""
        raise StudyError(f"trial: trial {number} is {trial.state.name.lower()}{extra}; choose a complete trial")
    return trial


def superseded(study: optuna.Study) -> set[int]:
    """The trials that paused at the promotion rung, once the promotion is recorded (empty before it): their
    accuracy is the rung's, not the proxy's, so they leave the front; the promoted ones go on as the trials
    that resumed them (``resumed_from``). Until the promotion the paused trials are the front."""
    return {int(n) for n in (read_promotion(study) or {}).get("paused", [])}


def pareto_front(study: optuna.Study, confirmed: bool = True) -> list[FrozenTrial]:
    """The Pareto-optimal complete trials (Optuna's ``best_trials``), by trial number; trials paused at the
    promotion rung are left out once the promotion is recorded (:func:`superseded`).

    With ``confirmed`` (the default), a design that ``vitnas retrain`` confirmed competes with its confirmed
    mean accuracy (:func:`confirmation`) in place of its proxy's: the trials returned for it are copies
    carrying that value (``user_attrs`` as stored). Without confirmations the front is the proxy's.
    Complete trials with a non-finite objective value (inf, nan) are left out (:func:`nonfinite_trials`).
    """
    gone = superseded(study)
    trials = [t for t in study.get_trials(deepcopy=False) if t.number not in gone]
    conf = confirmations(study) if confirmed else {}
    if conf:
        trials = [with_values(t, [conf[_design(t)]["mean"], *t.values[1:]])
                  if t.state == TrialState.COMPLETE and t.values and _design(t) in conf else t for t in trials]
    return _front_of(trials, study.directions)


def _design(t: FrozenTrial) -> int:
    """The trial that trained ``t``'s design (itself, or the one whose result it reused)."""
    return int(t.user_attrs.get("reused_from", t.number))


def resolve_trained(study: optuna.Study, t: FrozenTrial) -> FrozenTrial:
    """The trial that trained ``t``'s design: ``t`` itself, or the trial whose result it reused."""
    return t if "reused_from" not in t.user_attrs else get_trial(study, int(t.user_attrs["reused_from"]))


def confirmation_runs(study: optuna.Study, number: int) -> list[dict[str, Any]]:
    """The stored ``vitnas retrain`` runs of trial ``number``'s design (every protocol)."""
    return list(study.user_attrs.get(confirmation_key(number)) or [])


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    protocols: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        protocols.setdefault(json.dumps(r.get("protocol"), sort_keys=True), []).append(r)
    # The longest protocol present (most epochs, then most training images, then most seeds).
    group = max(protocols.values(), key=lambda rs: (rs[0]["protocol"].get("epochs", 0),
                                                   rs[0]["protocol"].get("train_images", 0), len(rs)))
    accuracies = [float(r["accuracy"]) for r in sorted(group, key=lambda r: r["seed"])]
    best = max(group, key=lambda r: (r["accuracy"], -r["seed"]))
    p = group[0]["protocol"]
    return {"mean": statistics.fmean(accuracies), "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            "seeds": len(accuracies), "epochs": p.get("epochs"), "train_images": p.get("train_images"),
            "img_size": p.get("img_size"), "accuracies": accuracies, "best_seed": best["seed"],
            "weights": best.get("weights"), "weights_artifact": best.get("weights_artifact")}


def confirmation(study: optuna.Study, number: int) -> dict[str, Any] | None:
    """The confirmed accuracy of trial ``number``'s design, or None when it was not retrained.

    ``{"mean", "std", "seeds", "epochs", "train_images", "img_size", "accuracies", "best_seed", "weights"}``:
    over the runs of the longest protocol stored (most epochs, then most training images); ``std`` is the
    sample standard deviation (0 with one seed); ``weights`` are the best seed's.
    """
    runs = confirmation_runs(study, number)
    return _summary(runs) if runs else None


def confirmations(study: optuna.Study) -> dict[int, dict[str, Any]]:
    """:func:`confirmation` of every confirmed design, by trial number (one read of the study's attributes)."""
    return confirmations_from_attrs(study.user_attrs)


def confirmations_from_attrs(attrs: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """:func:`confirmations` from a study's user attributes already read (the dashboard's snapshot)."""
    out = {}
    for key, runs in attrs.items():
        if key.startswith(CONFIRM_PREFIX) and runs:
            out[int(key[len(CONFIRM_PREFIX):])] = _summary(runs)
    return out


def not_separated(a: dict[str, Any], b: dict[str, Any], level: float = 0.95) -> bool:
    """Whether two confirmed accuracies (:func:`confirmation`) are within each other's noise.

    The rule: the ``level`` (95%) confidence interval of the difference of the two means (Welch's t interval,
    unequal variances, Welch-Satterthwaite degrees of freedom) contains 0. With fewer than 2 seeds on either
    side there is no estimate of the noise, and the two are not separated.
    """
    from scipy import stats

    na, nb = int(a["seeds"]), int(b["seeds"])
    if na < 2 or nb < 2:
        return True
    va, vb = a["std"] ** 2 / na, b["std"] ** 2 / nb
    diff = abs(a["mean"] - b["mean"])
    if va + vb == 0:
        return diff == 0
    df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    return diff <= stats.t.ppf(0.5 + level / 2, df) * math.sqrt(va + vb)


def _front_of(trials: list[FrozenTrial], directions: Any) -> list[FrozenTrial]:
    left_out = {t.number for t in nonfinite_trials(trials)}
    finite = [t for t in trials if t.number not in left_out]
    return sorted(objectives.front_trials(finite, directions), key=lambda t: t.number)


def nonfinite_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The complete trials among ``trials`` with a non-finite objective value (left out of the front)."""
    return [t for t in trials if t.state == TrialState.COMPLETE and t.values
            and not all(math.isfinite(v) for v in t.values)]


def is_infeasible(trial: FrozenTrial) -> bool:
    """Whether ``trial`` breaks a budget (an Optuna constraint > 0)."""
    return any(v > 0 for v in trial.constraints.values())


def trial_record(trial: FrozenTrial) -> dict[str, Any]:
    """One JSON-able record of a trial: number, state, objectives, FLOPs, genes and its other attributes."""
    attrs = trial.user_attrs
    return {
        "trial": trial.number,
        "state": trial.state.name,
        **objectives.record(trial.values),
        "flops": attrs.get("flops"),
        "peak_memory": attrs.get("peak_memory"),
        "preset": attrs.get("preset"),
        "arch": attrs.get("arch"),
        "device": attrs.get("device"),
        "wall_seconds": attrs.get("wall_seconds"),
        "fail_reason": attrs.get("fail_reason"),
        "reused_from": attrs.get("reused_from"),
        "target": attrs.get("target"),
        "budget_violations": attrs.get("budget_violations") or {},
    }


def knee_trial(study: optuna.Study) -> FrozenTrial:
    """The front member closest to the ideal point: the usual "knee" pick of a Pareto front.

    Each objective is scaled to [0, 1] over the front in its better direction (on a log scale where
    :mod:`nas.objectives` says so: params and throughput span orders of magnitude); the knee is the
    member with the smallest Euclidean distance to (1, ..., 1) (:func:`nas.objectives.knee_distances`).
    Ties go to the lower trial number.

    Raises:
        StudyError: the study has no complete trial.
    """
    front = pareto_front(study)
    if not front:
        raise StudyError(f"trial: study {study.study_name!r} has no complete trial to pick from")
    return _knee(front)


def _knee(front: list[FrozenTrial]) -> FrozenTrial:
    dist = objectives.knee_distances([t.values for t in front])
    return front[min(range(len(front)), key=lambda i: (dist[i], front[i].number))]


def pick_trial(study: optuna.Study, pick: str) -> FrozenTrial:
    """A Pareto-front member: ``"knee"`` (:func:`knee_trial`) or the best in one objective, by name
    (``"accuracy"``, ``"params"``, ...). Ties go to the lower trial number.

    Raises:
        ValueError: ``pick`` is neither ``knee`` nor an objective.
        StudyError: the study has no complete trial.
    """
    allowed = ("knee", *objectives.names())
    if pick not in allowed:
        raise ValueError(f"pick: unknown value {pick!r}; allowed: {', '.join(allowed)}")
    front = pareto_front(study)
    if not front:
        raise StudyError(f"pick: study {study.study_name!r} has no complete trial yet")
    if pick == "knee":
        return _knee(front)
    k, o = objectives.names().index(pick), objectives.get(pick)
    return max(front, key=lambda t: (o.sign * t.values[k], -t.number))


def front_records(study: optuna.Study) -> list[dict[str, Any]]:
    """:func:`trial_record` of every Pareto-front member (:func:`pareto_front`: confirmed accuracies where a
    design has them), best first by the accuracy the front used. Each record's ``accuracy`` is the proxy's;
    ``confirmed`` is the design's :func:`confirmation` (None if not retrained) and ``front_by`` says which
    accuracy placed it on the front (``"confirmed"`` or ``"proxy"``)."""
    first = objectives.primary()
    conf = confirmations(study)
    stored = {t.number: t for t in study.get_trials(deepcopy=False)}
    records = []
    for t in pareto_front(study):
        record = trial_record(stored[t.number])
        c = conf.get(_design(t))
        record["confirmed"] = {k: v for k, v in c.items() if k not in ("weights", "weights_artifact")} if c else None
        record["front_by"] = "confirmed" if c else "proxy"
        records.append(record)
    return sorted(records, key=lambda r: -first.sign * (r["confirmed"]["mean"] if r["confirmed"] else r[first.name]))


def describe_arch(attrs: dict[str, Any]) -> str:
    """Short description of a trial's genes from its ``arch`` user attribute."""
    arch = attrs.get("arch")
    try:
        from search_spaces.genes import Architecture  # loaded only when genes are described (no torch)

        return Architecture.from_dict(arch).describe() if arch else "?"
    except ValueError:
        return "?"


def hypervolume(trials: list[FrozenTrial], bounds: objectives.HVBounds | None = None) -> float:
    """Normalised hypervolume of the complete ``trials``: the fraction of the unit cube they dominate once
    each objective is mapped to [0, 1] by ``bounds`` (the study's stored bounds,
    :func:`nas.objectives.study_bounds`; default: the objectives' own), reference point the cube's worst
    corner (:func:`nas.objectives.normalised_hypervolume`). Non-finite trials are left out.
    """
    bounds = bounds or objectives.hv_bounds()
    rows = [t.values for t in trials if t.state == TrialState.COMPLETE and t.values]
    return objectives.normalised_hypervolume(rows, bounds)


def target_shape(study: optuna.Study) -> dict[str, Any]:
    """The deployment shape the study's params, FLOPs, throughput and memory belong to: ``img_size``,
    ``batch``, ``dtype`` (``auto``: bfloat16 on CUDA, float32 on the CPU); a study made before vitnas
    stored one measured at its data set's image size, batch 64."""
    meta = read_meta(study)
    return dict(meta.target or {"img_size": meta.img_size, "batch": 64, "dtype": "auto"})


def describe_shape(shape: dict[str, Any]) -> str:
    """``112 px, batch 8, float32``: a shape in words (dtype ``auto``: float32 on the CPU, bfloat16 on CUDA)."""
    dtype = shape.get("dtype", "auto")
    dtype = "float32 on the CPU, bfloat16 on CUDA" if dtype == "auto" else dtype
    return f"{shape.get('img_size')} px, batch {shape.get('batch')}, {dtype}"


def study_status(study: optuna.Study) -> dict[str, Any]:
    """Counts of trials by state (complete, running, failed, queued, pruned; ``paused``: the trials that paused
    at the promotion rung, not counted as complete, and out of every count and of the front once the promotion
    is recorded, ``promoted``), the proposals
    refused before
    training (``refused``: they broke a budget by their known cost; not counted as complete), the front size and
    the current normalised hypervolume (:func:`hypervolume`, with the study's bounds), both with confirmed means
    in place of the proxy's where ``vitnas retrain`` confirmed a design (``front_by`` says so;
    ``proxy_hypervolume`` is the proxy's alone), the failure reasons by
    count, the proxy and deployment shapes, the budgets and how many trained complete trials break them.

    Reads the objectives of every trial but the user attributes of the failed ones only
    (:func:`read_trials`), so a large study's curves and genes are never decoded here; and those of the complete
    ones while a search that pauses trials has not promoted yet (a quarter of its budget at most), to count
    the paused ones (they are the front until the promotion).
    """
    gone = superseded(study)
    trials = [t for t in read_trials(study, user_attrs=False) if t.number not in gone]
    count = lambda state: sum(1 for t in trials if t.state == state)  # noqa: E731
    waiting = 0  # paused at the rung, before the promotion
    if not gone and read_pausing(study) is not None and read_promotion(study) is None:
        waiting = sum(1 for t in read_trials(study, (TrialState.COMPLETE,)) if t.user_attrs.get("paused_at"))
    reasons: dict[str, int] = {}
    if count(TrialState.FAIL):
        for t in read_trials(study, (TrialState.FAIL,)):
            r = t.user_attrs.get("fail_reason", "unknown")
            reasons[r] = reasons.get(r, 0) + 1
    conf = confirmations(study)
    proxy_front = _front_of(trials, study.directions) if count(TrialState.COMPLETE) else []
    if conf:  # a design confirmed by vitnas retrain competes with its confirmed mean, as in pareto_front
        trials = [with_values(t, [conf[t.number]["mean"], *t.values[1:]])
                  if t.state == TrialState.COMPLETE and t.values and t.number in conf else t for t in trials]
    front = _front_of(trials, study.directions) if count(TrialState.COMPLETE) else []
    meta = read_meta(study)
    bounds = objectives.study_bounds(meta)
    infeasible = {t.number for t in trials if t.state == TrialState.COMPLETE and is_infeasible(t)}
    refused = 0
    if infeasible:  # refused before training (user attribute "refused"): read only when a budget was broken
        refused = sum(1 for t in read_trials(study, (TrialState.COMPLETE,))
                      if t.number in infeasible and t.user_attrs.get("refused"))
    return {
        "study": study.study_name,
        "complete": count(TrialState.COMPLETE) - refused - waiting, "refused": refused,
        "running": count(TrialState.RUNNING),
        "failed": count(TrialState.FAIL), "queued": count(TrialState.WAITING), "pruned": count(TrialState.PRUNED),
        "front_size": len(front), "hypervolume": hypervolume(front, bounds),
        "hv_bounds": bounds.to_dict(), "fail_reasons": reasons, "dataset": meta.dataset,
        "proxy_img_size": meta.img_size, "target": target_shape(study), "budgets": meta.budgets or {},
        "infeasible": len(infeasible) - refused, "confirmed": len(conf),
        "front_by": "confirmed where retrained, else proxy" if conf else "proxy",
        "proxy_hypervolume": hypervolume(proxy_front, bounds),
        "paused": len(gone) or waiting,  # paused at the promotion rung (not counted as complete)
        "promoted": bool(gone),  # the paused trials are superseded (off the front) once promoted
    }


def trained_epochs(state: TrialState, attrs: dict[str, Any]) -> int:
    """Proxy epochs a trial that ended trained: its curve's length when COMPLETE (0 for a reused result; less
    the paused trial's epochs for one that resumed it, ``resumed_from``), ``pruned_at_epoch`` when PRUNED
    (less the same), 0 otherwise."""
    before = int((attrs.get("resumed_from") or {}).get("epoch") or 0)
    if state == TrialState.PRUNED:
        return max(0, int(attrs.get("pruned_at_epoch") or 0) - before)
    if state == TrialState.COMPLETE and "reused_from" not in attrs:
        return max(0, len(attrs.get("curve") or []) - before)
    return 0
