"""Image data sets for proxy training, held in memory as uint8 tensors.

- ``digits`` (default): scikit-learn's 1,797 handwritten 8x8 digits, shipped inside scikit-learn (no
  download), upsampled to 16x16 so patch grids are meaningful; a fixed stratified 80/20 split.
- ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``: torchvision's classes reading ``data_dir``
  (downloading only when ``download=True``); the validation split is a fixed 10% held out of the
  training set (the official test set is never used for the search).
- ``imagefolder:PATH``: any folder of class folders (torchvision ``ImageFolder``), resized to
  ``img_size`` (default 32) pixels, 10% held out.

``img_size`` resizes any data set (bilinear, antialiased when shrinking): a proxy at a lower resolution
than the data's own, e.g. Fashion-MNIST at 16 px on a CPU.

Every data set is reduced to ``train_subset`` / ``val_subset`` images when those are given (seeded and
stratified by class). Batches are normalised on the fly (:meth:`ImageData.normalize`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DATASETS", "DataError", "ImageData", "load_dataset", "dataset_info"]

#: Names accepted by :func:`load_dataset` (plus ``imagefolder:PATH``).
DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100")

# (torchvision class name, folder under data_dir torchvision expects, channel mean, channel std)
_TORCHVISION = {
    "mnist": ("MNIST", "MNIST/raw", (0.1307,), (0.3081,)),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", (0.2860,), (0.3530,)),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ("CIFAR100", "cifar-100-python", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


class DataError(ValueError):
    """An unknown data set, a missing data directory or files, or an unusable subset size."""


@dataclass
class ImageData:
    """A classification data set in memory.

    Attributes:
        name: data set name as given.
        x_train, x_val: uint8 images (N, C, H, W). y_train, y_val: int64 labels (N,).
        num_classes, in_chans, img_size: what the model must be built for (square images, pixels).
        mean, std: per-channel normalisation applied to images scaled to [0, 1].
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def in_chans(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def img_size(self) -> int:
        return int(self.x_train.shape[-1])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float32 normalised (B, C, H, W), on ``x``'s device."""
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x.float() / 255.0 - mean) / std

    def data_config(self) -> dict:
        """timm-style data config (input_size, mean, std, ...) for exports."""
        return {
            "input_size": (self.in_chans, self.img_size, self.img_size), "mean": tuple(self.mean),
            "std": tuple(self.std), "interpolation": "bilinear", "crop_pct": 1.0,
        }


def dataset_info(name: str) -> str:
    """One-line description of the data set ``name`` (for model cards)."""
    return {
        "digits": "scikit-learn handwritten digits (8x8 upsampled to 16x16, 10 classes)",
        "mnist": "MNIST handwritten digits (28x28, 10 classes)",
        "fashion_mnist": "Fashion-MNIST (28x28, 10 classes)",
        "cifar10": "CIFAR-10 (32x32 RGB, 10 classes)",
        "cifar100": "CIFAR-100 (32x32 RGB, 100 classes)",
    }.get(name, name)


def _split(n: int, labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    train_idx, val_idx = train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=labels)
    return np.sort(train_idx), np.sort(val_idx)


def _subset(x: torch.Tensor, y: torch.Tensor, size: int | None, seed: int, field: str) -> tuple[torch.Tensor, torch.Tensor]:
    if size is None or size >= len(y):
        return x, y
    if size < 1:
        raise DataError(f"{field}: must be a positive number of images, got {size}")
    from sklearn.model_selection import train_test_split

    try:  # stratified: every class keeps its share
        idx, _ = train_test_split(np.arange(len(y)), train_size=size, random_state=seed, stratify=y.numpy())
    except ValueError:  # too few images of some class to stratify
        idx = np.random.default_rng(seed).permutation(len(y))[:size]
    idx = torch.from_numpy(np.sort(idx))
    return x[idx], y[idx]


def _load_digits() -> tuple[torch.Tensor, torch.Tensor, int, tuple, tuple]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False).clamp(0, 1)
    x = (x * 255).round().to(torch.uint8)
    return x, torch.from_numpy(bunch.target).long(), 10, (0.19,), (0.33,)


def _resize(x: torch.Tensor, img_size: int, chunk: int = 4096) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, C, img_size, img_size) uint8: bilinear, antialiased when shrinking (as
    PIL resizes), in chunks so 60,000 images never make one large float copy."""
    out = torch.empty((x.shape[0], x.shape[1], img_size, img_size), dtype=torch.uint8)
    for i in range(0, x.shape[0], chunk):
        part = F.interpolate(x[i:i + chunk].float(), size=(img_size, img_size), mode="bilinear",
                             align_corners=False, antialias=True)
        out[i:i + chunk] = part.round().clamp(0, 255).to(torch.uint8)
    return out


def _load_torchvision(name: str, data_dir: str | None, download: bool):
    import torchvision

    cls_name, folder, mean, std = _TORCHVISION[name]
    if data_dir is None:
        raise DataError(f"data-dir: {name} needs --data-dir (a folder holding {folder}/ as torchvision lays it out)")
    root = Path(data_dir).expanduser()
    if not root.is_dir() and not download:
        raise DataError(f"data-dir: {str(root)!r} is not a directory; pass an existing folder or --download")
    cls = getattr(torchvision.datasets, cls_name)
    try:
        ds = cls(str(root), train=True, download=download)
    except Exception as exc:  # torchvision raises RuntimeError("Dataset not found...") or URLError
        why = "download failed" if download else f"expected {folder}/ under it; pass --download to fetch it"
        raise DataError(f"data-dir: {name} not found in {str(root)!r} ({why}: {str(exc).splitlines()[0]})") from None
    data = ds.data
    x = torch.as_tensor(np.asarray(data))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    y = torch.as_tensor(np.asarray(ds.targets)).long()
    return x.contiguous(), y, len(ds.classes), mean, std


def _load_imagefolder(path: str, img_size: int) -> tuple[torch.Tensor, torch.Tensor, int, tuple, tuple]:
    import torchvision
    from torchvision.transforms import functional as TF

    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset: imagefolder path {str(root)!r} is not a directory")
    try:
        ds = torchvision.datasets.ImageFolder(str(root))
    except Exception as exc:
        raise DataError(f"dataset: {str(root)!r} is not a folder of class folders with images ({exc})") from None
    images = []
    for file, _ in ds.samples:
        img = ds.loader(file).convert("RGB").resize((img_size, img_size))
        images.append(TF.pil_to_tensor(img))
    x = torch.stack(images)
    y = torch.tensor(ds.targets).long()
    return x, y, len(ds.classes), (0.5,) * 3, (0.5,) * 3  # replaced by training-split statistics


def load_dataset(name: str = "digits", data_dir: str | None = None, *, train_subset: int | None = None,
                 val_subset: int | None = None, img_size: int | None = None, download: bool = False,
                 seed: int = 0) -> ImageData:
    """Load a data set into memory with its fixed train/validation split.

    Args:
        name: one of :data:`DATASETS` or ``imagefolder:PATH``.
        data_dir: folder for the torchvision data sets (torchvision's own layout).
        train_subset, val_subset: keep at most this many images of each split (seeded).
        img_size: side in pixels to resize every image to (None: the data set's own; ``imagefolder``: 32).
        download: let torchvision download a missing data set.
        seed: the split and subsets are functions of it (default 0: the same split for every trial).

    Raises:
        DataError: an unknown name, missing files or directory, a bad subset size or image size.
    """
    if img_size is not None and (isinstance(img_size, bool) or not isinstance(img_size, int)
                                 or not 1 <= img_size <= 4096):
        raise DataError(f"img_size: must be an integer in [1, 4096] pixels, got {img_size!r}")
    if name == "digits":
        x, y, num_classes, mean, std = _load_digits()
        val_fraction = 0.2
    elif name in _TORCHVISION:
        x, y, num_classes, mean, std = _load_torchvision(name, data_dir, download)
        val_fraction = 0.1
    elif name.startswith("imagefolder:"):
        x, y, num_classes, mean, std = _load_imagefolder(name.split(":", 1)[1], img_size or 32)
        val_fraction = 0.1
    else:
        raise DataError(f"dataset: unknown name {name!r}; allowed: {', '.join(DATASETS)}, imagefolder:PATH")
    if len(y) < 10:
        raise DataError(f"dataset: {name!r} has only {len(y)} images; need at least 10")
    try:
        train_idx, val_idx = _split(len(y), y.numpy(), val_fraction, seed)
    except ValueError:  # too few images per class to stratify
        perm = np.random.default_rng(seed).permutation(len(y))
        cut = max(1, int(len(y) * val_fraction))
        val_idx, train_idx = np.sort(perm[:cut]), np.sort(perm[cut:])
    x_train, y_train = _subset(x[train_idx], y[train_idx], train_subset, seed, "train_subset")
    x_val, y_val = _subset(x[val_idx], y[val_idx], val_subset, seed + 1, "val_subset")
    if img_size is not None and tuple(x.shape[-2:]) != (img_size, img_size):  # after the subsets: less to resize
        x_train, x_val = _resize(x_train, img_size), _resize(x_val, img_size)
    if name.startswith("imagefolder:"):  # normalisation statistics from the training split only
        xf = x_train.float() / 255
        mean = tuple(xf.mean(dim=(0, 2, 3)).tolist())
        std = tuple(xf.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
    return ImageData(name, x_train, y_train, x_val, y_val, num_classes, tuple(mean), tuple(std))
