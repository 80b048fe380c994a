"""Atomic file writes: a crash or a kill mid-write never leaves a truncated file behind.

Every writer goes through :func:`atomic_write`: the data goes to a temporary file beside the
target, named after the target and the writer's process id (so concurrent writers never share
a temporary name), is fsynced, and is renamed over the target. Temporary files left by a
writer that was killed (its process no longer exists) are removed on the next write of the
same target.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(path) -> int:
    """Delete ``.<name>.<pid>.*.tmp`` files beside ``path`` whose writer process is gone."""
    path = Path(path)
    removed = 0
    prefix = f".{path.name}."
    if not path.parent.is_dir():
        return 0
    for tmp in path.parent.glob(f"{prefix}*.tmp"):
        pid_part = tmp.name[len(prefix) :].split(".", 1)[0]
        if pid_part.isdigit() and int(pid_part) != os.getpid() and not _pid_alive(int(pid_part)):
            try:
                tmp.unlink()
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def atomic_write(path, write: Callable, *, binary: bool = True, mode: int | None = None) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_write_json(path, obj, *, indent: int = 1, allow_nan: bool = True) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=allow_nan) + "\n")
