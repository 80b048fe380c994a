"""Adversarial attacks in [0, 1] image space, batched, on the input's device.

Every attack is ``fn(model, x, y, **settings) -> x_adv`` (``y``: true labels, or target classes with
``targeted=True``); results are detached and lie in the L-inf eps-ball around ``x`` and in [0, 1].
Attacks never leave gradients in ``.grad`` and restore ``requires_grad`` on the model's parameters.
Put models in eval mode first. :func:`craft` runs an attack under a threat model
("oblivious", "adaptive" = through the defence with a backward surrogate for its rounding (BPDA by
default), "transfer" = substitute model). ``square`` is gradient-free (the check on masked gradients).
"""

from ._common import ce_loss, dlr_loss, dlr_targeted_loss, margin_loss
from .apgd import apgd, apgd_t, checkpoints
from .cw import cw_l2
from .gradient import bim, fgsm, pgd
from .settings import PRESETS, SURROGATES, AttackSettings, get_settings
from .square import square
from .threat import (
    ATTACKS,
    GRADIENT_FREE,
    THREAT_MODEL_HELP,
    THREAT_MODELS,
    adaptive_backward,
    attack_model,
    canonical_attack,
    craft,
    has_surrogates,
    is_min_norm,
    run_attack,
)

__all__ = [
    "ATTACKS",
    "AttackSettings",
    "GRADIENT_FREE",
    "PRESETS",
    "SURROGATES",
    "THREAT_MODELS",
    "THREAT_MODEL_HELP",
    "adaptive_backward",
    "apgd",
    "apgd_t",
    "attack_model",
    "bim",
    "canonical_attack",
    "ce_loss",
    "checkpoints",
    "craft",
    "cw_l2",
    "dlr_loss",
    "dlr_targeted_loss",
    "fgsm",
    "get_settings",
    "has_surrogates",
    "is_min_norm",
    "margin_loss",
    "pgd",
    "run_attack",
    "square",
]
