"""A synthetic vitnas study with realistic values, written by Optuna directly (no training).

For trying the dashboard, for its tests and for its benchmark: :func:`make_demo_study` fills an Optuna
storage with trials that look like a ``vitnas search`` on the digits proxy task -- the same objectives
and metric names, the same Optuna parameters (``SearchSpace.to_params``), the same user attributes
(``arch``, ``arch_key``, ``preset``, ``flops``, ``peak_memory``, ``curve``, ``device``, ``wall_seconds``,
``fail_reason``), paper presets as the first trials, a few failed trials, a few trials that violate a
(demo) memory budget (user attribute ``constraint`` > 0) and, optionally, one trial still running.

Values are made up from a simple cost model (parameter count from the genes, accuracy rising with
log-params plus a per-attention offset and noise, throughput falling with multiply-adds); they are
plausible, not measured.
"""

from __future__ import annotations

import datetime as _dt
import math
import random
import warnings
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from nas.study import DIRECTIONS, OBJECTIVES, open_storage
from search_spaces.genes import (
    ATTENTIONS, MASK_RATIO_CHOICES, QKV_ATTENTIONS, QNA_WINDOWS, REFINER_EXPANSIONS, ROPE_ATTENTIONS,
    ROPE_ENCODINGS, Architecture, GeneError,
)
from search_spaces.space import SearchSpace

__all__ = ["DEMO_PRESETS", "make_demo_study"]

#: The papers' designs scaled to the proxy task, as a search enqueues them first (demo copies).
DEMO_PRESETS: dict[str, dict[str, Any]] = {
    "deit": dict(attention="mhsa", embed_dim=64, depth=4, num_heads=4, mlp_ratio=4.0, patch_size=2),
    "mait": dict(attention="mait", embed_dim=64, depth=4, num_heads=4, mlp_ratio=4.0, patch_size=2,
                 mask_ratios=(0.9, 0.75, 0.5, 0.0), mask_layers="paper"),
    "refiner": dict(attention="refiner", embed_dim=64, depth=4, num_heads=4, mlp_ratio=4.0, patch_size=2,
                    refiner_expansion=3, stem="conv"),
    "qna": dict(attention="qna", embed_dim=64, depth=4, num_heads=4, mlp_ratio=4.0, patch_size=2, qna_window=3,
                pos_encoding="none"),
    "armour": dict(attention="mhsa", embed_dim=64, depth=4, num_heads=4, mlp_ratio=4.0, patch_size=2, compact=True),
    "vix_performer": dict(attention="performer", embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0, patch_size=2,
                          pos_encoding="rope1d", stem="conv"),
    "vix_linformer": dict(attention="linformer", embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0, patch_size=2,
                          pos_encoding="rope1d", stem="conv"),
    "vix_nystrom": dict(attention="nystrom", embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0, patch_size=2,
                        pos_encoding="rope1d", stem="conv"),
    "vix_fnet": dict(attention="fnet", embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0, patch_size=2, stem="conv"),
}

_ACC_OFFSET = {"mhsa": 0.0, "mait": 0.008, "refiner": 0.010, "qna": 0.006, "performer": -0.012,
               "linformer": -0.008, "nystrom": -0.006, "fnet": -0.030, "mixer": -0.015}
_SPEED = {"mhsa": 1.0, "mait": 0.8, "refiner": 0.55, "qna": 1.1, "performer": 0.9, "linformer": 1.2,
          "nystrom": 0.85, "fnet": 1.6, "mixer": 1.4}
_FAIL_REASONS = ("RuntimeError: loss is NaN at epoch 3", "OutOfMemoryError: CUDA out of memory (tried 1.2 GiB)",
                 "ValueError: linformer is tied to 16 tokens, got 4")


def _distributions(space: SearchSpace) -> dict[str, CategoricalDistribution]:
    d = {name: CategoricalDistribution(list(getattr(space, name)))
         for name in ("attention", "embed_dim", "depth", "num_heads", "mlp_ratio", "patch_size", "stem",
                      "pos_encoding", "compact", "mask_layers", "qna_window", "refiner_expansion")}
    d["pos_encoding_no_rope"] = CategoricalDistribution([p for p in space.pos_encoding if p not in ROPE_ENCODINGS])
    for i in range(max(space.num_heads)):
        d[f"mask_ratio_{i}"] = CategoricalDistribution(list(space.mask_ratios))
    return d


def _random_arch(rng: random.Random, space: SearchSpace) -> Architecture:
    while True:
        a = rng.choice(ATTENTIONS)
        heads = rng.choice(space.num_heads)
        genes: dict[str, Any] = dict(
            attention=a, embed_dim=rng.choice(space.embed_dim), depth=rng.choice(space.depth), num_heads=heads,
            mlp_ratio=rng.choice(space.mlp_ratio), patch_size=rng.choice(space.patch_size),
            stem=rng.choice(space.stem),
            pos_encoding=rng.choice([p for p in space.pos_encoding if a in ROPE_ATTENTIONS or p not in ROPE_ENCODINGS]),
        )
        if a in QKV_ATTENTIONS:
            genes["compact"] = rng.random() < 0.4
        if a == "mait":
            genes["mask_ratios"] = tuple(rng.choice(MASK_RATIO_CHOICES) for _ in range(heads))
            genes["mask_layers"] = rng.choice(("all", "paper"))
        if a == "qna":
            genes["qna_window"] = rng.choice(QNA_WINDOWS)
        if a == "refiner":
            genes["refiner_expansion"] = rng.choice(REFINER_EXPANSIONS)
        try:
            return Architecture(**genes)
        except GeneError:
            continue


def _cost(arch: Architecture, img: int = 8, channels: int = 1, classes: int = 10) -> tuple[int, int]:
    """(params, multiply-adds per image) of a rough ViT cost model."""
    c, n = arch.embed_dim, (img // arch.patch_size) ** 2 + (1 if arch.class_token else 0)
    attn = {"fnet": 0, "mixer": 2 * n * n * 2}.get(arch.attention, 4 * c * c)
    if arch.compact:
        attn //= 2
    if arch.attention == "refiner":
        attn += 2 * arch.num_heads * arch.num_heads * (arch.refiner_expansion or 1) + 9 * arch.num_heads
    if arch.attention == "qna":
        attn = 3 * c * c + (arch.qna_window or 3) ** 2 * arch.num_heads * 2
    block = attn + int(2 * arch.mlp_ratio * c * c) + 4 * c
    stem = channels * arch.patch_size ** 2 * c + (3 * 9 * 16 * 16 if arch.stem != "patch" else 0)
    params = arch.depth * block + stem + (n * c if arch.pos_encoding == "learned" else 0) + c * classes + c
    mixing = {"performer": 2 * n * c * 8, "linformer": 2 * n * 4 * c, "nystrom": 2 * n * 4 * c,
              "fnet": int(n * c * math.log2(max(n * c, 2))), "mixer": 2 * n * n * 2 * c}.get(arch.attention, 2 * n * n * c)
    flops = arch.depth * (n * block + mixing) + n * stem
    return int(params), int(flops)


def _evaluate(arch: Architecture, rng: random.Random, epochs: int) -> dict[str, Any]:
    params, flops = _cost(arch)
    acc = 0.925 + 0.018 * math.log(params / 60_000) + _ACC_OFFSET[arch.attention]
    acc += 0.006 * (arch.stem != "patch") - 0.004 * (arch.pos_encoding == "none") - 0.01 * (arch.patch_size == 4)
    acc = min(0.992, max(0.55, acc + rng.gauss(0.0, 0.012)))
    throughput = 3.0e9 / (flops + 2e5) * _SPEED[arch.attention] * rng.uniform(0.85, 1.15)
    k = rng.uniform(0.5, 1.1)
    curve = []
    for e in range(1, epochs + 1):
        val = acc * (1 - math.exp(-k * e)) / (1 - math.exp(-k * epochs)) + rng.gauss(0, 0.006) * (e < epochs)
        curve.append({"epoch": e, "train_loss": round(2.3 * math.exp(-0.45 * e * k) + 0.35 + rng.gauss(0, 0.02), 4),
                      "val_accuracy": round(min(max(val, 0.05), 0.999), 4)})
    curve[-1]["val_accuracy"] = round(acc, 4)
    peak = int(4 * params * 3 + 128 * flops / 50)
    return {"accuracy": round(acc, 4), "params": params, "throughput": round(throughput, 1), "flops": flops,
            "peak_memory": peak, "curve": curve}


def _every(k: int, fraction: float, offset: int) -> bool:
    if fraction <= 0:
        return False
    period = max(1, round(1 / fraction))
    return k % period == offset % period


def make_demo_study(storage: str | optuna.storages.BaseStorage, name: str = "demo", n_trials: int = 60, *,
                    seed: int = 0, epochs: int = 6, failed_fraction: float = 0.04,
                    constraint_fraction: float = 0.03, running: int = 1, presets: bool = True) -> optuna.Study:
    """Create the study ``name`` in ``storage`` (URL or storage) with ``n_trials`` synthetic trials.

    The first trials are the paper presets (:data:`DEMO_PRESETS`, user attribute ``preset``); every
    ``1 / failed_fraction``-th of the rest fails with a ``fail_reason``; every ``1 / constraint_fraction``-th
    exceeds a demo peak-memory budget (user attribute ``constraint`` > 0); the last
    ``running`` trials are left RUNNING (a search in progress). Start and completion times simulate
    four trials at a time.

    Raises:
        ValueError: ``n_trials`` < 1 or the study already exists.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials: must be at least 1, got {n_trials}")
    if isinstance(storage, str):
        storage = open_storage(storage)
    rng = random.Random(seed)
    space = SearchSpace()
    dists = _distributions(space)
    try:
        study = optuna.create_study(study_name=name, storage=storage, directions=list(DIRECTIONS))
    except optuna.exceptions.DuplicatedStudyError:
        raise ValueError(f"study: {name!r} already exists in the storage") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(OBJECTIVES))
    study.set_user_attr("dataset", "digits")
    study.set_user_attr("demo", True)

    t0 = _dt.datetime(2025, 6, 1, 9, 0, 0)
    workers = [t0] * 4
    preset_items = list(DEMO_PRESETS.items()) if presets else []
    trials = []
    for i in range(n_trials):
        preset = None
        if i < len(preset_items):
            preset, genes = preset_items[i]
            arch = Architecture.from_dict(genes)
        else:
            arch = _random_arch(rng, space)
        params = space.to_params(arch)
        result = _evaluate(arch, rng, epochs)
        wall = 8.0 + result["flops"] / 4e5 * rng.uniform(0.7, 1.3)
        w = min(range(4), key=lambda j: workers[j])
        start = workers[w]
        end = start + _dt.timedelta(seconds=wall)
        workers[w] = end + _dt.timedelta(seconds=rng.uniform(0.5, 2.0))
        attrs: dict[str, Any] = {"arch": arch.to_dict(), "arch_key": arch.key(), "device": "cpu"}
        if preset:
            attrs["preset"] = preset
        is_running = i >= n_trials - running
        k = i - len(preset_items)  # failures and violations evenly spread over the searched trials
        failed = not preset and not is_running and _every(k, failed_fraction, 2)
        if is_running:
            state, values, end = TrialState.RUNNING, None, None
            attrs["curve"] = result["curve"][: epochs // 2]
        elif failed:
            state, values = TrialState.FAIL, None
            reason = rng.choice(_FAIL_REASONS)
            attrs["fail_reason"] = reason
            attrs["curve"] = result["curve"][: rng.randint(0, epochs - 1)]
            attrs["wall_seconds"] = round(wall / 2, 3)
        else:
            state = TrialState.COMPLETE
            values = [result["accuracy"], float(result["params"]), result["throughput"]]
            attrs.update(flops=result["flops"], peak_memory=result["peak_memory"], curve=result["curve"],
                         wall_seconds=round(wall, 3), train_seconds=round(wall * 0.9, 3))
            if not preset and _every(k, constraint_fraction, 5):
                attrs["constraint"] = round(rng.uniform(0.05, 0.8), 3)  # GiB over a demo memory budget
        trials.append(optuna.trial.FrozenTrial(
            number=i, state=state, value=None, values=values, datetime_start=start, datetime_complete=end,
            params=params, distributions={k: dists[k] for k in params}, user_attrs=attrs, system_attrs={},
            intermediate_values={c["epoch"]: c["val_accuracy"] for c in attrs.get("curve", [])},
            trial_id=i))
    study.add_trials(trials)
    return study
