"""Threat models: which network an attack differentiates, and ``craft`` to run an attack under one."""

from __future__ import annotations

from torch import nn

from .apgd import apgd, apgd_t
from .cw import cw_l2
from .gradient import bim, fgsm, pgd
from .settings import AttackSettings, get_settings

THREAT_MODELS = ("oblivious", "adaptive", "transfer")
THREAT_MODEL_HELP = {
    "oblivious": "the attack sees only the classifier C; the defence is applied afterwards at evaluation",
    "adaptive": "BPDA white-box: gradients through nn.Sequential(defence, C) (QNT's straight-through backward "
    "+ the generator's own gradients)",
    "transfer": "black-box: crafted on a separately trained substitute model, then fed to the defended model",
}

ATTACKS = ("fgsm", "bim", "pgd", "cw", "apgd-ce", "apgd-dlr", "apgd-t")
ALIASES = {
    "fgs": "fgsm",
    "cw_l2": "cw",
    "cw-l2": "cw",
    "apgd": "apgd-ce",
    "apgd_ce": "apgd-ce",
    "apgd_dlr": "apgd-dlr",
    "apgd_t": "apgd-t",
}


def canonical_attack(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"attack must be a name (str), got {type(name).__name__}")
    key = ALIASES.get(name.lower(), name.lower())
    if key not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; valid attacks: {list(ATTACKS)} (aliases: {sorted(ALIASES)})")
    return key


def attack_model(threat_model: str, *, classifier, defence=None, substitute=None) -> nn.Module:
    """The network the attack differentiates under ``threat_model``."""
    if threat_model not in THREAT_MODELS:
        raise ValueError(f"unknown threat model {threat_model!r}; valid threat models: {list(THREAT_MODELS)}")
    if threat_model == "oblivious":
        if classifier is None:
            raise ValueError("the oblivious threat model needs the classifier")
        return classifier
    if threat_model == "adaptive":
        if classifier is None or defence is None:
            raise ValueError("the adaptive threat model needs the classifier and the defence (nn.Identity() for none)")
        model = nn.Sequential(defence, classifier)
        model.training = False  # the container only: the caller's modes of defence and classifier are kept
        return model
    if substitute is None:
        raise ValueError("the transfer threat model needs a substitute model (substitute=...)")
    return substitute


def run_attack(
    attack: str, model, x, y, *, settings: AttackSettings | str | None = None, targeted=False, generator=None
):
    """Run the named attack on ``model`` with the budgets of ``settings``."""
    s = get_settings(settings)
    name = canonical_attack(attack)
    common = dict(targeted=targeted, eot=s.eot, generator=generator)
    if name == "fgsm":
        return fgsm(model, x, y, eps=s.eps, **common)
    if name == "bim":
        return bim(model, x, y, eps=s.eps, step=s.step, steps=s.steps, **common)
    if name == "pgd":
        return pgd(
            model,
            x,
            y,
            eps=s.eps,
            step=s.step,
            steps=s.steps,
            random_start=s.random_start,
            restarts=s.restarts,
            **common,
        )
    if name == "cw":
        return cw_l2(
            model,
            x,
            y,
            c=s.cw_c,
            kappa=s.cw_kappa,
            steps=s.cw_steps,
            lr=s.cw_lr,
            search_steps=s.cw_search_steps,
            eps=s.eps if s.cw_linf_bound else None,
            targeted=targeted,
        )
    apgd_kw = dict(eps=s.eps, steps=s.apgd_steps, restarts=s.apgd_restarts, rho=s.apgd_rho, **common)
    if name == "apgd-ce":
        return apgd(model, x, y, loss="ce", **apgd_kw)
    if name == "apgd-dlr":
        return apgd(model, x, y, loss="dlr", **apgd_kw)
    # apgd-t: untargeted goal via targeted DLR runs; with targeted=True it is APGD-DLR-targeted toward y
    if targeted:
        return apgd(model, x, y, loss="dlr", **apgd_kw)
    apgd_kw.pop("targeted")
    return apgd_t(model, x, y, n_target_classes=s.n_target_classes, **apgd_kw)


def craft(
    threat_model,
    attack,
    x,
    y,
    *,
    classifier,
    defence=None,
    substitute=None,
    settings=None,
    targeted=False,
    generator=None,
):
    """Adversarial examples for ``attack`` under ``threat_model``.

    ``threat_model``: "oblivious" (gradients of ``classifier`` only), "adaptive" (BPDA through
    ``nn.Sequential(defence, classifier)``) or "transfer" (gradients of ``substitute``).
    ``attack``: one of :data:`ATTACKS` (or an alias such as "fgs"). ``y``: true labels, or target
    classes when ``targeted``. ``settings``: :class:`AttackSettings` or a preset name.
    The result is detached, within ``settings.eps`` of ``x`` in L-inf and in [0, 1]; feed it to the
    defended model ``nn.Sequential(defence, classifier)`` to score it.
    """
    canonical_attack(attack)
    model = attack_model(threat_model, classifier=classifier, defence=defence, substitute=substitute)
    return run_attack(attack, model, x, y, settings=settings, targeted=targeted, generator=generator)
