"""The trial body: what a Ray worker does with one proposal. It computes and reports; it never opens the
study storage (the driver, :mod:`nas.engine.driver`, is the only writer).

A proposal arrives as a plain config: ``{"arch": genes, "number": trial number, "known": None | result}``
(``weights_name``, optional: the weights file's name, ``trial_NNNNN`` by default; ``settings["weights_dir"]``,
optional: its folder, ``RUN_DIR/<study>/weights`` by default).
A design whose costs, measured before training, break a budget (``--min-throughput``, ``--max-memory``, or
params) is not trained: the worker reports ``{"refused": {budget: violation}, params, throughput, ...}``.
``known`` is a result the driver already decided (the stored result of an identical architecture, or the
refusal of genes that failed before): the worker reports it as it is.
Otherwise the worker proxy-trains the architecture, saves its weights as safetensors and reports the
objectives with the attributes the driver stores on the trial (:data:`RESULT_ATTRS`).

Promotion (``SearchConfig.promote_at``): ``"pause_at": k`` trains the first ``k`` epochs of the
``settings["epochs"]``-epoch schedule, saves the paused run's state (weights, AdamW's moments, the schedule's
step, the RNG states, the history; :func:`trainers.train_proxy`) with ``torch.save`` next to the weights
(``<weights_name>.paused.pt``) and reports the epoch-``k`` accuracy with ``paused_at`` and ``paused_state``
(the file's path). ``"resume": path`` loads such a file and trains the remaining epochs; the reported curve
is the whole run's. The file lives on the machine (or shared folder) of the run folder, as the weights do, and
goes to the artifact store too (``paused_state_artifact``): a resume on a machine without the file
(``"resume_artifact": ref``) downloads it from there.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from search_spaces import Architecture

from ..study.artifacts import fetch_file, upload_file
from .settings import BUDGETS, budget_violations

__all__ = ["RESULT_ATTRS", "run_trial", "failure_result"]

#: Trial user attributes a trained trial reports (stored by the driver, copied when a result is reused).
RESULT_ATTRS: tuple[str, ...] = ("flops", "peak_memory", "curve", "device", "train_seconds", "wall_seconds", "weights",
                                  "weights_artifact",
                                  "target", "throughput_detail", "proxy_params", "train_peak_memory", "gpu_busy",
                                  "paused_at", "paused_state", "paused_state_artifact")


class BudgetRefused(Exception):
    """Raised before training when a design's measured costs break a budget; carries what was measured."""

    def __init__(self, broken: dict[str, float], measured: dict[str, Any]) -> None:
        super().__init__(", ".join(f"{k} by {100 * v:.0f}%" for k, v in broken.items()))
        self.broken, self.measured = broken, measured


def failure_result(exc: BaseException) -> dict[str, Any]:
    """The report of a failed trial: ``fail_reason`` (one line, ``Type: first line``) and ``traceback``."""
    text = str(exc).strip()
    reason = f"{exc.__class__.__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
    return {"fail_reason": reason[:500], "traceback": traceback.format_exc()[-4000:]}


def run_trial(config: dict[str, Any], settings: dict[str, Any], report: Callable[[dict[str, Any]], None],
              data: Any, device: str = "cpu") -> dict[str, Any]:
    """Evaluate one proposal on ``data`` (an :class:`trainers.ImageData`) and ``device``.

    ``report`` receives each epoch's ``{"epoch", "val_accuracy", "train_loss", "params", "throughput"}`` (the
    efficiency objectives are measured before training) and then the final result:
    the objectives (``accuracy``, ``params``, ``throughput``), ``epoch`` and the :data:`RESULT_ATTRS`, or,
    when the trial fails, :func:`failure_result` (the exception does not escape: a failed trial is a
    result like any other). Returns the final result.
    """
    import torch

    if config.get("known") is not None:
        report(config["known"])
        return config["known"]
    try:
        final = _train(config, settings, report, data, device)
    except BudgetRefused as exc:  # measured before training and over a budget: nothing was trained
        final = {"refused": exc.broken, **exc.measured}
    except Exception as exc:  # noqa: BLE001 - any failure of the trial is its result; the search goes on
        final = failure_result(exc)
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    report(final)
    return final


def _train(config: dict[str, Any], settings: dict[str, Any], report: Callable[[dict[str, Any]], None],
           data: Any, device: str) -> dict[str, Any]:
    import torch
    from safetensors.torch import save_model

    from trainers import ProxyConfig, evaluate_architecture

    number = config["number"]
    arch = Architecture.from_dict(config["arch"])
    torch.set_num_threads(max(1, int(settings["cpus_per_trial"])))
    proxy = ProxyConfig(epochs=settings["epochs"], seed=settings["seed"], batch_size=settings["batch_size"],
                        lr=settings["lr"], device=device, target_img_size=settings.get("target_img_size"),
                        throughput_batch=settings.get("target_batch", 64), target_dtype=settings.get("target_dtype"),
                        cache_path=settings.get("cache_path"))
    curve: list[dict[str, float]] = []
    resume = config.get("resume")  # a trial paused at the promotion rung, resumed to the full proxy
    pause_at = None if resume else config.get("pause_at")
    state = _paused_state(resume, config.get("resume_artifact"), _weights_dir(settings)) if resume else (
        {} if pause_at else None)
    if resume:
        curve.extend(dict(r) for r in state["history"])

    def on_epoch(epoch: int, record: dict[str, float]) -> None:
        curve.append(record)
        report({"epoch": epoch, "val_accuracy": record["val_accuracy"], "train_loss": record["train_loss"],
                "params": record.get("params"), "throughput": record.get("throughput")})

    budgets = {name: float(settings[name]) for name in BUDGETS if settings.get(name) is not None}

    def check(measured: dict[str, Any]) -> None:
        broken = {k: v for k, v in budget_violations(budgets, measured).items() if v > 0}
        if broken:
            raise BudgetRefused(broken, measured)

    result = evaluate_architecture(arch, data, proxy, report=on_epoch, check=check if budgets else None,
                                   pause_at=pause_at, state=state)
    weights_dir = _weights_dir(settings)
    weights_dir.mkdir(parents=True, exist_ok=True)
    name = config.get("weights_name") or f"trial_{number:05d}"
    weights = (weights_dir / f"{name}.safetensors").resolve()
    save_model(result.model.cpu(), str(weights))
    artifact = upload_file(settings["artifact_store"], weights) if settings.get("artifact_store") else None
    paused = {}
    if pause_at:
        paused = {"paused_at": int(pause_at), "paused_state": str((weights_dir / f"{name}.paused.pt").resolve())}
        torch.save(state, paused["paused_state"])
        if settings.get("artifact_store"):
            paused["paused_state_artifact"] = upload_file(settings["artifact_store"], paused["paused_state"])
    return {**paused, "accuracy": result.accuracy, "params": result.params, "throughput": result.throughput,
            "epoch": len(result.history), "flops": result.flops, "peak_memory": result.peak_memory, "curve": curve,
            "device": result.device, "train_seconds": round(result.train_seconds, 3),
            "wall_seconds": round(result.wall_seconds, 3), "weights": str(weights), "weights_artifact": artifact,
            "target": result.target,
            "throughput_detail": result.throughput_detail, "proxy_params": result.proxy_params,
            "train_peak_memory": result.train_peak_memory, "gpu_busy": result.gpu_busy}


def _weights_dir(settings: dict[str, Any]) -> Path:
    """The folder of a trial's weights and paused state: ``settings["weights_dir"]``, else
    ``RUN_DIR/<study>/weights``."""
    return Path(settings.get("weights_dir") or Path(settings["run_dir"]) / settings["study"] / "weights")


def _paused_state(path: str, artifact: dict[str, str] | None, folder: Path) -> dict[str, Any]:
    """The paused run's state saved at ``path``; where this machine lacks the file, its copy in the artifact
    store (``artifact``, the reference the pausing worker reported), downloaded into ``folder``.

    Raises:
        FileNotFoundError: the file is not here and no artifact of it was stored (the message names the path).
        nas.study.artifacts.ArtifactError: the store cannot be read or lacks the artifact.
    """
    import torch

    if not Path(path).is_file():
        if not artifact:
            raise FileNotFoundError(f"resume: the paused state {path} is not on this machine and no artifact store "
                                    "holds it (share the run folder, or set --artifact-store)")
        folder.mkdir(parents=True, exist_ok=True)
        path = str(fetch_file(artifact, folder / f"{Path(path).stem}.fetched.pt", what="paused state"))
    return torch.load(path, map_location="cpu", weights_only=True)
