"""Checkpoints: written atomically (see :mod:`.io`), read with ``weights_only=True`` only.

Every checkpoint this package writes is a dict with a ``"kind"`` entry naming what it holds
(``KINDS``), so that a file of the wrong kind is refused with a message that says so.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .io import atomic_write

KINDS = {
    "classifier": "a trained classifier (gcln train-classifier --out)",
    "classifier_train_state": "a classifier's resumable training state",
    "gcln": "a GCLN generator/detector checkpoint (gcln train --out DIR: DIR/gcln.pt)",
    "attacks": "adversarial examples saved by the demo",
}


def atomic_save(obj, path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path, map_location="cpu", *, kind: str | None = None):
    """Load a checkpoint (tensors and plain containers only); with ``kind``, refuse other kinds."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    obj = torch.load(path, map_location=map_location, weights_only=True)
    if kind is not None:
        found = obj.get("kind") if isinstance(obj, dict) else None
        if found != kind:
            what = KINDS.get(found, "a file of unknown kind" if found is None else f"kind {found!r}")
            raise ValueError(f"{path} is {what}, not {KINDS.get(kind, kind)}")
    return obj
