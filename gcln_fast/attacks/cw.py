"""Carlini & Wagner L2 attack (2017): Adam on the tanh-space variable, margin loss, binary search over c."""

from __future__ import annotations

import torch

from ._common import check_inputs, check_int, check_number, frozen, margin_loss, project


def cw_l2(
    model,
    x,
    y,
    *,
    c=1.0,
    kappa=0.0,
    steps=50,
    lr=0.01,
    search_steps=1,
    eps=None,
    targeted=False,
):
    """C&W-L2: minimise ``||x' - x||_2^2 + c * max(Z_y - max_{j!=y} Z_j, -kappa)`` over
    ``x' = (tanh(w) + 1) / 2`` with Adam (targeted: ``max(max_{j!=t} Z_j - Z_t, -kappa)``).

    ``search_steps`` rounds of binary search adjust ``c`` per image (1 = fixed ``c``).
    ``eps`` (optional) additionally bounds the result to an L-inf ball of that radius, which is how
    the evaluation compares it with the L-inf attacks at the same budget; ``None`` = plain L2 attack.
    Returns, per image, the successful example of smallest L2 norm, or ``x`` itself where no
    iterate succeeded.
    """
    check_inputs(model, x, y)
    c = check_number("c", c, minimum=0.0, strict=True)
    kappa = check_number("kappa", kappa, minimum=0.0)
    steps = check_int("steps", steps)
    lr = check_number("lr", lr, minimum=0.0, strict=True)
    search_steps = check_int("search_steps", search_steps)
    if eps is not None:
        eps = check_number("eps", eps, minimum=0.0)
        if eps == 0:
            return x.detach().clone()
    x = x.detach()
    n = x.shape[0]
    dims = tuple(range(1, x.dim()))
    w0 = torch.atanh((x * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
    c_now = torch.full((n,), c, device=x.device)
    lower = torch.zeros(n, device=x.device)
    upper = torch.full((n,), 1e10, device=x.device)
    best_l2 = torch.full((n,), float("inf"), device=x.device)
    best = x.clone()

    def image(w):
        xn = (torch.tanh(w) + 1) / 2
        return torch.min(torch.max(xn, x - eps), x + eps) if eps is not None else xn

    with frozen(model):
        for _ in range(search_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=lr)
            found = torch.zeros(n, dtype=torch.bool, device=x.device)
            for _ in range(steps):
                with torch.enable_grad():
                    xn = image(w)
                    logits = model(xn)
                    f = (-margin_loss(logits, y, targeted)).clamp(min=-kappa)  # the C&W f(.)
                    l2 = (xn - x).pow(2).sum(dims)
                    total = (l2 + c_now * f).sum()
                    (g,) = torch.autograd.grad(total, w)
                opt.zero_grad(set_to_none=True)
                w.grad = g
                opt.step()
                with torch.no_grad():
                    # success of this iterate (its logits were computed before the step)
                    ok = (f <= -kappa) if kappa > 0 else (-margin_loss(logits, y, targeted) < 0)
                    better = ok & (l2.detach() < best_l2)
                    best_l2 = torch.where(better, l2.detach(), best_l2)
                    best = torch.where(better[:, None, None, None], xn.detach(), best)
                    found |= ok
            w.grad = None
            # binary search on c (Carlini & Wagner): success -> smaller c, failure -> larger c
            upper = torch.where(found, torch.minimum(upper, c_now), upper)
            lower = torch.where(found, lower, torch.maximum(lower, c_now))
            c_now = torch.where(upper < 1e9, (lower + upper) / 2, c_now * 10)
    if eps is not None:
        best = project(best, x, eps)
    return best.clamp_(0.0, 1.0).detach()
