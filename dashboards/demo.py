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
import functools
import math
import random
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from nas.study import DIRECTIONS, OBJECTIVES, StudyMeta, open_storage, write_meta
from nas.study.optuna_adapter import set_metric_names
from search_spaces.genes import Architecture
from search_spaces.presets import PRESETS
from search_spaces.space import SearchSpace

__all__ = ["DEMO_PRESETS", "make_demo_study"]

#: The presets a demo study starts with: the papers' own designs (:data:`search_spaces.presets.PRESETS`),
#: as a search enqueues them first.
DEMO_PRESETS: dict[str, Architecture] = PRESETS

#: Made-up accuracy offsets and relative speeds per attention mechanism (0 and 1 for any other).
_ACC_OFFSET = {"mhsa": 0.0, "mait": 0.008, "refiner": 0.010, "qna": 0.006, "performer": -0.012,
               "linformer": -0.008, "nystrom": -0.006, "fnet": -0.030, "mixer": -0.015}
_SPEED = {"mhsa": 1.0, "mait": 0.8, "refiner": 0.55, "qna": 1.1, "performer": 0.9, "linformer": 1.2,
          "nystrom": 0.85, "fnet": 1.6, "mixer": 1.4}
_FAIL_REASONS = ("RuntimeError: loss is NaN at epoch 3", "OutOfMemoryError: CUDA out of memory (tried 1.2 GiB)",
                 "ValueError: linformer is tied to 16 tokens, got 4")


class _DrawTrial:
    """Stands in for an Optuna trial in :meth:`SearchSpace.suggest`: every parameter drawn uniformly."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return self.rng.choice(choices)


@functools.lru_cache(maxsize=4096)
def _attention_cost(arch: Architecture, grid: int) -> tuple[int, int]:
    """(params, multiply-adds per image) of one attention layer of ``arch``, from the zoo itself."""
    from search_spaces.attention import build_attention
    from search_spaces.attention.common import TokenLayout

    layout = TokenLayout(grid=(grid, grid), num_prefix_tokens=int(arch.class_token))
    module = build_attention(arch, 0, layout)
    return sum(p.numel() for p in module.parameters()), module.macs(layout)


def _cost(arch: Architecture, img: int = 16, channels: int = 1, classes: int = 10) -> tuple[int, int]:
    """(params, multiply-adds per image) of a rough ViT cost model: the attention layer's own counts
    (:func:`_attention_cost`), the MLP, the stem and the head."""
    c, grid = arch.embed_dim, img // arch.patch_size
    n = grid * grid + int(arch.class_token)
    attn_params, attn_macs = _attention_cost(arch, grid)
    mlp = int(2 * arch.mlp_ratio * c * c)
    block = attn_params + mlp + 4 * c
    stem = channels * arch.patch_size ** 2 * c + (3 * 9 * 16 * 16 if arch.stem != "patch" else 0)
    params = arch.depth * block + stem + (n * c if arch.pos_encoding == "learned" else 0) + c * classes + c
    flops = arch.depth * (attn_macs + n * mlp) + n * stem
    return int(params), int(flops)


def _evaluate(arch: Architecture, rng: random.Random, epochs: int) -> dict[str, Any]:
    params, flops = _cost(arch)
    acc = 0.925 + 0.018 * math.log(params / 60_000) + _ACC_OFFSET.get(arch.attention, 0.0)
    acc += 0.006 * (arch.stem != "patch") - 0.004 * (arch.pos_encoding == "none") - 0.01 * (arch.patch_size == 4)
    acc = min(0.992, max(0.55, acc + rng.gauss(0.0, 0.012)))
    throughput = 3.0e9 / (flops + 2e5) * _SPEED.get(arch.attention, 1.0) * rng.uniform(0.85, 1.15)
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
    space = SearchSpace().for_image(16)  # digits as vitnas loads it: 16 px
    dists = {name: CategoricalDistribution(choices) for name, choices in space.param_choices().items()}
    try:
        study = optuna.create_study(study_name=name, storage=storage, directions=list(DIRECTIONS))
    except optuna.exceptions.DuplicatedStudyError:
        raise ValueError(f"study: {name!r} already exists in the storage") from None
    set_metric_names(study, list(OBJECTIVES))
    write_meta(study, StudyMeta(dataset="digits"))

    t0 = _dt.datetime(2025, 6, 1, 9, 0, 0)
    workers = [t0] * 4
    preset_items = list(DEMO_PRESETS.items()) if presets else []
    trials = []
    for i in range(n_trials):
        preset = None
        if i < len(preset_items):
            preset, arch = preset_items[i]
        else:
            arch = space.suggest(_DrawTrial(rng))
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
