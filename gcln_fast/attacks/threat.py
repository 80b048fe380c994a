"""Threat models: which network an attack differentiates, and ``craft`` to run an attack under one."""

from __future__ import annotations

import contextlib

from torch import nn

from .apgd import apgd, apgd_t
from .cw import cw_l2
from .gradient import bim, fgsm, pgd
from .settings import SURROGATES, AttackSettings, get_settings
from .square import square

THREAT_MODELS = ("oblivious", "adaptive", "transfer")
THREAT_MODEL_HELP = {
    "oblivious": "the attack sees only the classifier C; the defence is applied afterwards at evaluation",
    "adaptive": "white-box through nn.Sequential(defence, C): the QNT rounding with a backward surrogate "
    "(identity = BPDA's straight-through, or cubic/sine), the generator's own gradients and a straight-through "
    "output clamp; gradient-free attacks (Square) query the defended model itself",
    "transfer": "black-box: crafted on a separately trained substitute model, then fed to the defended model",
}

ATTACKS = ("fgsm", "bim", "pgd", "cw", "apgd-ce", "apgd-dlr", "apgd-t", "square")
# attacks that only query the model's outputs: backward surrogates do not change them
GRADIENT_FREE = ("square",)
ALIASES = {
    "fgs": "fgsm",
    "cw_l2": "cw",
    "cw-l2": "cw",
    "apgd": "apgd-ce",
    "apgd_ce": "apgd-ce",
    "apgd_dlr": "apgd-dlr",
    "apgd_t": "apgd-t",
    "square-linf": "square",
}


def is_min_norm(attack: str, settings: AttackSettings | str | None = None) -> bool:
    """Whether ``attack`` under ``settings`` is a minimum-norm attack (unbounded C&W-L2): its column
    is not an accuracy at the eps budget, so it stays out of the worst case."""
    return canonical_attack(attack) == "cw" and not get_settings(settings).cw_linf_bound


def has_surrogates(model) -> bool:
    """Whether some module of ``model`` has a settable backward ``surrogate`` (a QNT layer)."""
    return isinstance(model, nn.Module) and any(hasattr(m, "surrogate") for m in model.modules())


@contextlib.contextmanager
def adaptive_backward(model, surrogate: str = "identity"):
    """For the duration of an adaptive attack on ``model``: ``straight_through_clamp = True`` on every
    module that has that attribute (the generator's output clamp passes gradients) and
    ``surrogate`` on every module with a ``surrogate`` attribute (the QNT rounding's backward).
    Every attribute is restored on exit, also when the attack raises. Forward values do not change."""
    if surrogate not in SURROGATES:
        raise ValueError(f"unknown surrogate {surrogate!r}; valid surrogates: {list(SURROGATES)}")
    saved = []
    try:
        for m in model.modules() if isinstance(model, nn.Module) else ():
            for attr, value in (("straight_through_clamp", True), ("surrogate", surrogate)):
                if hasattr(m, attr):
                    saved.append((m, attr, getattr(m, attr)))
                    setattr(m, attr, value)
        yield model
    finally:
        for m, attr, value in reversed(saved):
            setattr(m, attr, value)


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
        return bim(model, x, y, eps=s.eps, step=s.step, steps=s.steps, best_iterate=s.best_iterate, **common)
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
            best_iterate=s.best_iterate,
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
            lr=s.cw_linf_lr if s.cw_linf_bound else s.cw_lr,
            search_steps=s.cw_search_steps,
            eps=s.eps if s.cw_linf_bound else None,
            targeted=targeted,
        )
    if name == "square":
        return square(
            model,
            x,
            y,
            eps=s.eps,
            queries=s.square_queries,
            p_init=s.square_p_init,
            restarts=s.square_restarts,
            **common,
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
    surrogate=None,
):
    """Adversarial examples for ``attack`` under ``threat_model``.

    ``threat_model``: "oblivious" (gradients of ``classifier`` only), "adaptive" (through
    ``nn.Sequential(defence, classifier)`` inside :func:`adaptive_backward`, with ``surrogate``, by
    default the first of ``settings.surrogates``) or "transfer" (gradients of ``substitute``).
    ``attack``: one of :data:`ATTACKS` (or an alias such as "fgs"). ``y``: true labels, or target
    classes when ``targeted``. ``settings``: :class:`AttackSettings` or a preset name.
    The result is detached, within ``settings.eps`` of ``x`` in L-inf and in [0, 1]; feed it to the
    defended model ``nn.Sequential(defence, classifier)`` to score it.
    """
    canonical_attack(attack)
    s = get_settings(settings)
    model = attack_model(threat_model, classifier=classifier, defence=defence, substitute=substitute)
    if threat_model != "adaptive":
        return run_attack(attack, model, x, y, settings=s, targeted=targeted, generator=generator)
    with adaptive_backward(model, s.surrogates[0] if surrogate is None else surrogate):
        return run_attack(attack, model, x, y, settings=s, targeted=targeted, generator=generator)
