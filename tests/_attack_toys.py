"""Tiny synthetic data and models for the attack/evaluation tests (fixed seeds, seconds on 2 CPU cores).

Images are 3x32x32 in [0, 1] on the 8-bit grid: a smooth class template (random 4x4 pattern upsampled)
over a smooth random background plus pixel noise. A small CNN learns it to ~100% in a few seconds and
is easy to break at eps = 8/255, while random noise of the same size barely matters.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 10


def _smooth(g, n, size=4, scale=1.0):
    z = torch.randn(n, 3, size, size, generator=g)
    return F.interpolate(z, size=32, mode="bilinear", align_corners=False) * scale


def make_data(n, *, seed=0, amplitude=0.1, noise=0.02):
    g = torch.Generator().manual_seed(1234)  # templates are shared across splits
    templates = _smooth(g, NUM_CLASSES)
    templates = templates / templates.flatten(1).abs().amax(1)[:, None, None, None]
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    background = _smooth(g, n, size=2, scale=0.03)
    x = 0.5 + amplitude * templates[y] + background + noise * torch.randn(n, 3, 32, 32, generator=g)
    x = (x.clamp(0, 1) * 255).round() / 255
    return x, y


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, NUM_CLASSES),
    )


def train(model, x, y, *, epochs=3, batch=32, lr=3e-3, seed=0):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model


@functools.cache
def trained(seed=0, n_train=600, epochs=3, n_test=128):
    """(model, x_test, y_test): a small CNN trained on its own draw of the data (eval mode, ~95% test
    accuracy) and ``n_test`` held-out images shared by every seed. seed 1 serves as the substitute."""
    torch.manual_seed(seed)
    x, y = make_data(n_train, seed=100 + seed)
    model = train(small_cnn(seed), x, y, epochs=epochs, seed=seed)
    xt, yt = make_data(n_test, seed=999)
    return model, xt, yt


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


# --------------------------------------------------------------------------- crafted defences


class _ZeroGradFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return torch.zeros_like(g)


class ZeroGrad(nn.Module):
    """Forward is the identity, backward returns zeros: the textbook masked gradient."""

    def forward(self, x):
        return _ZeroGradFn.apply(x)


class Collapsed(nn.Module):
    """A collapsed cleaning network: every image becomes the same grey image (the model ignores its input)."""

    def forward(self, x):
        return torch.full_like(x, 0.5)


class _SurrogateFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, layer):
        ctx.layer = layer
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        ctx.layer.seen.append(ctx.layer.surrogate)
        # "identity" (BPDA) sees no signal here, "cubic" the true gradient, "sine" a reversed one
        return {"identity": torch.zeros_like(g), "cubic": g, "sine": -g}[ctx.layer.surrogate], None


class FakeSurrogateLayer(nn.Module):
    """Stands in for a QNT layer with a settable backward ``surrogate``: the forward is the identity and
    the backward depends on the surrogate (``seen`` records the surrogate of every backward pass)."""

    def __init__(self, surrogate="sine"):
        super().__init__()
        self.surrogate = surrogate
        self.seen = []

    def forward(self, x):
        return _SurrogateFn.apply(x, self)


class FakeClamp(nn.Module):
    """Stands in for the generator's output clamp: ``straight_through_clamp`` as on ``gcln.Generator``."""

    def __init__(self):
        super().__init__()
        self.straight_through_clamp = False
        self.seen = []

    def forward(self, x):
        self.seen.append(self.straight_through_clamp)
        return x


class LateReversal(nn.Module):
    """Honest gradients for the first ``k`` backward passes of an attack, reversed afterwards (the
    count restarts at every no-grad forward, i.e. every evaluation): long attacks undo themselves."""

    def __init__(self, k=10):
        super().__init__()
        self.k, self.calls = k, 0
        module = self

        class Fn(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x.clone()

            @staticmethod
            def backward(ctx, g):
                module.calls += 1
                return g if module.calls <= module.k else -g

        self.fn = Fn

    def forward(self, x):
        if not torch.is_grad_enabled():
            self.calls = 0
        return self.fn.apply(x)
