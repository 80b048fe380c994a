"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks"), L-inf, with CE / DLR losses, APGD-T (targeted DLR runs against the
most likely wrong classes, as in AutoAttack), restarts and EOT.

The schedule follows the reference implementation (fra31/auto-attack, ported by torchattacks 3.5.1):
integer checkpoint intervals, condition 2 disabled at the first checkpoint, random start on the
surface of the eps-ball, and a restart from the best point that keeps the momentum history.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import (
    bcast,
    check_inputs,
    check_int,
    check_number,
    dlr_targeted_loss,
    frozen,
    get_loss,
    input_gradient,
    linf_start,
    project,
    success,
)


def checkpoints(steps: int) -> list[int]:
    """Iterations after which APGD may halve its step size, with the reference's integer rounding:
    the first after ``max(int(0.22 * steps), 1)`` iterations, each later interval shorter by
    ``max(int(0.03 * steps), 1)`` down to ``max(int(0.06 * steps), 1)``."""
    k = max(int(0.22 * steps), 1)
    decrease, shortest = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    marks, at = [], k
    while at <= steps:
        marks.append(at)
        k = max(k - decrease, shortest)
        at += k
    return marks


class _Objective:
    """Per-sample loss and success test of one APGD run, on the images still under attack.

    ``labels`` are per-image tensors (true labels, targets) indexed along with the images."""

    def __init__(self, labels, loss, succeeded):
        self.labels, self.loss, self.succeeded = tuple(labels), loss, succeeded

    def subset(self, idx):
        return _Objective([t[idx] for t in self.labels], self.loss, self.succeeded)

    def __call__(self, logits):
        return self.loss(logits, *self.labels)

    def success(self, logits):
        return self.succeeded(logits, *self.labels)


def _step(x_adv, x_prev, grad, x, eta, eps, first):
    """One momentum step: a sign step of size ``eta``, then 0.75 of it plus 0.25 of the last move."""
    a = 1.0 if first else 0.75
    z = project(x_adv + eta * grad.sign(), x, eps)
    return project(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev), x, eps)


def _single_run(model, x, objective, *, eps, steps, rho, eot, generator):
    """One APGD run from a random start. Returns (result, success mask): per image the first
    successful iterate, or else the highest-loss point."""
    x_adv = linf_start(x, eps, generator)
    grad, loss, logits = input_gradient(model, x_adv, objective, eot)
    succ = objective.success(logits)
    x_found, x_best, best_loss, grad_best = x_adv.clone(), x_adv.clone(), loss.clone(), grad.clone()
    eta = torch.full((x.shape[0], 1, 1, 1), 2.0 * eps, device=x.device, dtype=x.dtype)
    x_prev, prev_loss = x_adv.clone(), loss.clone()
    n_increase = torch.zeros(x.shape[0], device=x.device)
    marks, last_mark = set(checkpoints(steps)), 0
    best_at_mark = best_loss.clone()
    reduced_at_mark = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)  # condition 2 off at first
    for k in range(steps):
        with torch.no_grad():
            x_prev, x_adv = x_adv, _step(x_adv, x_prev, grad, x, eta, eps, first=k == 0)
        grad, loss, logits = input_gradient(model, x_adv, objective, eot)
        with torch.no_grad():
            ok = objective.success(logits)
            x_found = torch.where(bcast(ok & ~succ), x_adv, x_found)
            succ |= ok
            n_increase += (loss > prev_loss).float()
            prev_loss = loss
            better = loss > best_loss
            best_loss = torch.where(better, loss, best_loss)
            x_best = torch.where(bcast(better), x_adv, x_best)
            grad_best = torch.where(bcast(better), grad, grad_best)
            if k + 1 not in marks:
                continue
            # condition 1: the loss increased in at most rho of the steps since the last checkpoint;
            # condition 2: the step was not halved last time and the best loss has not improved since.
            reduce = (n_increase <= rho * (k + 1 - last_mark)) | (~reduced_at_mark & (best_loss <= best_at_mark))
            eta = torch.where(bcast(reduce), eta / 2, eta)
            x_adv = torch.where(bcast(reduce), x_best, x_adv)  # restart from the best point
            grad = torch.where(bcast(reduce), grad_best, grad)
            reduced_at_mark, best_at_mark = reduce, best_loss.clone()
            n_increase.zero_()
            last_mark = k + 1
    return torch.where(bcast(succ), x_found, x_best), succ


def _run(model, x, objective, *, eps, steps, restarts, rho, eot, generator):
    """APGD with restarts on the images not yet successful; images successful on the clean input
    are returned unchanged. Returns (result, success mask)."""
    with torch.no_grad():
        done = objective.success(model(x))
    out = x.clone()
    for _ in range(restarts):
        idx = (~done).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        res, ok = _single_run(
            model, x[idx], objective.subset(idx), eps=eps, steps=steps, rho=rho, eot=eot, generator=generator
        )
        out[idx] = res
        done[idx] = ok
    return out, done


def _check(model, x, y, eps, steps, restarts, rho, eot):
    check_inputs(model, x, y)
    return (
        check_number("eps", eps, minimum=0.0),
        check_int("steps", steps),
        check_int("restarts", restarts),
        check_number("rho", rho, minimum=0.0, strict=True, maximum=1.0),
        check_int("eot", eot),
    )


def apgd(
    model,
    x,
    y,
    *,
    eps=8 / 255,
    steps=100,
    loss="ce",
    targeted=False,
    restarts=1,
    rho=0.75,
    eot=1,
    generator: torch.Generator | None = None,
):
    """APGD-CE / APGD-DLR (``loss="ce"`` / ``"dlr"``), L-inf.

    Step size starts at ``2 * eps`` and is halved at the checkpoints of :func:`checkpoints` when
    progress stalls (restarting from the best point); momentum 0.75. ``targeted=True`` (``y`` = target
    classes) steers toward ``y`` (with ``"dlr"`` the strongest other logit stands in for the unknown
    true class). Images that already succeed on the clean input are returned unchanged; each restart
    attacks only the images not yet successful. Returns, per image, the first successful iterate, or
    else the highest-loss point of the last restart.
    """
    eps, steps, restarts, rho, eot = _check(model, x, y, eps, steps, restarts, rho, eot)
    if loss not in ("ce", "dlr"):
        raise ValueError(f"apgd loss must be 'ce' or 'dlr', got {loss!r}")
    loss_fn = get_loss(loss)
    x = x.detach()
    if eps == 0:
        return x.clone()
    objective = _Objective([y], lambda z, t: loss_fn(z, t, targeted), lambda z, t: success(z, t, targeted))
    with frozen(model):
        if loss == "dlr":
            with torch.no_grad():
                objective.subset(slice(0, 1))(model(x[:1]))  # class-count check with a clear error
        out, _ = _run(
            model, x, objective, eps=eps, steps=steps, restarts=restarts, rho=rho, eot=eot, generator=generator
        )
    return out


def _misclassified(logits, y, _target):
    return logits.argmax(1) != y


def apgd_t(
    model,
    x,
    y,
    *,
    eps=8 / 255,
    steps=100,
    n_target_classes=9,
    restarts=1,
    rho=0.75,
    eot=1,
    generator: torch.Generator | None = None,
):
    """APGD-T as in AutoAttack: the untargeted goal (``y`` = true labels) reached by APGD runs on the
    targeted DLR loss ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` against each image's
    ``n_target_classes`` most likely wrong classes in turn (on the images not yet misclassified); any
    iterate classified as anything but ``y`` counts as a success."""
    eps, steps, restarts, rho, eot = _check(model, x, y, eps, steps, restarts, rho, eot)
    n_target_classes = check_int("n_target_classes", n_target_classes)
    x = x.detach()
    if eps == 0:
        return x.clone()
    with torch.no_grad(), frozen(model):
        logits = model(x)
    k = logits.shape[1]
    order = logits.masked_fill(F.one_hot(y, k).bool(), float("-inf")).argsort(1, descending=True)
    done = logits.argmax(1) != y
    out = x.clone()
    with frozen(model):
        for j in range(min(n_target_classes, k - 1)):
            idx = (~done).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            objective = _Objective([y[idx], order[idx, j]], dlr_targeted_loss, _misclassified)
            res, ok = _run(
                model, x[idx], objective, eps=eps, steps=steps, restarts=restarts, rho=rho, eot=eot, generator=generator
            )
            out[idx] = torch.where(bcast(ok), res, out[idx])
            done[idx] = ok
    return out
