"""Shared pieces of the attacks: argument checks, losses, projection, input gradients."""

from __future__ import annotations

import math
import numbers
import warnings

import torch
import torch.nn.functional as F
from torch import nn

# The attacks only need input gradients: freezing the model keeps parameter .grad untouched
# and skips the parameters' part of the graph.
from ..utils.modules import frozen  # noqa: F401 (re-exported for the attack modules)

# --------------------------------------------------------------------------- argument checks


def check_number(
    name: str, value, *, minimum: float | None = None, strict: bool = False, maximum: float | None = None
) -> float:
    """A finite real number (not a bool), optionally bounded; ``strict`` makes ``minimum`` exclusive."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {value:g}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum:g}, got {value:g}")
    return value


def check_int(name: str, value, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_inputs(model, x, y) -> None:
    """Model callable; x a (N, C, H, W) float tensor in [0, 1]; y (N,) integer labels on x's device."""
    if not callable(model):
        raise TypeError(f"model must be callable (an nn.Module), got {type(model).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point (N, C, H, W) tensor, got {x.dtype} of shape {tuple(x.shape)}")
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.dim() != 1 or y.shape[0] != x.shape[0] or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(
            f"y must be an integer (N,) tensor with N={x.shape[0]}, got {y.dtype} of shape {tuple(y.shape)}"
        )
    if y.device != x.device:
        raise ValueError(f"y is on {y.device} but x is on {x.device}")
    if x.numel() and (float(x.min()) < -1e-6 or float(x.max()) > 1 + 1e-6):
        raise ValueError(f"x must hold images in [0, 1], got range [{float(x.min()):.4g}, {float(x.max()):.4g}]")
    if isinstance(model, nn.Module) and any(
        m.training
        for m in model.modules()
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd))
    ):
        warnings.warn(
            "attacking a model in training mode (batch-norm statistics/dropout change); call model.eval() first",
            stacklevel=3,
        )


# --------------------------------------------------------------------------- geometry


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Clamp into the L-inf ball of radius ``eps`` around ``x`` and into [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def uniform_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """U[-1, 1) noise shaped like ``x``, from ``generator`` (any device) or the global RNG."""
    if generator is None:
        u = torch.rand(x.shape, device=x.device, dtype=x.dtype)
    else:
        u = torch.rand(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
    return u.mul_(2).sub_(1)


def linf_start(x: torch.Tensor, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    """AutoAttack's random start: ``x + eps * t / ||t||_inf`` with ``t ~ U[-1, 1)`` per image, so every
    start touches the surface of the eps-ball; clipped to [0, 1]."""
    t = uniform_like(x, generator)
    t = t / t.flatten(1).abs().amax(1).clamp_min(1e-12)[:, None, None, None]
    return project(x + eps * t, x, eps)


def bcast(mask: torch.Tensor) -> torch.Tensor:
    """A per-image (N,) mask shaped to broadcast over (N, C, H, W)."""
    return mask[:, None, None, None]


# --------------------------------------------------------------------------- losses (per sample, to be MAXIMISED)


def _others_max(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max_{j != y} z_j."""
    masked = logits.scatter(1, y[:, None], float("-inf"))
    return masked.max(1).values


def ce_loss(logits, y, targeted: bool):
    ce = F.cross_entropy(logits.float(), y, reduction="none")
    return -ce if targeted else ce


def margin_loss(logits, y, targeted: bool):
    """C&W margin: untargeted ``max_{j!=y} z_j - z_y``; targeted ``z_t - max_{j!=t} z_j`` (both maximised)."""
    logits = logits.float()
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = _others_max(logits, y)
    return z_y - other if targeted else other - z_y


def dlr_loss(logits, y, targeted: bool):
    """Difference of Logits Ratio (Croce & Hein 2020), to be maximised.

    Untargeted: ``-(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3)``.
    Targeted, when only the target class t is given (``y`` = t, a user's targeted attack):
    ``-(max_{j!=t} z_j - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``, the strongest non-target logit standing
    in for the unknown true class. APGD-T knows the true label and uses :func:`dlr_targeted_loss`.
    """
    logits = logits.float()
    k = logits.shape[1]
    if k < (4 if targeted else 3):
        raise ValueError(
            f"the DLR{'-targeted' if targeted else ''} loss needs at least {4 if targeted else 3} classes, got {k}"
        )
    zs = logits.sort(1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = _others_max(logits, y)
    if targeted:
        return -(other - z_y) / (zs[:, 0] - 0.5 * (zs[:, 2] + zs[:, 3]) + 1e-12)
    return -(z_y - other) / (zs[:, 0] - zs[:, 2] + 1e-12)


def dlr_targeted_loss(logits, y, target):
    """AutoAttack's targeted DLR loss, to be maximised: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``
    with the true label ``y`` and the target ``t`` (APGD-T)."""
    logits = logits.float()
    if logits.shape[1] < 4:
        raise ValueError(f"the DLR-targeted loss needs at least 4 classes, got {logits.shape[1]}")
    zs = logits.sort(1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (zs[:, 0] - 0.5 * (zs[:, 2] + zs[:, 3]) + 1e-12)


LOSSES = {"ce": ce_loss, "dlr": dlr_loss, "margin": margin_loss}


def get_loss(name: str):
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid losses: {sorted(LOSSES)}")
    return LOSSES[name]


def success(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    pred = logits.argmax(1)
    return pred == y if targeted else pred != y


# --------------------------------------------------------------------------- gradients


def grad_or_zeros(total: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
    """``d total / d inp``, or zeros where ``total`` does not depend on ``inp`` (a model that ignores
    its input, e.g. a collapsed defence): the attack then stalls instead of raising."""
    if not total.requires_grad:
        return torch.zeros_like(inp)
    (g,) = torch.autograd.grad(total, inp, allow_unused=True)
    return torch.zeros_like(inp) if g is None else g


def input_gradient(model, x_adv, objective, eot: int = 1):
    """Gradient of ``objective(logits).sum()`` (a per-sample loss) w.r.t. the input, averaged over
    ``eot`` forward passes (Expectation over Transformation, for randomised defences).

    Returns ``(grad, loss, logits)``: loss is the per-sample loss averaged over the EOT samples,
    logits those of the last sample. Nothing is left in any ``.grad``.
    """
    grad = torch.zeros_like(x_adv)
    loss_avg = None
    logits = None
    for _ in range(eot):
        xr = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xr)
            loss = objective(logits)
            g = grad_or_zeros(loss.sum(), xr)
        grad += g.detach()
        loss_avg = loss.detach() if loss_avg is None else loss_avg + loss.detach()
    if eot > 1:
        grad /= eot
        loss_avg = loss_avg / eot
    return grad, loss_avg, logits.detach()
