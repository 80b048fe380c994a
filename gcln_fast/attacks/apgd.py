"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks"), L-inf, with CE / DLR / DLR-targeted losses, restarts and EOT."""

from __future__ import annotations

import math

import torch

from ._common import (
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


def checkpoints(steps: int) -> list[int]:
    """Iterations ``w_j = ceil(p_j * steps)`` at which APGD may halve its step size:
    ``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    marks = {math.ceil(round(pj * steps, 6)) for pj in p[1:]}
    return sorted(m for m in marks if 0 < m <= steps)


def _bcast(mask):
    return mask[:, None, None, None]


def _single_run(model, x, y, *, eps, steps, loss_fn, targeted, rho, momentum, eot, generator):
    """One APGD run from a random start. Returns (x_result, success mask, best loss)."""
    n = x.shape[0]
    x_adv = project(x + eps * uniform_like(x, generator), x, eps)
    grad, loss, logits = input_gradient(model, x_adv, y, loss_fn, targeted, eot)
    succ = success(logits, y, targeted)
    x_found = x_adv.clone()  # the first iterate that succeeded, per image
    best_loss, x_best, grad_best = loss.clone(), x_adv.clone(), grad.clone()
    eta = torch.full((n, 1, 1, 1), 2.0 * eps, device=x.device, dtype=x.dtype)
    x_prev = x_adv.clone()
    prev_loss = loss.clone()
    n_increase = torch.zeros(n, device=x.device)
    marks = set(checkpoints(steps))
    last_mark = 0
    best_at_mark = best_loss.clone()
    reduced_at_mark = torch.zeros(n, dtype=torch.bool, device=x.device)
    for k in range(steps):
        with torch.no_grad():
            a = momentum if k > 0 else 1.0
            z = project(x_adv + eta * grad.sign(), x, eps)
            x_new = project(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev), x, eps)
            x_prev, x_adv = x_adv, x_new
        grad, loss, logits = input_gradient(model, x_adv, y, loss_fn, targeted, eot)
        with torch.no_grad():
            ok = success(logits, y, targeted)
            x_found = torch.where(_bcast(ok & ~succ), x_adv, x_found)
            succ |= ok
            n_increase += (loss > prev_loss).float()
            prev_loss = loss
            better = loss > best_loss
            best_loss = torch.where(better, loss, best_loss)
            x_best = torch.where(_bcast(better), x_adv, x_best)
            grad_best = torch.where(_bcast(better), grad, grad_best)
            if k + 1 in marks:
                # condition 1: the loss increased in fewer than rho of the steps since the last checkpoint;
                # condition 2: the step was not halved last time and the best loss has not improved since.
                cond1 = n_increase < rho * (k + 1 - last_mark)
                cond2 = ~reduced_at_mark & (best_loss <= best_at_mark)
                reduce = cond1 | cond2
                eta = torch.where(_bcast(reduce), eta / 2, eta)
                x_adv = torch.where(_bcast(reduce), x_best, x_adv)  # restart from the best point
                x_prev = torch.where(_bcast(reduce), x_best, x_prev)
                grad = torch.where(_bcast(reduce), grad_best, grad)
                reduced_at_mark = reduce
                best_at_mark = best_loss.clone()
                n_increase.zero_()
                last_mark = k + 1
    return torch.where(_bcast(succ), x_found, x_best), succ, best_loss


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
    momentum=0.75,
    eot=1,
    generator: torch.Generator | None = None,
):
    """APGD-CE / APGD-DLR (``loss="ce"`` / ``"dlr"``), L-inf.

    Step size starts at ``2 * eps`` and is halved at the checkpoints of :func:`checkpoints` when
    progress stalls (restarting from the best point); momentum ``0.75``. ``targeted=True`` (``y`` =
    target classes) with ``loss="dlr"`` is APGD-DLR-targeted. Images that already succeed on the clean
    input are returned unchanged; each restart attacks only the images not yet successful. Returns, per
    image, the first successful iterate, or else the highest-loss point of the last restart.
    """
    check_inputs(model, x, y)
    eps = check_number("eps", eps, minimum=0.0)
    steps = check_int("steps", steps)
    restarts = check_int("restarts", restarts)
    rho = check_number("rho", rho, minimum=0.0, strict=True, maximum=1.0)
    momentum = check_number("momentum", momentum, minimum=0.0, maximum=1.0)
    eot = check_int("eot", eot)
    loss_fn = get_loss(loss)
    if loss == "margin":
        raise ValueError("apgd loss must be 'ce' or 'dlr'")
    x = x.detach()
    if eps == 0:
        return x.clone()
    with frozen(model):
        with torch.no_grad():
            logits = model(x)
        if loss == "dlr":
            loss_fn(logits[:1], y[:1], targeted)  # class-count check with a clear error
        done = success(logits, y, targeted)
        out = x.clone()
        for _ in range(restarts):
            idx = (~done).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            res, ok, _ = _single_run(
                model,
                x[idx],
                y[idx],
                eps=eps,
                steps=steps,
                loss_fn=loss_fn,
                targeted=targeted,
                rho=rho,
                momentum=momentum,
                eot=eot,
                generator=generator,
            )
            out[idx] = res
            done[idx] = ok
    return out


def apgd_t(
    model,
    x,
    y,
    *,
    eps=8 / 255,
    steps=100,
    n_target_classes=3,
    restarts=1,
    rho=0.75,
    momentum=0.75,
    eot=1,
    generator: torch.Generator | None = None,
):
    """APGD-T: the untargeted goal (``y`` = true labels) reached by targeted APGD-DLR runs against
    each image's ``n_target_classes`` most likely wrong classes in turn (as in AutoAttack)."""
    check_inputs(model, x, y)
    n_target_classes = check_int("n_target_classes", n_target_classes)
    x = x.detach()
    with torch.no_grad(), frozen(model):
        logits = model(x)
    k = logits.shape[1]
    n_target_classes = min(n_target_classes, k - 1)
    order = logits.masked_fill(torch.nn.functional.one_hot(y, k).bool(), float("-inf")).argsort(1, descending=True)
    done = logits.argmax(1) != y
    out = x.clone()
    for j in range(n_target_classes):
        idx = (~done).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        target = order[idx, j]
        res = apgd(
            model,
            x[idx],
            target,
            eps=eps,
            steps=steps,
            loss="dlr",
            targeted=True,
            restarts=restarts,
            rho=rho,
            momentum=momentum,
            eot=eot,
            generator=generator,
        )
        with torch.no_grad(), frozen(model):
            ok = model(res).argmax(1) != y[idx]
        out[idx] = torch.where(_bcast(ok), res, out[idx])
        done[idx] = ok
    return out
