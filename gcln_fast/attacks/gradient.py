"""L-inf sign-gradient attacks: FGSM (FGS), BIM and PGD with random start."""

from __future__ import annotations

import torch

from ._common import (
    bcast,
    check_inputs,
    check_int,
    check_number,
    frozen,
    get_loss,
    input_gradient,
    project,
    success,
    uniform_like,
)


def fgsm(model, x, y, *, eps=8 / 255, targeted=False, eot=1, loss="ce", generator=None):
    """Fast Gradient Sign (Goodfellow et al. 2014): ``x + eps * sign(grad)`` (minus for targeted).

    ``y`` holds true labels (untargeted) or target classes (``targeted=True``). Returns a detached
    tensor inside the eps-ball and [0, 1]. ``generator`` is accepted for a uniform interface (unused).
    """
    check_inputs(model, x, y)
    eps = check_number("eps", eps, minimum=0.0)
    eot = check_int("eot", eot)
    loss_fn = get_loss(loss)
    x = x.detach()
    if eps == 0:
        return x.clone()
    with frozen(model):
        grad, _, _ = input_gradient(model, x, lambda z: loss_fn(z, y, targeted), eot)
    return project(x + eps * grad.sign(), x, eps)


def _iterate(model, x, y, x_adv, *, eps, step, steps, targeted, eot, loss_fn, best_iterate):
    """``steps`` projected sign steps from ``x_adv``. Returns (result, success mask): with
    ``best_iterate``, per image the first iterate that succeeded (the start included), else the last."""
    found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    x_found = x_adv
    for _ in range(steps):
        grad, _, logits = input_gradient(model, x_adv, lambda z: loss_fn(z, y, targeted), eot)
        if best_iterate:  # the logits are those of x_adv, before the step
            new = success(logits, y, targeted) & ~found
            x_found = torch.where(bcast(new), x_adv, x_found)
            found |= new
        x_adv = project(x_adv + step * grad.sign(), x, eps)
    return torch.where(bcast(found), x_found, x_adv), found


def bim(
    model,
    x,
    y,
    *,
    eps=8 / 255,
    step=1 / 255,
    steps=10,
    targeted=False,
    eot=1,
    loss="ce",
    best_iterate=True,
    generator=None,
):
    """Basic Iterative Method (Kurakin et al. 2016): ``steps`` FGSM steps of size ``step`` from ``x``,
    each projected into the eps-ball and [0, 1] (``generator``: unused). It is :func:`pgd` without the
    random start; ``best_iterate`` as there."""
    return pgd(
        model,
        x,
        y,
        eps=eps,
        step=step,
        steps=steps,
        targeted=targeted,
        random_start=False,
        eot=eot,
        loss=loss,
        best_iterate=best_iterate,
    )


def pgd(
    model,
    x,
    y,
    *,
    eps=8 / 255,
    step=1 / 255,
    steps=10,
    targeted=False,
    random_start=True,
    restarts=1,
    eot=1,
    loss="ce",
    best_iterate=True,
    generator: torch.Generator | None = None,
):
    """Projected Gradient Descent (Madry et al. 2018): uniform random start in the eps-ball, then
    ``steps`` sign-gradient steps of size ``step`` with projection. With ``best_iterate`` (the default)
    any iterate that fools the model counts: an image gets the first such iterate, else the last one
    (``best_iterate=False``: always the last iterate, Madry et al.'s PGD). With ``restarts > 1`` an
    image keeps the first restart that fools the model.

    ``eot`` averages each gradient over that many forward/backward passes (Expectation over
    Transformation, for randomised defences). ``generator`` drives the random start (global RNG if None).
    """
    check_inputs(model, x, y)
    eps = check_number("eps", eps, minimum=0.0)
    step = check_number("step", step, minimum=0.0, strict=True)
    steps = check_int("steps", steps)
    restarts = check_int("restarts", restarts)
    eot = check_int("eot", eot)
    loss_fn = get_loss(loss)
    x = x.detach()
    if eps == 0:
        return x.clone()
    kw = dict(eps=eps, step=step, steps=steps, targeted=targeted, eot=eot, loss_fn=loss_fn, best_iterate=best_iterate)
    with frozen(model):
        out = done = None
        for _ in range(restarts):
            start = project(x + eps * uniform_like(x, generator), x, eps) if random_start else x.clone()
            x_adv, ok = _iterate(model, x, y, start, **kw)
            if restarts == 1:
                return x_adv
            with torch.no_grad():
                ok |= success(model(x_adv), y, targeted)
            if out is None:
                out, done = x_adv, ok
            else:
                out = torch.where(bcast(ok & ~done), x_adv, out)
                done = done | ok
            if bool(done.all()):
                break
        return out
