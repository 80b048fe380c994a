"""Dataset access: CIFAR-10 / SVHN (torchvision, local files), an image folder, and the embedded set.

Every dataset yields ``(float32 tensor (3, 32, 32) in [0, 1], int label)``. Nothing is
downloaded unless ``download=True`` is passed (``--download`` on the command line).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from .embedded import DEFAULT_ROOT as EMBEDDED_ROOT
from .embedded import EmbeddedDigits, InMemoryImages

DATASETS = ("embedded", "cifar10", "svhn", "folder")
NUM_CLASSES = {"embedded": 10, "cifar10": 10, "svhn": 10}
# per-channel mean / std of the training images (normalisation lives inside the models)
STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "embedded": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
    "folder": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
}
# whether a horizontal flip keeps the label (not for digits)
ALLOWS_HFLIP = {"cifar10": True, "svhn": False, "embedded": False, "folder": False}

_CIFAR_FILES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
_SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}


def default_root(name: str) -> Path:
    """``$GCLN_DATA/<name>`` if ``GCLN_DATA`` is set, else ``~/.cache/gcln_fast/<name>``
    (the embedded set: ``~/.cache/gcln_fast/embedded``)."""
    env = os.environ.get("GCLN_DATA")
    if env:
        return Path(env).expanduser() / name
    return EMBEDDED_ROOT.expanduser() if name == "embedded" else Path("~/.cache/gcln_fast").expanduser() / name


class ArrayDataset(InMemoryImages):
    """uint8 NCHW images + int64 labels held in memory; items are float tensors in [0, 1]."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, name: str, split: str, classes=None):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError("images must be uint8 (N, 3, H, W)")
        self.images = np.ascontiguousarray(images)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.name, self.split = name, split
        self.allows_hflip = ALLOWS_HFLIP.get(name, False)
        self.classes = classes if classes is not None else [str(i) for i in range(NUM_CLASSES.get(name, 10))]


def _missing(name: str, root: Path, files: list[str], hint: str) -> FileNotFoundError:
    listing = ", ".join(str(root / f) for f in files)
    return FileNotFoundError(
        f"{name} files not found. Expected: {listing}. {hint} "
        f"Pass download=True (command line: --download) to fetch them into {root}, "
        f"or point root/--data-root at a directory that holds them."
    )


def _cifar10(root: Path, split: str, download: bool) -> ArrayDataset:
    from torchvision.datasets import CIFAR10

    if split not in ("train", "test"):
        raise ValueError(f"cifar10 split must be 'train' or 'test', got {split!r}")
    folder = root / "cifar-10-batches-py"
    if not download and not all((folder / f).is_file() for f in _CIFAR_FILES):
        raise _missing(
            "CIFAR-10",
            folder,
            _CIFAR_FILES,
            "(the python version of CIFAR-10, cifar-10-python.tar.gz extracted under root).",
        )
    ds = CIFAR10(str(root), train=split == "train", download=download)
    images = np.asarray(ds.data, dtype=np.uint8).transpose(0, 3, 1, 2)  # NHWC -> NCHW
    return ArrayDataset(images, np.asarray(ds.targets), name="cifar10", split=split, classes=list(ds.classes))


def _svhn(root: Path, split: str, download: bool) -> ArrayDataset:
    from torchvision.datasets import SVHN

    if split not in _SVHN_FILES:
        raise ValueError(f"svhn split must be one of {sorted(_SVHN_FILES)}, got {split!r}")
    if not download and not (root / _SVHN_FILES[split]).is_file():
        raise _missing(
            "SVHN",
            root,
            [_SVHN_FILES[split]],
            "(the cropped-digit format 2 .mat files, train_32x32.mat and test_32x32.mat, directly in root).",
        )
    ds = SVHN(str(root), split=split, download=download)  # labels already mapped 10 -> 0
    return ArrayDataset(np.asarray(ds.data, dtype=np.uint8), np.asarray(ds.labels), name="svhn", split=split)


class FolderDataset(Dataset):
    """``root/<split>/<class>/*.png`` (any image format torchvision reads), resized to 32x32 RGB."""

    name = "folder"
    allows_hflip = False

    def __init__(self, root: Path, split: str):
        from torchvision import transforms
        from torchvision.datasets import ImageFolder

        folder = root / split
        if not folder.is_dir():
            raise FileNotFoundError(
                f"image folder not found: expected {folder}/<class>/*.png "
                f"(one sub-directory per class) under root={root}"
            )
        tf = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])
        self.inner = ImageFolder(str(folder), transform=tf)  # loader converts to RGB
        self.classes, self.split = self.inner.classes, split

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i):
        x, y = self.inner[i]
        return x, int(y)


def get_dataset(
    name: str, split: str = "train", *, root=None, download: bool = False, size: int | None = None, seed: int = 0
) -> Dataset:
    """One split of a dataset; items ``(float32 (3,32,32) in [0,1], int label)``.

    name: ``"embedded"`` (rendered house numbers; ``size`` images, default 20000 train /
    2000 test, generated from ``seed`` and cached under ``root``), ``"cifar10"``,
    ``"svhn"`` (torchvision files under ``root``; fetched only with ``download=True``),
    ``"folder"`` (``root/<split>/<class>/*``). For cifar10 and svhn ``size`` keeps the first
    ``size`` items and ``seed`` is unused; an image folder is ordered by class, so there ``size``
    keeps a random subset drawn with ``seed`` (its first items would all be one class).
    ``root`` defaults to :func:`default_root`.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if size is not None and size < 0:
        raise ValueError("size must be >= 0")
    if name == "folder" and root is None:
        raise ValueError("the 'folder' dataset needs root=<dir holding <split>/<class>/ images>")
    root = Path(root).expanduser() if root is not None else default_root(name)
    if name == "embedded":
        return EmbeddedDigits(root, split=split, size=size, seed=seed)
    if name == "cifar10":
        ds = _cifar10(root, split, download)
    elif name == "svhn":
        ds = _svhn(root, split, download)
    else:
        ds = FolderDataset(root, split)
    if size is not None and size < len(ds):
        if isinstance(ds, ArrayDataset):
            ds = ArrayDataset(ds.images[:size], ds.labels[:size], name=ds.name, split=split, classes=ds.classes)
        else:
            keep = np.random.default_rng(seed).permutation(len(ds))[:size].tolist()
            sub = Subset(ds, keep)
            sub.name, sub.allows_hflip, sub.classes = ds.name, ds.allows_hflip, ds.classes
            ds = sub
    return ds


def num_classes(name: str) -> int:
    """Number of classes of a named dataset (10 for embedded, cifar10 and svhn).

    For ``"folder"`` use ``len(get_dataset("folder", root=...).classes)``."""
    if name == "folder":
        raise ValueError("num_classes('folder') depends on the folder; use len(dataset.classes)")
    if name not in NUM_CLASSES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return NUM_CLASSES[name]


def _arrays(dataset, limit):
    """(uint8 images, int64 labels) numpy views when the dataset holds arrays, else None."""
    if hasattr(dataset, "arrays"):
        x, y = dataset.arrays()
        return x[:limit], y[:limit]
    if isinstance(dataset, Subset) and hasattr(dataset.dataset, "arrays"):
        x, y = dataset.dataset.arrays()
        idx = np.asarray(list(dataset.indices)[:limit], dtype=np.int64)
        return x[idx], y[idx]
    return None


def as_uint8_tensors(dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`as_tensors` but keeps uint8 images (0-255) where the dataset stores them
    (4x less memory; divide by 255 per batch). Falls back to float32 in [0, 1] otherwise."""
    arr = _arrays(dataset, limit)
    if arr is not None:
        return torch.from_numpy(np.ascontiguousarray(arr[0])), torch.from_numpy(np.asarray(arr[1], np.int64))
    return as_tensors(dataset, limit)


def as_tensors(dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the first ``limit`` items (all if None): ``X`` float32 (N,3,32,32) in [0,1], ``Y`` int64 (N,).

    Array-backed datasets (embedded, cifar10, svhn and their Subsets) are converted
    directly from the stored uint8 array, without a per-item loop."""
    arr = _arrays(dataset, limit)
    if arr is not None:
        x = torch.from_numpy(np.ascontiguousarray(arr[0])).float().div_(255.0)
        return x, torch.from_numpy(np.asarray(arr[1], np.int64))
    n = len(dataset) if limit is None else min(limit, len(dataset))
    xs, ys = [], []
    for i in range(n):
        x, y = dataset[i]
        xs.append(x)
        ys.append(int(y))
    if not xs:
        return torch.zeros(0, 3, 32, 32), torch.zeros(0, dtype=torch.int64)
    return torch.stack(xs).float(), torch.tensor(ys, dtype=torch.int64)
