"""One writer per output: an advisory lock taken by a run on its output directory or file.

Two runs writing into one ``--out`` both used to exit 0 while the last writer silently won.
:func:`lock_output` takes an exclusive ``flock`` on a lock file (``DIR/.gcln.lock`` for a
directory, ``.NAME.lock`` beside a file) and writes the holder's process id, host, command line
and start time into it. A second run is refused with :class:`~.errors.OutputLockedError` naming
that process. The kernel drops the lock when its holder dies (even by SIGKILL), so the lock file
a killed run leaves behind is simply taken over by the next run.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from .errors import OutputLockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, runs are not serialised
    fcntl = None

LOCK_NAME = ".gcln.lock"


def lock_path_for(target) -> Path:
    """``DIR/.gcln.lock`` for a directory ``target``, ``PARENT/.NAME.lock`` for a file."""
    target = Path(target)
    return target / LOCK_NAME if target.is_dir() else target.parent / f".{target.name}.lock"


def _holder_text(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "another process (it has not written its name yet)"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"process {info['pid']} on {info.get('host', '?')} ({info.get('command', '?')}), started {started}"


class OutputLock:
    """A held lock; :meth:`release` (or leaving the ``with`` block) removes the lock file."""

    def __init__(self, target: Path, path: Path, fd: int | None, previous: dict | None):
        self.target, self.path, self._fd = target, path, fd
        self.previous = previous  # what the lock file said when a dead holder's lock was taken over

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()  # before unlocking: a waiter that opened this file sees it is gone
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _try_lock(path: Path) -> tuple[int, dict | None] | None:
    """(fd, previous content) with the lock held, or None if the file was replaced meanwhile."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise
    try:
        same = os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        same = False
    if not same:  # released and removed by its holder between our open and flock: try again
        os.close(fd)
        return None
    try:
        previous = json.loads(os.read(fd, 65536) or b"{}")
    except ValueError:
        previous = None
    return fd, previous or None


def lock_output(target, *, command: str | None = None) -> OutputLock:
    """Take the lock of ``target`` (a directory, or a file path) or raise :class:`OutputLockedError`
    naming the process that holds it. ``target``'s parent must exist."""
    target = Path(target)
    path = lock_path_for(target)
    if fcntl is None:  # pragma: no cover
        return OutputLock(target, path, None, None)
    for _ in range(20):
        try:
            got = _try_lock(path)
        except BlockingIOError:
            raise OutputLockedError(
                f"{target} is in use by {_holder_text(path)}; wait for that run to finish, stop it, "
                "or choose another --out"
            ) from None
        if got is not None:
            break
    else:  # pragma: no cover - twenty holders in a row released it under us
        raise OutputLockedError(f"{target}: could not take its lock {path}; try again")
    fd, previous = got
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command or " ".join(sys.argv),
        "started": time.time(),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    return OutputLock(target, path, fd, previous)
