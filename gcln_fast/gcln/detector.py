"""The detector D (the paper's dual network of the classifier): clean (class 0) vs attacked (class 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CLEAN = 0
ATTACKED = 1


class Detector(nn.Module):
    """Binary CNN on [0, 1] images; returns (N, 2) logits, index 0 = clean, 1 = attacked.

    With ``highpass=True`` (default), besides the image the first convolution reads its high-pass residual
    ``x - box3x3(x)`` (scaled by 10), a fixed filter as in steganalysis
    detectors: without it a freshly initialised D does not see the small attack
    noise at all and its loss stays at log 2 for hundreds of steps. The first
    two convolutions keep full resolution (no early pooling). No batch
    normalisation (a GAN discriminator that sees clean and generated batches
    separately would otherwise learn batch statistics). ``spectral_norm=True`` puts spectral
    normalisation (Miyato et al. 2018) on every layer, which bounds D's Lipschitz constant and so
    the size of the gradient L_A hands to G.
    """

    def __init__(self, width: int = 32, highpass: bool = True, spectral_norm: bool = False):
        super().__init__()
        w = int(width)
        if w < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.highpass = bool(highpass)
        self.config = {"width": w, "highpass": self.highpass, "spectral_norm": bool(spectral_norm)}
        act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        self.features = nn.Sequential(
            nn.Conv2d(6 if self.highpass else 3, w, 3, padding=1),
            act(),
            nn.Conv2d(w, w, 3, padding=1),
            act(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1),
            act(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1),
            act(),
            nn.Conv2d(4 * w, 4 * w, 3, stride=2, padding=1),
            act(),
        )
        self.head = nn.Linear(4 * w, 2)
        if spectral_norm:
            for m in [*self.features, self.head]:
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.utils.parametrizations.spectral_norm(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.highpass:
            residual = x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
            h = self.features(torch.cat([x - 0.5, 10.0 * residual], dim=1))
        else:
            h = self.features(x - 0.5)
        return self.head(h.mean(dim=(2, 3)))
