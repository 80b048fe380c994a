"""Checks shared by the ``gcln`` commands, so that every bad setting is refused before work starts.

* argparse ``type=`` validators (:func:`positive_int`, :func:`checkpoint_arg`, ...): a bad value
  is an argparse error (usage, the argument's name, exit code 2) at parse time;
* :func:`prepare_run`, the first line of every command's ``run``: seeds every generator from
  ``--seed``, checks that ``--out`` is of the right sort and writable (creating it), and locks
  it against a second run (:mod:`gcln_fast.utils.lock`). Locks are released by
  :func:`release_outputs`, which :func:`gcln_fast.commands.main.main` calls when the command ends.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

from ..utils.errors import CheckpointError, UsageError

_held = []


# --------------------------------------------------------------------------- argparse types


def _number(text: str, kind, what: str, ok) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if (isinstance(value, float) and not math.isfinite(value)) or not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, "an integer >= 1", lambda v: v >= 1)


def nonnegative_int(text: str) -> int:
    return _number(text, int, "an integer >= 0", lambda v: v >= 0)


def positive_float(text: str) -> float:
    return _number(text, float, "a finite number > 0", lambda v: v > 0)


def nonnegative_float(text: str) -> float:
    return _number(text, float, "a finite number >= 0", lambda v: v >= 0)


def unit_interval(text: str) -> float:
    return _number(text, float, "a number in [0, 1]", lambda v: 0 <= v <= 1)


def device_arg(text: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``; a CUDA device must exist."""
    import torch

    if text == "auto":
        return text
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or auto, got {text!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or auto, got {text!r}")
    if dev.type == "cuda":
        n = torch.cuda.device_count()
        if n == 0:
            raise argparse.ArgumentTypeError(f"{text}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= n:
            raise argparse.ArgumentTypeError(f"{text}: this machine has {n} CUDA device(s)")
    return text


def checkpoint_arg(*kinds: str):
    """An argparse type: a verified checkpoint file of one of ``kinds`` (see ``utils.checkpoint.KINDS``);
    it is loaded once here to check it, which reads the file (a few MB for this package's models)."""

    def check(text: str) -> str:
        from ..utils.checkpoint import load_checkpoint

        try:
            load_checkpoint(text, kind=kinds)
        except CheckpointError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    check.__name__ = "checkpoint"  # argparse names the type in some messages
    return check


# --------------------------------------------------------------------------- the output


def _probe_writable(folder: Path, flag: str, out: Path) -> None:
    try:
        fd, name = tempfile.mkstemp(prefix=".gcln-write-test.", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise UsageError(f"{flag} {out}: cannot write into {folder} ({exc.strerror or exc})") from None


def check_output(out, sort: str, *, flag: str = "--out", file_kinds: tuple = ()) -> Path:
    """Check that ``out`` can be this command's output and create it (``sort="dir"``) or its parent
    (``sort="file"``): a directory expected and a file found (or the reverse), a parent that cannot
    be created or written, or an existing file that is not a checkpoint of ``file_kinds`` (never
    overwritten) is a :class:`UsageError`."""
    out = Path(out)
    if sort not in ("dir", "file"):
        raise ValueError(f"sort must be 'dir' or 'file', got {sort!r}")
    if sort == "dir" and out.exists() and not out.is_dir():
        raise UsageError(f"{flag} {out} exists and is not a directory: this command writes a directory of results")
    if sort == "file" and out.is_dir():
        raise UsageError(f"{flag} {out} is a directory: this command writes a file (e.g. {out / 'classifier.pt'})")
    if sort == "file" and out.exists() and file_kinds:
        from ..utils.checkpoint import load_checkpoint

        try:
            load_checkpoint(out, kind=file_kinds)
        except CheckpointError as exc:
            raise UsageError(f"{flag} {out} exists and will not be overwritten: {exc}") from None
    folder = out if sort == "dir" else out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{flag} {out}: cannot create {folder} ({exc.strerror or exc})") from None
    _probe_writable(folder, flag, out)
    return out


def prepare_run(args, *, out: str | None = None, file_kinds: tuple = ()) -> None:
    """The first step of a command: seed every generator from ``args.seed``, then check ``args.out``
    (``out="dir"`` or ``"file"``; see :func:`check_output`) and lock it. Under ``torchrun`` only
    rank 0 locks (the other ranks write nothing)."""
    from ..utils.lock import lock_output
    from ..utils.seed import seed_everything

    if getattr(args, "seed", None) is not None:
        seed_everything(args.seed)
    if out is None:
        return
    path = check_output(args.out, out, file_kinds=file_kinds)
    if os.environ.get("RANK", "0") != "0":
        return
    lock = lock_output(path)
    _held.append(lock)
    if lock.previous and lock.previous.get("pid") not in (None, os.getpid()):
        print(
            f"note: took over the lock of {path} left by process {lock.previous['pid']}, which is gone", file=sys.stderr
        )


def release_outputs() -> None:
    """Release every lock :func:`prepare_run` took in this process."""
    while _held:
        _held.pop().release()
