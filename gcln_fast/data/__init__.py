"""Datasets for the GCLN pipeline: images float32 (3, 32, 32) in [0, 1], integer labels.

:func:`get_dataset` (``"embedded"``, ``"cifar10"``, ``"svhn"``, ``"folder"``),
:func:`as_tensors` (stack to ``(X, Y)``), :func:`num_classes`.
"""

from .datasets import (
    ALLOWS_HFLIP,
    DATASETS,
    STATS,
    ArrayDataset,
    as_tensors,
    as_uint8_tensors,
    default_root,
    get_dataset,
    num_classes,
)
from .embedded import EmbeddedDigits

__all__ = [
    "ALLOWS_HFLIP",
    "DATASETS",
    "STATS",
    "ArrayDataset",
    "EmbeddedDigits",
    "as_tensors",
    "as_uint8_tensors",
    "default_root",
    "get_dataset",
    "num_classes",
]
