"""What the step benchmarks share: interleaved timing and the JSON record of a run."""

from __future__ import annotations

import platform
import time

import torch

from gcln_fast.utils.io import atomic_write_json


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(steps: dict, *, repeats: int, warmup: int, device: torch.device) -> dict:
    """``{key: [seconds per call]}`` for every zero-argument callable of ``steps``, after ``warmup``
    calls each; the calls are interleaved so that every variant sees the same machine load."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times = {k: [] for k in steps}
    for _ in range(repeats):
        for key, fn in steps.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[key].append(time.perf_counter() - t0)
    return times


def write_result(result: dict, path) -> None:
    """``result`` with the software and platform it ran on, as JSON at ``path`` (nothing when None)."""
    if not path:
        return
    result = {
        **result,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    print(f"\nJSON: {atomic_write_json(path, result)}")
