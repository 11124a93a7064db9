"""The typed record of a study, and the one writer of vitnas' user attributes.

Everything vitnas stores on an Optuna study besides its trials is one :class:`StudyMeta`: written once, when
the search creates the study (:func:`write_meta`), read in one place (:func:`read_meta`), versioned
(:data:`META_VERSION`, the study user attribute ``vitnas_meta_version``). Each field is one study user
attribute under its own name, so ``optuna-dashboard`` and ``optuna.visualization`` show them as they are.
The state a study carries while it is searched (the early-stopping scheduler's rungs, the lease's mirror of
the driver) and the confirmations ``vitnas retrain`` adds are not part of the record; they have their own
writers here (:func:`save_scheduler_state`, :func:`mirror_driver`, :func:`save_confirmation`). Trials get
their attributes through :func:`set_trial_attrs`.

So ``grep set_user_attr`` finds vitnas' writes to a study in this module only (docs/design.md, "The study").

Versions:

- 1 (this one): the fields of :class:`StudyMeta`, plus ``vitnas_meta_version``.
- unversioned: studies made before the record existed hold the same fields without the version (some may
  lack ``target``, ``budgets``, ``space`` or ``data_config``, which older releases did not store):
  :func:`read_meta` migrates them (:func:`migrate`), and the driver writes the version when it continues one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

__all__ = ["META_VERSION", "META_KEY", "StudyMeta", "StudyMetaError", "read_meta", "write_meta", "migrate",
           "set_trial_attrs", "save_scheduler_state", "read_scheduler_state", "mirror_driver", "save_confirmation",
           "confirmation_key", "CONFIRM_PREFIX"]

#: The version of :class:`StudyMeta` this vitnas writes.
META_VERSION = 1
#: The study user attribute that holds the version.
META_KEY = "vitnas_meta_version"


class StudyMetaError(ValueError):
    """A study's stored record cannot be used: made by a newer vitnas, or not a mapping where one is due."""


@dataclass(frozen=True)
class StudyMeta:
    """What a search fixes for a study's life (each field one study user attribute).

    Attributes:
        dataset: data set name (``digits``, ``fashion_mnist``, ``imagefolder:PATH``, ...).
        img_size: the proxy's image side in pixels; in_chans, num_classes: of the data set.
        epochs, train_subset, val_subset, batch_size, lr: the proxy protocol (None subset: all images).
        target: the deployment shape ``{"img_size", "batch", "dtype"}`` that params, FLOPs, throughput and
            peak memory belong to (dtype ``auto``: bfloat16 on CUDA, float32 on the CPU).
        budgets: ``{setting: limit}`` (``max_params``, ``min_throughput``, ``max_memory``).
        space: the gene domains searched (``SearchSpace.to_dict()``).
        population_size: NSGA-II's population (its generations rely on it staying fixed).
        hv_bounds: the hypervolume's normalisation bounds (``nas.objectives.HVBounds.to_dict()``).
        data_config: timm's data config of the data set (mean, std, input size, ...), for exports.
    """

    dataset: str | None = None
    img_size: int | None = None
    in_chans: int | None = None
    num_classes: int | None = None
    epochs: int | None = None
    train_subset: int | None = None
    val_subset: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    target: dict[str, Any] | None = None
    budgets: dict[str, float] = field(default_factory=dict)
    space: dict[str, list[Any]] | None = None
    population_size: int | None = None
    hv_bounds: dict[str, Any] | None = None
    data_config: dict[str, Any] | None = None

    #: Fields a continued search must give the same values for (the rest are derived or fixed once).
    COMPARED = ("space", "dataset", "img_size", "in_chans", "num_classes", "epochs", "train_subset", "val_subset",
                "batch_size", "lr", "target", "budgets")

    def to_attrs(self) -> dict[str, Any]:
        """The study user attributes of this record (None fields are left out), with the version."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        return {**out, META_KEY: META_VERSION}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> StudyMeta:
        """The record held by a study's user attributes (unknown keys ignored; see :func:`read_meta`)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in attrs.items() if k in names}
        if values.get("budgets") is None:
            values.pop("budgets", None)
        return cls(**values)

    def mismatch(self, wanted: StudyMeta, lenient: bool = False) -> tuple[str, Any, Any] | None:
        """The first compared field (:attr:`COMPARED`) where a stored record (``self``) and the record a new
        search ``wanted`` differ, as ``(field, stored, wanted)``; None when they agree. With ``lenient`` (a
        study made before the record was versioned, which may lack fields) a field this record lacks agrees
        with anything; otherwise None is a value like any other (``train_subset`` None: all images). For
        ``space`` the field is ``space.<gene>``."""
        for name in self.COMPARED:
            stored, value = getattr(self, name), getattr(wanted, name)
            if name == "budgets":
                stored = stored or None
                value = value or None
                if stored is None and value is None:
                    continue
                if stored is None:  # an unversioned study stored no budgets: it had none
                    stored = {}
            if (stored is None and lenient) or stored == value:
                continue
            if name == "space" and isinstance(value, dict) and isinstance(stored, dict):
                for gene, values in value.items():
                    if stored.get(gene) != values:
                        return f"space.{gene}", stored.get(gene), values
                continue
            return name, stored, value
        return None

    def replace(self, **changes: Any) -> StudyMeta:
        return dataclasses.replace(self, **changes)


def migrate(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A study's user attributes as the current version reads them.

    Raises:
        StudyMetaError: the study was written by a newer vitnas (its record version is above
            :data:`META_VERSION`).
    """
    version = attrs.get(META_KEY)
    if version is None:  # unversioned (before the record): the same fields, nothing renamed
        return dict(attrs)
    if not isinstance(version, int) or version > META_VERSION:
        raise StudyMetaError(f"study: written by a newer vitnas (record version {version!r}; this vitnas reads up "
                             f"to {META_VERSION}); upgrade vitnas (pip install -U vitnas) to open it")
    return dict(attrs)


def read_meta(study: optuna.Study) -> StudyMeta:
    """The record of ``study`` (migrated from an older version where needed).

    Raises:
        StudyMetaError: the study was written by a newer vitnas.
    """
    return StudyMeta.from_attrs(migrate(study.user_attrs))


def write_meta(study: optuna.Study, meta: StudyMeta) -> None:
    """Store ``meta`` on ``study`` (each field one user attribute, and the version)."""
    _set(study, meta.to_attrs())


def save_scheduler_state(study: optuna.Study, state: dict[str, Any]) -> None:
    """Store the early-stopping scheduler's state (JSON-able; ``ParetoASHA.get_state()``), read back on resume."""
    _set(study, {"scheduler_state": state})


def read_scheduler_state(study: optuna.Study) -> dict[str, Any] | None:
    """The early-stopping scheduler's stored state (:func:`save_scheduler_state`), or None."""
    state = study.user_attrs.get("scheduler_state")
    return state if isinstance(state, dict) else None


def save_promotion(study: optuna.Study, record: dict[str, Any]) -> None:
    """Store the promotion at the rung (``{"rung": epochs, "epochs": spent before it, "paused": [trial numbers],
    "promoted": [trial numbers, most accurate first]}``), written before the promoted trials are enqueued so a
    search killed in between finishes the same promotion when continued."""
    _set(study, {"promotion": dict(record)})


def save_pausing(study: optuna.Study, rung: int) -> None:
    """Mark that the search pauses new trials at ``rung`` epochs until its promotion, so readers that skip
    user attributes (``vitnas status``) know to tell paused trials from complete ones before the record."""
    _set(study, {"pausing": int(rung)})


def read_pausing(study: optuna.Study) -> int | None:
    """The rung of :func:`save_pausing`, or None when the search never paused trials."""
    rung = (getattr(study, "user_attrs", None) or {}).get("pausing")
    return rung if isinstance(rung, int) else None


def read_promotion(study: optuna.Study) -> dict[str, Any] | None:
    """The stored promotion (:func:`save_promotion`), or None before it."""
    record = (getattr(study, "user_attrs", None) or {}).get("promotion")  # a study-like snapshot may hold none
    return record if isinstance(record, dict) else None


def mirror_driver(study: optuna.Study, holder: dict[str, Any] | None) -> None:
    """Mirror the lease's holder (``{host, pid, token, heartbeat}``, or None once released) in the study, for
    people and tools reading it (the lease row is what counts; ``nas.study.storage.StudyLease``)."""
    _set(study, {"driver": holder})


#: Prefix of the study user attribute holding the confirmation runs of one trained design: ``confirm:<trial>``.
CONFIRM_PREFIX = "confirm:"


def confirmation_key(number: int) -> str:
    """The study user attribute of trial ``number``'s confirmation runs."""
    return f"{CONFIRM_PREFIX}{int(number)}"


def save_confirmation(study: optuna.Study, number: int, run: dict[str, Any]) -> None:
    """Append one retrain ``run`` (``seed``, ``protocol``, ``accuracy``, ``curve``, ``weights``, ...) to the
    confirmations of trial ``number`` (``vitnas retrain``; a finished trial's own attributes cannot change,
    so they live on the study under :func:`confirmation_key`). A run of the same seed and protocol replaces
    the stored one."""
    key = confirmation_key(number)
    runs = [r for r in (study.user_attrs.get(key) or [])
            if (r.get("seed"), r.get("protocol")) != (run.get("seed"), run.get("protocol"))]
    _set(study, {key: [*runs, dict(run)]})


def set_trial_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Store ``attrs`` as user attributes of ``trial`` (None values are skipped)."""
    _set(trial, {k: v for k, v in attrs.items() if v is not None})


def _set(target: optuna.Study | optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """The one place vitnas writes user attributes (``set_user_attr`` of a study or a trial)."""
    for key, value in attrs.items():
        target.set_user_attr(key, value)
