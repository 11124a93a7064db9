"""Trained weights that exist wherever a trial ran: Optuna artifact stores (``optuna.artifacts``).

A trial's weights are written on the worker's disk (``RUN_DIR/<study>/weights/``), which the head of a
multi-node Ray cluster cannot read unless that folder is shared. So the worker also writes them to an artifact
store, by URL, and reports a reference ``{"store": URL, "id": artifact id}`` that the driver stores with the
trial (user attribute ``weights_artifact``; a retrain run keeps it in its record). ``vitnas export`` reads the
local file when it is there and the artifact otherwise, from any machine that reaches the store.

Store URLs:

- a folder path or ``file://PATH``: :class:`optuna.artifacts.FileSystemArtifactStore` (the default:
  ``RUN_DIR/artifacts``);
- ``s3://BUCKET``: :class:`optuna.artifacts.Boto3ArtifactStore` (needs ``boto3`` and its credentials);
- ``gs://BUCKET``: :class:`optuna.artifacts.GCSArtifactStore` (needs ``google-cloud-storage``).

Only the stores' public methods are used (``write``; :func:`optuna.artifacts.download_artifact`). The worker
writes without a trial object, because workers never open the study's storage; an artifact is therefore not
listed by ``optuna.artifacts.get_all_artifact_meta``. The reference on the trial is the record.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

__all__ = ["open_store", "upload_file", "fetch_file", "ArtifactError"]


class ArtifactError(ValueError):
    """An artifact store URL vitnas cannot open, or an artifact it cannot read (the message names the field)."""


def open_store(url: str) -> Any:
    """The Optuna artifact store at ``url`` (see the module docstring).

    Raises:
        ArtifactError: an unknown scheme, or a store whose library is not installed.
    """
    from optuna import artifacts

    if not isinstance(url, str) or not url:
        raise ArtifactError(f"artifact_store: {url!r} is not a store URL; use a folder, file://PATH, s3://BUCKET or "
                            "gs://BUCKET")
    scheme, _, rest = url.partition("://")
    if not _ or scheme == "file":
        path = Path(rest if _ else url).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return artifacts.FileSystemArtifactStore(str(path))
    bucket = rest.split("/", 1)[0]
    try:
        if scheme == "s3":
            return artifacts.Boto3ArtifactStore(bucket)
        if scheme in ("gs", "gcs"):
            return artifacts.GCSArtifactStore(bucket)
    except ImportError as exc:
        raise ArtifactError(f"artifact_store: {url!r} needs {exc.name or 'its client library'}; install it") from None
    raise ArtifactError(f"artifact_store: unknown scheme {scheme!r} in {url!r}; allowed: a folder, file://, s3://, gs://")


def upload_file(url: str, path: str | Path) -> dict[str, str]:
    """Write the file at ``path`` to the store at ``url``; the reference ``{"store": url, "id": ...}``."""
    artifact_id = str(uuid.uuid4())
    with open(path, "rb") as f:
        open_store(url).write(artifact_id, f)
    return {"store": url, "id": artifact_id}


def fetch_file(ref: dict[str, str], dest: str | Path, what: str = "weights") -> Path:
    """Download the artifact ``ref`` (from :func:`upload_file`) to ``dest``; ``what`` names it in errors.

    Raises:
        ArtifactError: the store cannot be opened or holds no such artifact.
    """
    from optuna.artifacts import download_artifact
    from optuna.artifacts.exceptions import ArtifactNotFound

    dest = Path(dest)
    try:
        download_artifact(artifact_store=open_store(ref["store"]), artifact_id=ref["id"], file_path=str(dest))
    except (ArtifactNotFound, FileNotFoundError, KeyError):
        raise ArtifactError(f"{what}: artifact {ref.get('id')!r} is not in the store {ref.get('store')!r}") from None
    return dest
