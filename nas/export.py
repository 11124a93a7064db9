"""Export a trained trial as a timm model folder.

The folder holds ``config.json`` (architecture ``nas_vit``, the genes and image settings as
``model_args``, the data config), ``model.safetensors`` (written by ``timm.models.save_for_hf``) and a
``README.md`` model card. After ``import search_spaces``, ``timm.create_model("local-dir:DIR")``
rebuilds the model with its trained weights; the export checks that the reloaded model gives identical
logits before it puts the folder in place.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from search_spaces import Architecture, build_model

from . import objectives
from .study import StudyError, StudyMetaError, confirmation, confirmations, get_trial, load_study, pareto_front, read_meta
from .study.artifacts import ArtifactError, fetch_file

__all__ = ["ExportError", "export_trial", "load_trial_model"]


class ExportError(ValueError):
    """The export target exists, the trial has no stored weights, or the reloaded model differs."""


def load_trial_model(storage_url: str, study_name: str, number: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained model of a complete trial (weights read as safetensors) and its study attributes.

    Raises:
        StudyError: unknown study or trial, or a trial that did not complete.
        ExportError: the trial's weights file is missing.
    """

    study = load_study(storage_url, study_name)
    trial = get_trial(study, number, finished=True)
    try:
        info = {k: v for k, v in vars(read_meta(study)).items() if v is not None}  # the study's record, as a dict
    except StudyMetaError as exc:
        raise StudyError(str(exc)) from None
    missing = [k for k in ("img_size", "in_chans", "num_classes") if k not in info]
    if missing or "arch" not in trial.user_attrs:
        raise ExportError(f"study: {study_name!r} was not made by vitnas search (no genes or image settings stored); "
                          "only vitnas trials can be exported")
    arch = Architecture.from_dict(trial.user_attrs["arch"])
    model = build_model(arch, img_size=info["img_size"], in_chans=info["in_chans"], num_classes=info["num_classes"])
    weights, ref = trial.user_attrs.get("weights"), trial.user_attrs.get("weights_artifact")
    confirmed = confirmation(study, int(trial.user_attrs.get("reused_from", number)))
    if confirmed is not None and (confirmed.get("weights_artifact") or
                                  (confirmed.get("weights") and Path(confirmed["weights"]).is_file())):
        # a confirmed design leaves with its best seed's retrained weights
        weights, ref = confirmed.get("weights"), confirmed.get("weights_artifact")
        info["confirmed"] = confirmed
    with tempfile.TemporaryDirectory(prefix="vitnas-weights-") as tmp:
        if (not weights or not Path(weights).is_file()) and isinstance(ref, dict):
            try:  # the run folder that held them is gone (another node, cleaned up): the artifact store has them
                weights = str(fetch_file(ref, Path(tmp) / "weights.safetensors"))
            except ArtifactError as exc:
                raise ExportError(f"trial: the weights of trial {number} are missing: not at {weights!r} and {exc}") \
                    from None
        if not weights or not Path(weights).is_file():
            raise ExportError(f"trial: the weights of trial {number} are missing ({weights or 'not recorded'})")
        _load(model, weights, number)
    model.eval()
    info.update(trial=trial, study=study, arch=arch)
    return model, info


def _load(model: torch.nn.Module, weights: str, number: int) -> None:
    """Load safetensors ``weights`` into ``model`` strictly, or raise one line."""
    from safetensors.torch import load_model

    try:
        load_model(model, weights, strict=True)
    except Exception as exc:  # noqa: BLE001 - SafetensorError (corrupt, truncated), RuntimeError (another model's)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        if "size mismatch" in str(exc) or "Missing key" in str(exc) or "Unexpected key" in str(exc):
            detail = "they belong to another architecture"
        raise ExportError(f"trial: the weights of trial {number} cannot be loaded from {weights!r} "
                          f"({detail[:200]})") from None


def _card_label(o: objectives.Objective, attrs: dict[str, Any]) -> str:
    """``accuracy (validation top-1)``; a measured rate also names the device: ``throughput (img/s, cpu)``."""
    what = [o.note or o.unit] + ([str(attrs.get("device", "?"))] if o.per_device else [])
    what = [w for w in what if w]
    return f"{o.name} ({', '.join(what)})" if what else o.name


def _target_words(attrs: dict[str, Any], info: dict[str, Any]) -> str:
    """``112 px, batch 8, float32 on cpu``: the shape the efficiency figures of a trial belong to."""
    t = attrs.get("target") or {"img_size": info["img_size"], "batch": 64, "dtype": "float32 (bfloat16 on CUDA)",
                                "device": attrs.get("device", "?")}
    return f"{t.get('img_size')} px, batch {t.get('batch')}, {t.get('dtype')} on {t.get('device', '?')}"


def _model_card(info: dict[str, Any]) -> str:
    trial = info["trial"]
    arch: Architecture = info["arch"]
    front = [t.number for t in pareto_front(info["study"])]
    on_front = "on the Pareto front" if trial.number in front else "not on the Pareto front"
    genes = "\n".join(f"| `{k}` | `{json.dumps(v)}` |" for k, v in arch.to_dict().items())
    attrs = trial.user_attrs
    curve = ", ".join(f"{c['val_accuracy']:.3f}" for c in attrs.get("curve", []))
    preset = f" (paper preset `{attrs['preset']}`)" if attrs.get("preset") else ""
    measured = "\n".join(f"| {_card_label(o, attrs)} | {o.format(v, 'card')} |"
                         for o, v in zip(objectives.spec(), trial.values, strict=True))
    confirmed = info.get("confirmed")
    others = len(confirmations(info["study"]))
    trained = "Proxy-trained only: train it fully with your\nusual timm recipe before relying on it."
    if others and not confirmed:
        trained += (f" The front used confirmed accuracies (`vitnas retrain`) for {others} design(s) and the "
                    "proxy's for the rest, this one included.")
    confirmed_section = ""
    if confirmed:
        trained = (f"Confirmed by `vitnas retrain`: the weights are seed {confirmed['best_seed']}'s of "
                   f"{confirmed['seeds']} retrained from scratch.")
        runs = ", ".join(f"{a:.4f}" for a in confirmed["accuracies"])
        confirmed_section = f"""
## Confirmed

Retrained from scratch for {confirmed['epochs']} epochs on {confirmed['train_images']:,} training images at
{confirmed['img_size']} px, {confirmed['seeds']} seed(s): validation accuracy {confirmed['mean']:.4f} ± {confirmed['std']:.4f}
(mean ± sample std; runs {runs}). The weights in this folder are the best seed's ({confirmed['best_seed']}). The
front and `--pick` used this confirmed mean, not the proxy's accuracy above.
"""
    return f"""---
library_name: timm
tags: [image-classification, timm, vitnas, nas_vit]
---
# vitnas `{info['study'].study_name}` trial {trial.number}{preset}

A vision transformer found by vitnas' multi-objective search, {on_front} of study
`{info['study'].study_name}` ({len(front)} front members). {trained}

```python
import search_spaces, timm  # importing search_spaces registers nas_vit with timm
model = timm.create_model("local-dir:PATH_TO_THIS_FOLDER")
```

## Genes

`{arch.describe()}`

| gene | value |
|---|---|
{genes}

## Measured

Accuracy: the proxy task at {info['img_size']} px. Params, FLOPs, throughput and peak memory: the deployment
shape {_target_words(attrs, info)}.

| objective | value |
|---|---|
{measured}
| FLOPs (multiply-adds per image) | {attrs.get('flops', 0):,} |
| peak memory (bytes, inference) | {attrs.get('peak_memory', 0):,} |

Data set: `{info['dataset']}`, {info['img_size']}x{info['img_size']} px, {info['in_chans']} channel(s),
{info['num_classes']} classes; {info.get('epochs', '?')} proxy epochs. Validation accuracy per epoch: {curve}.
{confirmed_section}
{_shapes_section(arch, info)}
"""


def _shapes_section(arch: Architecture, info: dict[str, Any]) -> str:
    """What this export allows when loaded at another shape (img_size, in_chans, num_classes, backbone)."""
    from search_spaces import registry

    spec = registry.get_mechanism(arch.attention)
    size = info["img_size"]
    if spec.fixed_tokens:
        img = (f"no: `{arch.attention}` has learned weights per token position, tied to the "
               f"{(size // arch.patch_size) ** 2} patches of {size} px; load it at {size} px")
    elif arch.pos_encoding == "learned":
        img = (f"yes, any multiple of the patch size {arch.patch_size}: the learned position embedding is "
               "resampled (bicubic) to the new token grid, as timm does for its ViT")
    else:
        img = f"yes, any multiple of the patch size {arch.patch_size} (`{arch.pos_encoding}` position encoding)"
    return f"""## Loading at another shape

```python
model = timm.create_model("local-dir:PATH_TO_THIS_FOLDER", img_size=2 * {size}, in_chans=3, num_classes=5)
```

- `img_size`: {img}.
- `in_chans`: yes: the first convolution (`{info.get('first_conv', '?')}`) is adapted from {info['in_chans']}
  channel(s) by timm (`adapt_input_conv`).
- `num_classes`: yes: a new, untrained head.
- As a backbone: `features_only=True` (the last 3 blocks as NCHW maps, stride {arch.patch_size}),
  `forward_intermediates`, `set_grad_checkpointing`; `no_weight_decay` and `group_matcher` make timm's
  optimiser factory apply weight decay and layer-wise learning-rate decay as for its ViT. TorchScript is not
  supported."""


def export_trial(storage_url: str, study_name: str, number: int, out: str | Path) -> Path:
    """Write trial ``number`` of ``study_name`` as a timm model folder at ``out``.

    Raises:
        ExportError: ``out`` exists and is not an empty folder, the weights are missing, or the reloaded
            model's logits differ from the trained model's.
        StudyError: unknown study or trial, or a trial that did not complete.
    """
    import timm
    from timm.models import save_for_hf

    out = Path(out).expanduser()
    if out.is_symlink():
        raise ExportError(f"out: {str(out)!r} is a symlink; choose a new --out")
    try:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ExportError(f"out: {str(out)!r} already exists and is not an empty folder; choose a new --out")
    except OSError as exc:
        raise ExportError(f"out: cannot use {str(out)!r} ({exc.strerror or exc})") from None
    model, info = load_trial_model(storage_url, study_name, number)
    info["first_conv"] = timm.models.get_model_traits(model).get("first_conv")
    arch: Architecture = info["arch"]
    model_args = {"arch": arch.to_dict(), "img_size": info["img_size"], "in_chans": info["in_chans"],
                  "num_classes": info["num_classes"]}
    data_config = info.get("data_config") or {}
    data_config = {k: tuple(v) if isinstance(v, list) else v for k, v in data_config.items()}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise ExportError(f"out: cannot write in {str(out.parent)!r} ({exc.strerror or exc})") from None
    try:
        save_for_hf(model, str(tmp), model_args=model_args, safe_serialization=True, data_config=data_config)
        (tmp / "README.md").write_text(_model_card(info), encoding="utf-8")
        reloaded = timm.create_model(f"local-dir:{tmp}")
        reloaded.eval()
        x = torch.randn(4, info["in_chans"], info["img_size"], info["img_size"], generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            if not torch.equal(model(x), reloaded(x)):
                raise ExportError(f"export: the reloaded model of trial {number} gives different logits")
        try:
            if out.is_symlink():
                raise ExportError(f"out: {str(out)!r} is a symlink; choose a new --out")
            if out.exists():
                out.rmdir()
            tmp.rename(out)
        except OSError as exc:
            raise ExportError(f"out: cannot put the export at {str(out)!r} ({exc.strerror or exc})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

