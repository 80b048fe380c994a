"""Training logs of GCLN: per-step CSV, history JSON, epoch means."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from ..utils.io import atomic_write, atomic_write_json


def plain(obj):
    """JSON/weights_only-safe copy (tuples become lists, numbers stay numbers, non-finite floats None)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def write_logs(out_dir: Path, history: dict, config: dict) -> None:
    steps = history["steps"]
    keys = []
    for rec in steps:
        for k in rec:
            if k not in keys:
                keys.append(k)

    def write_csv(f):
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(steps)

    atomic_write(out_dir / "train_log.csv", write_csv, binary=False)
    atomic_write_json(out_dir / "history.json", plain({"config": config, **history}))


def mean_of(records, key):
    vals = [r[key] for r in records if r.get(key) is not None]
    return sum(vals) / len(vals) if vals else None
