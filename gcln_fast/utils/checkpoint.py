"""Checkpoints: written atomically (see :mod:`.io`), verified and read with ``weights_only=True`` only.

Every checkpoint this package writes is a dict with a ``"kind"`` entry naming what it holds
(``KINDS``), so that a file of the wrong kind is refused with a message that says so.

``torch.save`` writes a zip archive with a CRC-32 of every member, but ``torch.load`` does not
check them: a checkpoint with a few flipped bytes inside a tensor loads silently and gives NaN
logits. :func:`verify_checkpoint_file` checks the archive (and every CRC) first, so that an
empty, truncated, corrupted or foreign file is refused with one message naming the file and
what is wrong with it (:class:`~.errors.CheckpointError`).
"""

from __future__ import annotations

import pickle
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import torch

from .errors import CheckpointError, CheckpointNotFoundError
from .io import atomic_write

KINDS = {
    "classifier": "a trained classifier (gcln train-classifier --out)",
    "classifier_train_state": "a classifier's resumable training state",
    "gcln": "a GCLN checkpoint (generator and detector; gcln train --out DIR writes DIR/gcln.pt)",
    "attacks": "adversarial examples saved by the demo",
}
_ZIP_MAGIC = b"PK\x03\x04"


def atomic_save(obj, path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def _describe(kinds: Iterable[str]) -> str:
    return " or ".join(KINDS.get(k, f"kind {k!r}") for k in kinds)


def _check_archive(path: Path, size: int) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
                raise CheckpointError(f"{path} is a zip archive but not a checkpoint (it has no data.pkl)")
            bad = zf.testzip()
    except zipfile.BadZipFile as exc:
        raise CheckpointError(
            f"{path} is truncated or damaged ({size} bytes; its zip directory cannot be read: {exc}); "
            "an interrupted write or copy? Write or copy it again"
        ) from exc
    except (EOFError, zlib.error, OSError) as exc:
        raise CheckpointError(f"{path} is truncated or damaged ({size} bytes): {exc}") from exc
    if bad is not None:
        raise CheckpointError(
            f"{path} is corrupted: archive member {bad!r} fails its CRC-32 check (the bytes changed after the "
            "file was written); use another copy or write it again"
        )


def verify_checkpoint_file(path) -> Path:
    """Check that ``path`` is a complete, uncorrupted ``torch.save`` archive (every member's CRC-32);
    raise :class:`CheckpointError` naming the file and what is wrong (missing, a directory, empty,
    not a checkpoint, truncated, corrupted). Reads the whole file once."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        hint = f" (did you mean {path / 'gcln.pt'}?)" if (path / "gcln.pt").is_file() else ""
        raise CheckpointError(f"{path} is a directory, not a checkpoint file{hint}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes), not a checkpoint; an interrupted write or copy?")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != _ZIP_MAGIC:
        what = "a legacy torch.save file or a pickle" if head[:1] == b"\x80" else f"its first bytes are {head!r}"
        raise CheckpointError(
            f"{path} is not a checkpoint of this package ({what}; torch.save archives start with {_ZIP_MAGIC!r})"
        )
    _check_archive(path, size)
    return path


def load_checkpoint(path, map_location="cpu", *, kind: str | Iterable[str] | None = None):
    """Verify (:func:`verify_checkpoint_file`) and load a checkpoint (tensors and plain containers
    only). With ``kind`` (a name of ``KINDS`` or several), refuse anything but a dict of that kind.
    Every failure is a :class:`CheckpointError` that names the file."""
    path = verify_checkpoint_file(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} cannot be read as a weights-only checkpoint ({first}); checkpoints of this package hold "
            "tensors and plain containers only"
        ) from exc
    if kind is not None:
        kinds = (kind,) if isinstance(kind, str) else tuple(kind)
        if not isinstance(obj, dict):
            raise CheckpointError(f"{path} is not {_describe(kinds)}: it holds a {type(obj).__name__}")
        found = obj.get("kind")
        if found not in kinds:
            what = KINDS.get(found, "a dict of unknown kind" if found is None else f"of kind {found!r}")
            raise CheckpointError(f"{path} is not {_describe(kinds)}: it is {what}")
    return obj
