"""Square attack (Andriushchenko et al. 2020, "Square Attack: a query-efficient black-box adversarial
attack via random search"), L-inf, with AutoAttack's schedule of the square size.

Gradient-free: it only queries the model's logits, so a defence that masks or shatters gradients
cannot hide from it. It follows the reference implementation (fra31/auto-attack, ported by
torchattacks 3.5.1) step for step, including the order of its random draws, so that with the same
seed and inputs the two give the same examples up to float rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._common import bcast, check_inputs, check_int, check_number, frozen, project

# (fraction of the budget reached, divisor of p_init): the square shrinks as the attack goes on
_P_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))


def p_selection(p_init: float, it: int, queries: int) -> float:
    """Fraction of the pixels the square covers at iteration ``it`` (AutoAttack's schedule, rescaled
    from its 10,000-query design to ``queries``)."""
    it = int(it / queries * 10000)
    for limit, divisor in _P_SCHEDULE:
        if it <= limit:
            return p_init / divisor
    return p_init / 512


def _rand(shape, generator, device):
    # drawn on the generator's device (the CPU for the global RNG, as the reference does), so the
    # random sequence does not depend on where the model runs
    if generator is None:
        return torch.rand(shape).to(device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _signs(shape, generator, device):
    return torch.sign(2 * _rand(shape, generator, device) - 1)


def _margin_and_loss(model, x, y, *, targeted, loss, eot):
    """(margin, loss), both to be minimised; margin <= 0 means success. Averaged over ``eot`` passes."""
    margin = objective = 0.0
    for _ in range(eot):
        logits = model(x).float()
        z_y = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
        m = other - z_y if targeted else z_y - other
        ce = F.cross_entropy(logits, y, reduction="none")
        margin = margin + m
        objective = objective + ((ce if targeted else -ce) if loss == "ce" else m)
    return margin / eot, objective / eot


def _single_run(model, x, y, *, eps, queries, p_init, targeted, loss, eot, generator):
    """One random-search run; returns the best image per input (successful ones stop early)."""
    n, c, h, w = x.shape
    score = lambda v, t: _margin_and_loss(model, v, t, targeted=targeted, loss=loss, eot=eot)  # noqa: E731
    x_best = (x + eps * _signs((n, c, 1, w), generator, x.device)).clamp(0.0, 1.0)
    margin_min, loss_min = score(x_best, y)
    for i in range(queries):
        idx = (margin_min > 0).nonzero().flatten()
        if idx.numel() == 0:
            break
        x_cur, x_best_cur, y_cur = x[idx], x_best[idx], y[idx]
        s = min(max(int(round(math.sqrt(p_selection(p_init, i, queries) * h * w))), 1), h, w)
        vh = int((h - s) * _rand([1], generator, x.device))
        vw = int((w - s) * _rand([1], generator, x.device))
        delta = torch.zeros(c, h, w, device=x.device, dtype=x.dtype)
        delta[:, vh : vh + s, vw : vw + s] = 2.0 * eps * _signs((c, 1, 1), generator, x.device)
        x_new = project(x_best_cur + delta, x_cur, eps)
        margin, loss_new = score(x_new, y_cur)
        improved = loss_new < loss_min[idx]
        loss_min[idx] = torch.where(improved, loss_new, loss_min[idx])
        improved |= margin <= 0  # a success is always kept
        margin_min[idx] = torch.where(improved, margin, margin_min[idx])
        x_best[idx] = torch.where(bcast(improved), x_new, x_best_cur)
    return x_best


def square(
    model,
    x,
    y,
    *,
    eps=8 / 255,
    queries=5000,
    p_init=0.8,
    restarts=1,
    targeted=False,
    loss="margin",
    eot=1,
    generator: torch.Generator | None = None,
):
    """Square attack, L-inf: random search over vertical-stripe starts and square patches of
    ``±2 eps`` (clipped to the eps-ball and [0, 1]) whose side follows AutoAttack's schedule of
    ``p_init``; a patch is kept when it lowers the margin (``loss="margin"``) or cross-entropy
    (``"ce"``) objective. ``queries``: model queries per image and restart (AutoAttack: 5000).
    ``eot`` averages the objective over that many forward passes (randomised defences).

    Images already misclassified (or at their target) are returned unchanged; each restart attacks
    the images not yet successful. ``generator`` drives the random search (the global CPU RNG if None).
    """
    check_inputs(model, x, y)
    eps = check_number("eps", eps, minimum=0.0)
    queries = check_int("queries", queries)
    p_init = check_number("p_init", p_init, minimum=0.0, strict=True, maximum=1.0)
    restarts = check_int("restarts", restarts)
    eot = check_int("eot", eot)
    if loss not in ("margin", "ce"):
        raise ValueError(f"square loss must be 'margin' or 'ce', got {loss!r}")
    x = x.detach()
    if eps == 0:
        return x.clone()
    kw = dict(eps=eps, queries=queries, p_init=p_init, targeted=targeted, loss=loss, eot=eot, generator=generator)
    with torch.no_grad(), frozen(model):
        pred = model(x).argmax(1)
        robust = pred != y if targeted else pred == y
        out = x.clone()
        for _ in range(restarts):
            idx = robust.nonzero().flatten()
            if idx.numel() == 0:
                break
            adv = _single_run(model, x[idx], y[idx], **kw)
            pred = model(adv).argmax(1)
            fooled = pred == y[idx] if targeted else pred != y[idx]
            out[idx[fooled]] = adv[fooled]
            robust[idx[fooled]] = False
    return out
