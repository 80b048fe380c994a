"""Adversarial attacks in [0, 1] image space, batched, on the input's device.

Every attack is ``fn(model, x, y, **settings) -> x_adv`` (``y``: true labels, or target classes with
``targeted=True``); results are detached and lie in the L-inf eps-ball around ``x`` and in [0, 1].
Attacks never leave gradients in ``.grad`` and restore ``requires_grad`` on the model's parameters.
Put models in eval mode first. :func:`craft` runs an attack under a threat model
("oblivious", "adaptive" = BPDA through the defence, "transfer" = substitute model).
"""

from ._common import ce_loss, dlr_loss, margin_loss
from .apgd import apgd, apgd_t, checkpoints
from .cw import cw_l2
from .gradient import bim, fgsm, pgd
from .settings import PRESETS, AttackSettings, get_settings
from .threat import ATTACKS, THREAT_MODEL_HELP, THREAT_MODELS, attack_model, canonical_attack, craft, run_attack

__all__ = [
    "ATTACKS",
    "AttackSettings",
    "PRESETS",
    "THREAT_MODELS",
    "THREAT_MODEL_HELP",
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
    "fgsm",
    "get_settings",
    "margin_loss",
    "pgd",
    "run_attack",
]
