"""Stop a training run whose loss is no longer a number.

A NaN or infinite loss poisons every weight at the next optimizer step, and the run would go
on to its end writing a useless model (and exit 0). :func:`ensure_finite` is called once per
step with the values the loop logs anyway (no extra device synchronisation); the checkpoint of
the last completed epoch is not touched, so the run can be resumed from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from .errors import NonFiniteLossError


def ensure_finite(values: Mapping[str, float], *, step: int, where: str = "", checkpoint=None) -> None:
    """Raise :class:`NonFiniteLossError` if any of ``values`` (name -> number or 0-d tensor) is NaN
    or infinite. The message names the values, the ``step`` (and ``where``, e.g. "epoch 3") and
    the last good ``checkpoint`` (or says that none was written yet)."""
    bad = {k: float(v) for k, v in values.items() if v is not None and not math.isfinite(float(v))}
    if not bad:
        return
    what = ", ".join(f"{k} = {v}" for k, v in bad.items())
    at = f"step {step}" + (f" ({where})" if where else "")
    if checkpoint is not None and Path(checkpoint).is_file():
        kept = (
            f"The last good checkpoint, {checkpoint} (end of the last completed epoch), is kept: "
            "continue from it with --resume (resume=True), for example with a lower learning rate."
        )
    else:
        kept = "No checkpoint had been written yet."
    raise NonFiniteLossError(f"training stopped: {what} at {at}. {kept}")
