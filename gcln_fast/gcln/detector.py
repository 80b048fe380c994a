"""The detector D (the paper's dual network of the classifier): clean (class 0) vs attacked (class 1)."""

from __future__ import annotations

import torch
from torch import nn

CLEAN = 0
ATTACKED = 1


class Detector(nn.Module):
    """Binary CNN on [0, 1] images; returns (N, 2) logits, index 0 = clean, 1 = attacked.

    The first two convolutions keep full resolution (no early pooling) so
    high-frequency attack noise reaches the later layers. No batch
    normalisation (a GAN discriminator that sees clean and generated batches
    separately would otherwise learn batch statistics).
    """

    def __init__(self, width: int = 32):
        super().__init__()
        w = int(width)
        self.config = {"width": w}
        act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), act(),
            nn.Conv2d(w, w, 3, padding=1), act(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), act(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), act(),
            nn.Conv2d(4 * w, 4 * w, 3, stride=2, padding=1), act(),
        )
        self.head = nn.Linear(4 * w, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x - 0.5)
        return self.head(h.mean(dim=(2, 3)))
