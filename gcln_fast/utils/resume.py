"""Resuming a run: the saved settings must match the new ones, or the change is recorded.

A run resumed with other settings (seed, learning rate, data size...) silently becomes a run of
neither, and the metadata of its output would name only one of them. :func:`reconcile_resume`
compares the saved configuration with the new one key by key (nested dicts by dotted names) and
refuses a difference, naming every differing setting, unless ``force`` is given; then the new
settings are used and the configuration records the old ones and what changed
(``"resume_history"``). Settings listed as ``fixed`` (an architecture, say) cannot change even
with ``force``: the saved weights would not fit.
"""

from __future__ import annotations

import math
import warnings

from .errors import ResumeMismatchError

HISTORY_KEY = "resume_history"


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _flatten(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in cfg.items():
        if k == HISTORY_KEY:
            continue
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def config_differences(saved: dict, new: dict) -> dict[str, tuple]:
    """``{dotted key: (saved value, new value)}`` for every setting present in both and different
    (settings only one side knows, e.g. from an older version of the package, are not compared)."""
    a, b = _flatten(_plain(saved)), _flatten(_plain(new))
    return {k: (a[k], b[k]) for k in a if k in b and a[k] != b[k]}


def _listing(diffs: dict) -> str:
    return "; ".join(f"{k} was {old!r}, now {new!r}" for k, (old, new) in diffs.items())


def _matches(key: str, names) -> bool:
    return any(key == n or key.startswith(n + ".") for n in names)


def reconcile_resume(saved: dict, new: dict, *, path, force: bool = False, fixed=(), may_change=()) -> dict:
    """The configuration to continue a run saved in ``path`` with: ``new`` (carrying the saved
    ``resume_history``) when nothing differs or ``force`` is set, and then the history records the
    previous settings and the changes. Raises :class:`ResumeMismatchError` naming the differing
    settings otherwise, and always for a change of a ``fixed`` setting. ``may_change``: settings a
    resume may change freely (e.g. the number of epochs of a run without a schedule). Settings are
    named by dotted keys; a name also covers the keys below it."""
    diffs = {k: v for k, v in config_differences(saved, new).items() if not _matches(k, may_change)}
    history = list(saved.get(HISTORY_KEY) or [])
    blocked = {k: v for k, v in diffs.items() if _matches(k, fixed)}
    if blocked:
        raise ResumeMismatchError(
            f"cannot resume {path}: {_listing(blocked)}. This cannot change in a resumed run, even with "
            "--force (force=True): the saved weights do not fit. Start a new run (another --out)."
        )
    if diffs and not force:
        raise ResumeMismatchError(
            f"cannot resume {path} with different settings: {_listing(diffs)}. Resume with the saved "
            "settings, start a new run (another --out), or add --force (force=True) to continue with the "
            "new ones (both are then recorded in the run's metadata)."
        )
    merged = dict(new)
    if diffs:
        warnings.warn(f"resuming {path} with changed settings (forced): {_listing(diffs)}", stacklevel=2)
        previous = {k: v for k, v in _plain(saved).items() if k != HISTORY_KEY}
        history.append({"previous": previous, "changed": {k: list(v) for k, v in diffs.items()}})
    if history:
        merged[HISTORY_KEY] = history
    return merged


def set_learning_rate(optimizer, lr: float) -> None:
    """Set every parameter group's learning rate (after ``load_state_dict`` restored the saved one)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
