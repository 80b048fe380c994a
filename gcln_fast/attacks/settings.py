"""``AttackSettings``: one place for every attack budget, and the named ``PRESETS``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ._common import check_int, check_number

# Backward surrogates for the rounding of a QNT layer under the adaptive attack (a module's
# ``surrogate`` attribute): "identity" = BPDA's straight-through gradient, "cubic" = the derivative of
# round(x) + (x - round(x))**3 (Shin & Song 2017), "sine" = that of x - sin(2 pi x) / (2 pi).
SURROGATES = ("identity", "cubic", "sine")


@dataclass(frozen=True)
class AttackSettings:
    """Budgets shared by all attacks (images in [0, 1]; ``eps`` and ``step`` in those units).

    Attributes:
        eps: L-inf radius. step: step size of BIM/PGD. steps: iterations of BIM/PGD.
        random_start / restarts: PGD start and restarts. eot: gradient samples per step (EOT).
        best_iterate: BIM/PGD return the first iterate that fools the model (False: the last iterate).
        apgd_steps / apgd_restarts / apgd_rho / n_target_classes: APGD and APGD-T budget (defaults:
            AutoAttack "standard", 100 steps, 1 restart, 9 target classes).
        square_queries / square_p_init / square_restarts: Square attack (AutoAttack: 5000 queries, p 0.8).
        cw_steps / cw_lr / cw_c / cw_kappa / cw_search_steps: C&W-L2 (Adam in tanh space, binary search
            over c from cw_c). cw_linf_bound: run C&W's loss inside the eps-box instead (a fixed-budget
            attack, Adam step cw_linf_lr), comparable with the others; unbounded C&W-L2 is a
            minimum-norm attack and stays out of the worst case.
        surrogates: backward surrogates of the QNT rounding tried by every adaptive gradient attack
            (see ``SURROGATES``); the worst case takes the minimum over them.
        eps_sweep: radii of the "accuracy falls to 0 as eps grows" sanity check.
        iter_sweep: iteration counts of the "accuracy does not rise with iterations" sanity check.
    """

    eps: float = 8 / 255
    step: float = 1 / 255
    steps: int = 10
    random_start: bool = True
    restarts: int = 1
    eot: int = 1
    best_iterate: bool = True
    apgd_steps: int = 100
    apgd_restarts: int = 1
    apgd_rho: float = 0.75
    n_target_classes: int = 9
    square_queries: int = 5000
    square_p_init: float = 0.8
    square_restarts: int = 1
    cw_steps: int = 100
    cw_lr: float = 0.01
    cw_linf_lr: float = 0.1
    cw_c: float = 1e-3
    cw_kappa: float = 0.0
    cw_search_steps: int = 5
    cw_linf_bound: bool = True
    surrogates: tuple = field(default=("identity",))
    eps_sweep: tuple = field(default=(8 / 255, 16 / 255, 32 / 255, 64 / 255))
    iter_sweep: tuple = field(default=(10, 20, 50, 100))

    def __post_init__(self):
        check_number("eps", self.eps, minimum=0.0)
        check_number("step", self.step, minimum=0.0, strict=True)
        for name in (
            "steps",
            "restarts",
            "eot",
            "apgd_steps",
            "apgd_restarts",
            "n_target_classes",
            "square_queries",
            "square_restarts",
            "cw_steps",
            "cw_search_steps",
        ):
            check_int(name, getattr(self, name))
        check_number("apgd_rho", self.apgd_rho, minimum=0.0, strict=True, maximum=1.0)
        check_number("square_p_init", self.square_p_init, minimum=0.0, strict=True, maximum=1.0)
        check_number("cw_lr", self.cw_lr, minimum=0.0, strict=True)
        check_number("cw_linf_lr", self.cw_linf_lr, minimum=0.0, strict=True)
        check_number("cw_c", self.cw_c, minimum=0.0, strict=True)
        check_number("cw_kappa", self.cw_kappa, minimum=0.0)
        object.__setattr__(
            self, "eps_sweep", tuple(check_number("eps_sweep entry", e, minimum=0.0) for e in self.eps_sweep)
        )
        object.__setattr__(self, "iter_sweep", tuple(check_int("iter_sweep entry", i) for i in self.iter_sweep))
        surrogates = (self.surrogates,) if isinstance(self.surrogates, str) else tuple(self.surrogates)
        if not surrogates or any(s not in SURROGATES for s in surrogates):
            raise ValueError(f"surrogates must be a non-empty choice of {list(SURROGATES)}, got {self.surrogates!r}")
        object.__setattr__(self, "surrogates", tuple(dict.fromkeys(surrogates)))

    def replace(self, **changes) -> AttackSettings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["eps_sweep"] = list(d["eps_sweep"])
        d["iter_sweep"] = list(d["iter_sweep"])
        d["surrogates"] = list(d["surrogates"])
        return d


_PAPER_CIFAR10 = AttackSettings(eps=8 / 255, step=1 / 255, steps=10)
_PAPER_SVHN = AttackSettings(eps=12 / 255, step=3 / 255, steps=10)

PRESETS: dict[str, AttackSettings] = {
    # the paper's CIFAR-10 baseline (its Table 1): eps 8/255, step 1/255, 10 iterations
    "paper-cifar10": _PAPER_CIFAR10,
    # its SVHN budget (Kannan et al. 2018 parameters): eps 12/255 (0.05), step 3/255 (0.01), 10 iterations
    "paper-svhn": _PAPER_SVHN,
    # earlier names of the two, kept working
    "cifar10": _PAPER_CIFAR10,
    "svhn": _PAPER_SVHN,
    # the embedded house-number set is attacked like SVHN
    "embedded": _PAPER_SVHN,
    # BPDA (Athalye et al. 2018) as in the paper's Table 2 / Fig. 3: eps 8/255, up to 100 iterations
    "bpda": AttackSettings(eps=8 / 255, step=1 / 255, steps=100),
}


def get_settings(settings) -> AttackSettings:
    """``AttackSettings`` as given, a preset by name, or the defaults for None."""
    if settings is None:
        return AttackSettings()
    if isinstance(settings, AttackSettings):
        return settings
    if isinstance(settings, str):
        if settings not in PRESETS:
            raise ValueError(f"unknown preset {settings!r}; valid presets: {sorted(PRESETS)}")
        return PRESETS[settings]
    raise TypeError(f"settings must be AttackSettings, a preset name or None, got {type(settings).__name__}")
