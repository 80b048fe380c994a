"""Named evaluation suites: which attacks run under which threat model, with which budgets.

* ``paper``: the paper's attacks and budgets (FGS, PGD, BIM, C&W; its eps and step per dataset), for
  reproducing its tables; adaptive twins of each, plus APGD-CE/DLR.
* ``standard``: the suite behind every headline: adaptive APGD-CE, APGD-T, Square and PGD-100
  (step eps/4) through the defence, FGS for the single-step check, oblivious and transfer PGD and FGS;
  eps 8/255. Two budgets: ``gpu`` is AutoAttack "standard" (APGD 100 iterations, 9 target classes,
  Square 5000 queries) with the identity and cubic rounding surrogates; ``cpu`` is sized for a
  two-core machine (see :data:`STANDARD_BUDGETS`; default, not measured as a rule of thumb).
* ``quick``: a smoke test of the same attacks at small budgets (seconds on tiny models).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..attacks import PRESETS, AttackSettings
from ..attacks._common import check_number

SUITES = ("paper", "standard", "quick")
BUDGETS = ("cpu", "gpu")

PAPER_OBLIVIOUS = ("fgsm", "pgd", "bim", "cw")
PAPER_ADAPTIVE = ("fgsm", "pgd", "bim", "cw", "apgd-ce", "apgd-dlr")
PAPER_TRANSFER = ("fgsm", "pgd")

STANDARD_OBLIVIOUS = ("fgsm", "pgd")
STANDARD_ADAPTIVE = ("apgd-ce", "apgd-t", "square", "pgd", "fgsm")
STANDARD_TRANSFER = ("fgsm", "pgd")

# The budget knobs of the standard suite per machine class; everything else as AttackSettings' defaults.
STANDARD_BUDGETS = {
    "gpu": dict(apgd_steps=100, n_target_classes=9, square_queries=5000, steps=100, surrogates=("identity", "cubic")),
    "cpu": dict(apgd_steps=100, n_target_classes=3, square_queries=1000, steps=100, surrogates=("identity",)),
}
QUICK_BUDGET = dict(
    apgd_steps=10,
    n_target_classes=2,
    square_queries=100,
    steps=10,
    cw_steps=10,
    eps_sweep=(8 / 255, 64 / 255),
    iter_sweep=(5, 20),
)
PAPER_DATASET_PRESET = {"cifar10": "paper-cifar10", "svhn": "paper-svhn", "embedded": "paper-svhn"}


@dataclass(frozen=True)
class Suite:
    """Attack lists per threat model and their budgets (``settings``)."""

    name: str
    budget: str
    settings: AttackSettings
    oblivious: tuple
    adaptive: tuple
    transfer: tuple

    def describe(self) -> str:
        return f"{self.name} ({self.budget} budget)" if self.name == "standard" else self.name


def get_suite(name: str, *, dataset: str | None = None, budget: str = "cpu", eps: float | None = None) -> Suite:
    """The suite ``name`` ("paper", "standard", "quick"). ``dataset`` picks the paper's eps and step
    ("cifar10" -> ``paper-cifar10``, "svhn"/"embedded" -> ``paper-svhn``; others: CIFAR-10's);
    ``budget`` ("cpu"/"gpu") sizes the standard suite; ``eps`` (in [0, 1] units) overrides the
    radius, and in the standard and quick suites the PGD step follows it (eps/4)."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; valid suites: {list(SUITES)}")
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; valid budgets: {list(BUDGETS)}")
    if eps is not None:
        eps = check_number("eps", eps, minimum=0.0, strict=True)
    if name == "paper":
        s = PRESETS[PAPER_DATASET_PRESET.get(dataset, "paper-cifar10")]
        s = s.replace(eps=eps) if eps is not None else s
        return Suite(name, budget, s, PAPER_OBLIVIOUS, PAPER_ADAPTIVE, PAPER_TRANSFER)
    eps = 8 / 255 if eps is None else eps
    knobs = STANDARD_BUDGETS[budget] if name == "standard" else QUICK_BUDGET
    s = AttackSettings(eps=eps, step=eps / 4, **knobs)
    return Suite(name, budget, s, STANDARD_OBLIVIOUS, STANDARD_ADAPTIVE, STANDARD_TRANSFER)
