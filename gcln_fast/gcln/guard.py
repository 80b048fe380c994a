"""The divergence guard: clean accuracy through G, checked after every epoch on held-out images.

When ``acc(C(G(x)))`` falls more than ``margin`` below the classifier's own clean accuracy on the
same images, the guard says so in the log (a ``GUARD`` line on stderr and an event in the
history) and, by ``action``: ``"backoff"`` restores the last epoch that passed and continues with
the learning rates multiplied by ``factor`` (at most ``max_backoffs`` times, then it stops);
``"stop"`` restores the last good epoch and ends training; ``"warn"`` only reports.
"""

from __future__ import annotations

import copy
import sys

import torch
from torch import nn

from ..utils.metrics import accuracy

GUARD_ACTIONS = ("backoff", "stop", "warn")


class DivergenceGuard:
    """Checks clean accuracy through G against C alone on a fixed held-out set (see module docs)."""

    def __init__(self, X, Y, reference: nn.Module, *, margin=0.03, action="backoff", max_backoffs=3, factor=0.5):
        if action not in GUARD_ACTIONS:
            raise ValueError(f"guard_action must be one of {GUARD_ACTIONS}, got {action!r}")
        if not 0 <= margin <= 1:
            raise ValueError(f"guard_margin must be in [0, 1], got {margin}")
        if not 0 < factor < 1:
            raise ValueError(f"guard_factor must be in (0, 1), got {factor}")
        self.X, self.Y = X, Y
        self.margin, self.action, self.max_backoffs, self.factor = float(margin), action, int(max_backoffs), factor
        self.baseline = accuracy(reference, X, Y)  # C alone (the original C, before any fine-tuning)
        self.good: dict | None = None

    def measure(self, G: nn.Module, C: nn.Module) -> float:
        was = G.training
        G.eval()
        try:
            return accuracy(nn.Sequential(G, C), self.X, self.Y)
        finally:
            G.train(was)

    def check(self, G, C, epoch: int) -> dict:
        """An event dict: ``ok`` is False when clean accuracy through G fell more than the margin."""
        acc = self.measure(G, C)
        drop = self.baseline - acc
        return {
            "epoch": epoch,
            "acc_classifier": self.baseline,
            "acc_through_g": acc,
            "drop": drop,
            "ok": drop <= self.margin,
        }

    def remember(self, state: dict) -> None:
        """Keep a copy of the state of an epoch that passed (what a back-off returns to)."""
        self.good = copy.deepcopy(state)

    def report(self, event: dict, what: str) -> None:
        print(
            f"GUARD epoch {event['epoch']}: clean accuracy through G {100 * event['acc_through_g']:.1f}% vs "
            f"classifier alone {100 * event['acc_classifier']:.1f}% (drop {100 * event['drop']:.1f} points, "
            f"margin {100 * self.margin:.1f}): {what}",
            file=sys.stderr,
            flush=True,
        )


def held_out_split(X: torch.Tensor, Y: torch.Tensor, n: int, seed: int):
    """(train X, train Y, monitor X, monitor Y): ``n`` images drawn at random (fixed by ``seed``)
    for the guard, kept out of training."""
    if n <= 0:
        return X, Y, None, None
    if n >= X.shape[0]:
        raise ValueError(f"guard_size {n} leaves no training images (have {X.shape[0]})")
    perm = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(seed + 4242))
    mon, keep = perm[:n], perm[n:].sort().values
    return X[keep], Y[keep], X[mon], Y[mon]
