"""Batched attack and scoring helpers, and the sweeps behind the sanity checks and the eps curve."""

from __future__ import annotations

import sys
import zlib

import torch

from ..attacks import adaptive_backward, margin_loss, run_attack
from ..attacks._common import grad_or_zeros
from ..utils.metrics import batched_correct
from ..utils.modules import frozen


def tqdm_if(iterable, *, desc, total, enabled):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False, file=sys.stderr, dynamic_ncols=True)


def derive_seed(seed: int, *parts) -> int:
    """A seed for one (row, threat model, attack) run that does not depend on the order of runs."""
    return (int(seed) * 1_000_003 + zlib.crc32("|".join(map(str, parts)).encode())) % (2**31 - 1)


def batches(n, batch_size):
    return [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


@torch.no_grad()
def correct(model, X, Y, *, batch_size=256, device="cpu", seed=None) -> torch.Tensor:
    """Per-image correctness (bool, on CPU) of ``model`` on (X, Y); one forward pass per image."""
    if seed is not None:
        torch.manual_seed(seed)
    return batched_correct(model, X, Y, batch_size=batch_size, device=device)


def craft_all(
    attack, model, X, Y, *, settings, batch_size, device, seed, progress=False, desc="", surrogate=None
) -> torch.Tensor:
    """Batched adversarial examples (on CPU) of ``attack`` against ``model``; the global RNG is seeded
    with ``seed`` first so random starts and randomised defences are reproducible. With ``surrogate``
    the attack runs inside :func:`gcln_fast.attacks.adaptive_backward` (an adaptive attack)."""
    torch.manual_seed(seed)
    out = torch.empty_like(X)
    spans = batches(len(X), batch_size)
    for a, b in tqdm_if(spans, desc=desc, total=len(spans), enabled=progress):
        xb, yb = X[a:b].to(device), Y[a:b].to(device)
        if surrogate is None:
            out[a:b] = run_attack(attack, model, xb, yb, settings=settings).cpu()
        else:
            with adaptive_backward(model, surrogate):
                out[a:b] = run_attack(attack, model, xb, yb, settings=settings).cpu()
    return out


def gradient_stats(model, X, Y, *, batch_size, device) -> dict:
    """Finiteness and per-image zero fraction of the margin-loss input gradient through ``model``
    (the margin loss does not saturate the way cross-entropy does on confident models)."""
    finite, zero, total_abs, count = True, 0, 0.0, 0
    with frozen(model):
        for a, b in batches(len(X), batch_size):
            x = X[a:b].to(device).requires_grad_(True)
            with torch.enable_grad():
                loss = margin_loss(model(x), Y[a:b].to(device), False).sum()
                g = grad_or_zeros(loss, x)
            finite &= bool(torch.isfinite(g).all())
            g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
            zero += int((g.flatten(1).abs().amax(1) == 0).sum())
            total_abs += float(g.abs().mean(dim=(1, 2, 3)).sum())
            count += b - a
    return {"finite": finite, "zero_fraction": zero / max(count, 1), "mean_abs": total_abs / max(count, 1)}


def _attack_accuracy(attack, model, X, Y, *, settings, batch_size, device, seed, sweep, value, surrogate) -> float:
    """Accuracy of ``model`` under ``attack`` at one point (``value``) of a ``sweep``; the attack is
    seeded with ``(seed, sweep, value)``, the evaluation with ``(seed, sweep-eval, value)``."""
    kw = dict(batch_size=batch_size, device=device)
    adv = craft_all(
        attack, model, X, Y, settings=settings, seed=derive_seed(seed, sweep, value), surrogate=surrogate, **kw
    )
    return float(correct(model, adv, Y, seed=derive_seed(seed, f"{sweep}-eval", value), **kw).float().mean())


def eps_sweep(model, X, Y, *, settings, eps_list, batch_size, device, seed, surrogate=None) -> list[float]:
    """PGD accuracy at each eps (``settings.steps`` iterations, step ``max(step, 2.5 eps / steps)``)."""
    kw = dict(batch_size=batch_size, device=device, seed=seed, sweep="eps", surrogate=surrogate)
    steps = settings.steps
    return [
        _attack_accuracy(
            "pgd",
            model,
            X,
            Y,
            settings=settings.replace(eps=e, step=max(settings.step, 2.5 * e / steps)),
            value=e,
            **kw,
        )
        for e in eps_list
    ]


def iteration_sweep(model, X, Y, *, settings, iterations, batch_size, device, seed, surrogate=None) -> list[float]:
    """Accuracy on PGD's last iterate (eps and step of ``settings``) after each number of iterations: a
    diagnostic of the gradients (the best iterate could never do worse with more iterations)."""
    kw = dict(batch_size=batch_size, device=device, seed=seed, sweep="iters", surrogate=surrogate)
    return [
        _attack_accuracy("pgd", model, X, Y, settings=settings.replace(steps=it, best_iterate=False), value=it, **kw)
        for it in iterations
    ]
