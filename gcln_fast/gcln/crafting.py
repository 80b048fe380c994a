"""The adversarial examples G and D are trained on: an attack mix, crafted obliviously (on C) or
adaptively (through the current G and C, BPDA), with a schedule from the one to the other."""

from __future__ import annotations

import contextlib
import inspect

import torch
from torch import nn

from .. import attacks
from ..utils.modules import frozen

# The attacks G and D are trained on: each batch is split evenly between them.
# Keyword names follow gcln_fast.attacks (fgsm/pgd(model, x, y, **settings)).
# Budgets span 4/255 .. 12/255 (12/255 = 0.05 is the SVHN / embedded-set budget of the paper).
DEFAULT_ATTACK_MIX = (
    {"attack": "pgd", "eps": 8 / 255, "step": 2 / 255, "steps": 7},
    {"attack": "pgd", "eps": 12 / 255, "step": 3 / 255, "steps": 7},
    {"attack": "pgd", "eps": 4 / 255, "step": 1 / 255, "steps": 7},
    {"attack": "fgsm", "eps": 12 / 255},
)


def attack_mix_around(eps: float, *, steps: int = 7, spread=(1.0, 1.5, 0.5), fgsm: bool = True) -> tuple[dict, ...]:
    """A training mix around an evaluation budget ``eps``: PGD at ``eps`` times each factor of
    ``spread`` (step a quarter of its eps, ``steps`` iterations) and FGSM at the largest eps.
    ``spread=(1.0,), fgsm=False`` is PGD adversarial training's attack alone (Madry et al.)."""
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    mix = [{"attack": "pgd", "eps": f * eps, "step": f * eps / 4, "steps": int(steps)} for f in spread]
    if fgsm:
        mix.append({"attack": "fgsm", "eps": max(spread) * eps})
    return tuple(mix)


def resolve_attacks(mix, attack_fns=None) -> dict:
    """``{name: fn}`` for every attack of ``mix``; ``attack_fns`` overrides ``gcln_fast.attacks``."""
    fns = dict(attack_fns or {})
    for spec in mix:
        if "attack" not in spec:
            raise ValueError(f"attack_mix entries need an 'attack' name, got {spec!r}")
        fns.setdefault(spec["attack"], getattr(attacks, spec["attack"]))
    return fns


def craft_mix(model, x, y, mix, fns, gen: torch.Generator) -> torch.Tensor:
    """Split the batch at random between the attacks of ``mix``; each part is attacked on ``model``."""
    out = x.detach().clone()
    if x.shape[0] == 0:
        return out
    parts = (
        [torch.arange(x.shape[0])] if len(mix) == 1 else list(torch.randperm(x.shape[0], generator=gen).chunk(len(mix)))
    )
    with torch.enable_grad():
        for spec, idx in zip(mix, parts, strict=False):
            if idx.numel() == 0:
                continue
            idx = idx.to(x.device)
            kwargs = {k: v for k, v in spec.items() if k != "attack"}
            if "best_iterate" in inspect.signature(fns[spec["attack"]]).parameters:
                kwargs.setdefault("best_iterate", False)  # training wants the strongest (last) iterate
            out[idx] = fns[spec["attack"]](model, x[idx], y[idx], **kwargs).detach().to(out.dtype)
    return out.clamp_(0, 1)


def scale_mix(mix, factor: float) -> tuple[dict, ...]:
    """``mix`` with every radius (``eps``) and step size (``step``) multiplied by ``factor`` in [0, 1]:
    the eps ramp of adversarial training (Madry-style training from a standard model collapses
    without one; see :mod:`gcln_fast.training.adversarial`)."""
    if not 0 <= factor <= 1:
        raise ValueError(f"factor must be in [0, 1], got {factor}")
    if factor == 1:
        return tuple(mix)
    return tuple({k: (v * factor if k in ("eps", "step") else v) for k, v in spec.items()} for spec in mix)


def adaptive_fraction(step: int, total: int, final: float, ramp: float) -> float:
    """Share of a batch crafted through G at G step ``step`` of ``total``: 0 at the start, rising
    linearly to ``final`` over the first ``ramp`` of the steps (``ramp=0``: ``final`` throughout)."""
    if final <= 0:
        return 0.0
    if ramp <= 0 or total <= 0:
        return float(final)
    return float(final) * min(1.0, step / (ramp * total))


@contextlib.contextmanager
def _attacker_view(G: nn.Module):
    """G as the adaptive attacker differentiates it: frozen, output clamp straight-through (BPDA)."""
    old = getattr(G, "straight_through_clamp", None)
    if old is not None:
        G.straight_through_clamp = True
    try:
        with frozen(G):
            yield
    finally:
        if old is not None:
            G.straight_through_clamp = old


def craft_batch(C, G, x, y, mix, fns, gen, fraction: float) -> tuple[torch.Tensor, int]:
    """Adversarial examples for one batch: ``round(fraction * n)`` images (chosen at random) crafted
    through ``nn.Sequential(G, C)`` (adaptive, BPDA through the QNT layer and G's own gradients),
    the rest on C alone (oblivious). Returns (x_adv, number crafted adaptively)."""
    n = x.shape[0]
    k = int(round(max(0.0, min(1.0, fraction)) * n))
    if k == 0:
        return craft_mix(C, x, y, mix, fns, gen), 0
    perm = torch.randperm(n, generator=gen).to(x.device)
    ad, ob = perm[:k], perm[k:]
    out = x.detach().clone()
    defended = nn.Sequential(G, C)
    defended.training = False  # the container only: G's and C's own modes are kept
    with _attacker_view(G):
        out[ad] = craft_mix(defended, x[ad], y[ad], mix, fns, gen)
    if ob.numel():
        out[ob] = craft_mix(C, x[ob], y[ob], mix, fns, gen)
    return out, k
