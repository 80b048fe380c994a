"""Helpers shared by the end-to-end commands (``gcln demo``, ``gcln reproduce``): timed phases,
cached image tensors, classifier training that resumes, one-line accuracy formatting."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch


class Timer:
    """Wall time per named phase; each phase prints a header and its duration."""

    def __init__(self):
        self.times: dict[str, float] = {}
        self.t0 = time.time()

    @contextlib.contextmanager
    def phase(self, name: str):
        start = time.time()
        print(f"\n== {name} ==", flush=True)
        try:
            yield
        finally:
            self.times[name] = time.time() - start
            print(f"-- {name}: {self.times[name]:.1f} s", flush=True)

    def total(self) -> float:
        self.times["total"] = time.time() - self.t0
        return self.times["total"]


def save_finetuned_classifier(result: dict, base, out_dir) -> Path | None:
    """``OUT/classifier.pt``: the jointly fine-tuned C of a ``train_gcln`` result (None when C was
    not fine-tuned), so that ``gcln eval --row 'NAME=OUT/gcln.pt@OUT/classifier.pt'`` can judge the pair."""
    if result["classifier"] is base:
        return None
    from ..models import save_classifier

    path = Path(out_dir) / "classifier.pt"
    save_classifier(
        result["classifier"], path, arch=base.arch, num_classes=base.num_classes,
        fine_tuned_with=str(result["checkpoint"]),
    )  # fmt: skip
    return path


def pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def cached_images(path: Path, load):
    """``(X uint8 (N, 3, H, W), Y int64)`` from ``path``, or from ``load()`` (then saved there)."""
    from ..utils.checkpoint import atomic_save, load_checkpoint

    if path.is_file():
        d = load_checkpoint(path)
        return d["X"], d["Y"]
    X, Y = load()
    if X.dtype != torch.uint8:
        X = (X.clamp(0, 1) * 255).round().to(torch.uint8)
    atomic_save({"kind": "images", "X": X.contiguous(), "Y": Y.long()}, path)
    return X, Y.long()


def train_or_load_classifier(path: Path, arch, train, val, *, epochs, lr, optimizer, seed, progress, **kw):
    """Train ``arch`` on ``train`` (a dataset) into ``path``, resuming an interrupted run; or load it."""
    from ..models import build_classifier, load_classifier
    from ..training.classifier import train_classifier

    if path.is_file():
        print(f"{path} exists: skipped")
        return load_classifier(path)
    torch.manual_seed(seed)
    model = build_classifier(arch, kw.pop("num_classes", 10))
    hist = train_classifier(
        model,
        train,
        val,
        epochs=epochs,
        batch_size=128,
        lr=lr,
        optimizer=optimizer,
        device=kw.pop("device", "cpu"),
        checkpoint_path=path.with_suffix(".state.pt"),
        final_path=path,
        resume=True,
        seed=seed,
        progress=progress,
        **kw,
    )
    va = hist["final_val_acc"]
    print(f"{arch}: val accuracy {va:.4f}" if va is not None else f"{arch}: trained")
    return load_classifier(path)
