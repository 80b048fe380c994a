"""Small stand-ins for the GCLN tests: a tiny classifier, L-inf attacks and a toy dataset.

They let tests of ``gcln_fast.gcln`` run without ``gcln_fast.models`` /
``gcln_fast.attacks`` / ``gcln_fast.data`` and in seconds on two cores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyClassifier(nn.Module):
    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        h = F.relu(self.c1(x - 0.5))
        h = F.relu(self.c2(h))
        return self.fc(h.mean(dim=(2, 3)))


def toy_data(n: int = 256, num_classes: int = 4, seed: int = 0, contrast: float = 0.3):
    """Images whose class is the brightest colour channel plus a pattern: learnable in a few steps.

    ``contrast``: how much brighter the class channel is; small values (0.05) give a classifier
    that an 8/255 attack fools."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=g)
    x = 0.3 + 0.2 * torch.rand(n, 3, 32, 32, generator=g)
    for i in range(n):
        c = int(y[i]) % 3
        x[i, c] += contrast
        if int(y[i]) == 3:
            x[i, :, ::4, :] = 0.9
    return x.clamp(0, 1), y


def trained_classifier(x, y, steps: int = 60, seed: int = 0) -> TinyClassifier:
    torch.manual_seed(seed)
    m = TinyClassifier(int(y.max()) + 1)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (64,))
        loss = F.cross_entropy(m(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


def fgsm(model, x, y, eps=8 / 255, **_):
    x = x.clone().detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    (g,) = torch.autograd.grad(loss, x)
    return (x + eps * g.sign()).clamp(0, 1).detach()


def pgd(model, x, y, eps=8 / 255, step=2 / 255, steps=3, **_):
    x0 = x.detach()
    xa = (x0 + torch.empty_like(x0).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        xa.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
        xa = torch.min(torch.max(xa.detach() + step * g.sign(), x0 - eps), x0 + eps).clamp(0, 1)
    return xa.detach()


ATTACKS = {"fgsm": fgsm, "pgd": pgd}
MIX = ({"attack": "pgd", "eps": 8 / 255, "step": 2 / 255, "steps": 3}, {"attack": "fgsm", "eps": 8 / 255})
