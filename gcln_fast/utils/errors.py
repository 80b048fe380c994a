"""Errors the ``gcln`` commands report as one message, without a traceback.

Each is also a standard exception type (``ValueError``, ``RuntimeError``...), so library callers
catch them as usual; :mod:`gcln_fast.commands.main` prints ``gcln <command>: error: <message>``
and exits non-zero for any :class:`GclnError`.
"""

from __future__ import annotations


class GclnError(Exception):
    """Base of the errors that carry a complete message for the user."""


class UsageError(GclnError, ValueError):
    """A bad command-line setting found before any work started (exit code 2, like argparse)."""


class CheckpointError(GclnError, ValueError):
    """A file that is not a valid checkpoint of the expected kind: empty, truncated, corrupted..."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist."""


class NonFiniteLossError(GclnError, FloatingPointError):
    """A training loss became NaN or infinite; the run stopped, its last good checkpoint kept."""


class OutputLockedError(GclnError, RuntimeError):
    """Another live process is writing into the same output."""


class ResumeMismatchError(GclnError, ValueError):
    """``--resume`` asked with settings that differ from the saved run's."""
