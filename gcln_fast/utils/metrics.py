"""Batched classification accuracy."""

from __future__ import annotations

import torch


@torch.no_grad()
def batched_correct(model, X: torch.Tensor, Y: torch.Tensor, *, batch_size: int = 256, device=None) -> torch.Tensor:
    """Per-image correctness (bool, on the CPU) of ``model`` on float images ``X`` with labels ``Y``,
    one forward pass per batch; ``device`` defaults to ``X``'s."""
    out = []
    for i in range(0, len(X), batch_size):
        xb, yb = X[i : i + batch_size], Y[i : i + batch_size]
        if device is not None:
            xb, yb = xb.to(device), yb.to(device)
        out.append((model(xb).argmax(1) == yb.to(xb.device)).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def accuracy(model, X: torch.Tensor, Y: torch.Tensor, *, batch_size: int = 256, device=None) -> float:
    """Fraction of ``X`` that ``model`` classifies as ``Y`` (0.0 for an empty set)."""
    ok = batched_correct(model, X, Y, batch_size=batch_size, device=device)
    return float(ok.float().mean()) if len(ok) else 0.0
