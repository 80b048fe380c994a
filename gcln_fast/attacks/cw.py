"""Carlini & Wagner (2017) attacks: Adam on a tanh-space variable and the C&W margin loss.

Two forms, chosen by ``eps``:

* ``eps=None``: C&W-L2, the minimum-norm attack: ``||x' - x||_2^2 + c * f(x')`` over
  ``x' = (tanh(w) + 1) / 2``, with a binary search over ``c`` per image.
* ``eps`` given: the C&W loss in the L-inf box, a fixed-budget attack comparable with PGD: ``f(x')``
  alone over ``x' = lo + (hi - lo) (tanh(w) + 1) / 2`` with ``[lo, hi] = [x - eps, x + eps] ∩ [0, 1]``,
  so the box holds by construction and no clipping zeroes a gradient.
"""

from __future__ import annotations

import torch

from ._common import bcast, check_inputs, check_int, check_number, frozen, grad_or_zeros, margin_loss

_W_LIMIT = 1 - 1e-4  # keeps atanh finite at 0 and 1 (C&W-L2)
# In the eps-box a pixel on a face (x at 0 or 1) starts 0.5% of the box width inside it, where
# tanh' is 0.02 rather than 2e-4: Adam then needs tens of steps, not hundreds, to move it inward.
_BOX_W_LIMIT = 0.99


def _cw_f(logits, y, targeted, kappa):
    """(the C&W objective ``max(Z_y - max_{j!=y} Z_j, -kappa)``, to be minimised (targeted: toward y);
    the margin ``max_{j!=y} Z_j - Z_y``, detached). Success: the margin reached ``kappa`` (> 0 for 0)."""
    margin = margin_loss(logits, y, targeted)
    return (-margin).clamp(min=-kappa), margin.detach()


def _adam_round(model, x, y, image, w0, *, c, kappa, steps, lr, targeted, l2):
    """``steps`` Adam steps on ``w`` from ``w0``; returns (best image, its L2 distance, success mask):
    per image the successful iterate of smallest L2 (``l2``) or of largest margin, else the iterate of
    largest margin."""
    dims = tuple(range(1, x.dim()))
    w = w0.clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    best, best_score = x.clone(), torch.full((x.shape[0],), float("inf"), device=x.device)
    for _ in range(steps):
        with torch.enable_grad():
            xn = image(w)
            f, margin = _cw_f(model(xn), y, targeted, kappa)
            dist = (xn - x).pow(2).sum(dims)
            total = (dist + c * f).sum() if l2 else f.sum()
            g = grad_or_zeros(total, w)
        with torch.no_grad():  # the iterate whose logits were just computed, before the step
            ok = margin >= kappa if kappa > 0 else margin > 0
            score = dist.detach() if l2 else -margin
            better = (ok & ~found) | ((ok == found) & (score < best_score))
            best_score = torch.where(better, score, best_score)
            best = torch.where(bcast(better), xn.detach(), best)
            found |= ok
        opt.zero_grad(set_to_none=True)
        w.grad = g
        opt.step()
    w.grad = None
    return best, (best - x).pow(2).sum(dims), found


def _l2_search(model, x, y, *, c, kappa, steps, lr, search_steps, targeted):
    """C&W-L2 with ``search_steps`` rounds of binary search on ``c`` per image (success: smaller ``c``;
    failure: larger, x10 until an upper bound is known). Keeps the smallest successful perturbation."""
    n = x.shape[0]
    w0 = torch.atanh((x * 2 - 1).clamp(-_W_LIMIT, _W_LIMIT))
    c_now = torch.full((n,), c, device=x.device)
    lower, upper = torch.zeros(n, device=x.device), torch.full((n,), 1e10, device=x.device)
    best, best_l2 = x.clone(), torch.full((n,), float("inf"), device=x.device)
    for _ in range(search_steps):
        res, l2, found = _adam_round(
            model,
            x,
            y,
            lambda w: (torch.tanh(w) + 1) / 2,
            w0,
            c=c_now,
            kappa=kappa,
            steps=steps,
            lr=lr,
            targeted=targeted,
            l2=True,
        )
        better = found & (l2 < best_l2)
        best_l2 = torch.where(better, l2, best_l2)
        best = torch.where(bcast(better), res, best)
        upper = torch.where(found, torch.minimum(upper, c_now), upper)
        lower = torch.where(found, lower, torch.maximum(lower, c_now))
        c_now = torch.where(upper < 1e9, (lower + upper) / 2, c_now * 10)
    return best


def _linf_box(model, x, y, *, eps, kappa, steps, lr, targeted):
    """The C&W loss inside the L-inf box, parametrised so that ``w = w0`` is ``x`` (pixels on a face of
    the box: next to it)."""
    lo, hi = (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)
    width = (hi - lo).clamp_min(1e-12)
    w0 = torch.atanh((2 * (x - lo) / width - 1).clamp(-_BOX_W_LIMIT, _BOX_W_LIMIT))
    kw = dict(c=1.0, kappa=kappa, steps=steps, lr=lr, targeted=targeted, l2=False)
    best, _, _ = _adam_round(model, x, y, lambda w: lo + width * (torch.tanh(w) + 1) / 2, w0, **kw)
    return torch.min(torch.max(best, lo), hi)


def cw_l2(
    model,
    x,
    y,
    *,
    c=1e-3,
    kappa=0.0,
    steps=100,
    lr=None,
    search_steps=5,
    eps=None,
    targeted=False,
):
    """C&W attack; ``y``: true labels, or target classes with ``targeted=True``.

    ``eps=None``: C&W-L2 (minimum norm): minimise ``||x' - x||_2^2 + c * max(Z_y - max_{j!=y} Z_j, -kappa)``
    over ``x' = (tanh(w) + 1) / 2`` with ``steps`` Adam steps (``lr`` default 0.01) per round and
    ``search_steps`` rounds of binary search on ``c`` (starting at ``c``). Returns, per image, the
    successful example of smallest L2 norm, or ``x`` where no iterate succeeded.

    ``eps`` given: minimise the margin term alone over the L-inf box ``[x - eps, x + eps] ∩ [0, 1]`` in
    tanh space (``lr`` default 0.1: there ``w = ±1`` spans 76% of the box; ``c`` and ``search_steps``
    do not apply). Returns, per image, the iterate of largest margin (the most confident success).
    """
    check_inputs(model, x, y)
    c = check_number("c", c, minimum=0.0, strict=True)
    kappa = check_number("kappa", kappa, minimum=0.0)
    steps = check_int("steps", steps)
    search_steps = check_int("search_steps", search_steps)
    lr = check_number("lr", (0.01 if eps is None else 0.1) if lr is None else lr, minimum=0.0, strict=True)
    x = x.detach()
    with frozen(model):
        if eps is None:
            return _l2_search(
                model, x, y, c=c, kappa=kappa, steps=steps, lr=lr, search_steps=search_steps, targeted=targeted
            ).clamp_(0.0, 1.0)
        eps = check_number("eps", eps, minimum=0.0)
        if eps == 0:
            return x.clone()
        return _linf_box(model, x, y, eps=eps, kappa=kappa, steps=steps, lr=lr, targeted=targeted)
