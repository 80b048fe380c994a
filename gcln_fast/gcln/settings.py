"""``GCLNSettings``: every setting of :func:`~gcln_fast.gcln.train_gcln`, with its default, in one place.

Defaults marked "measured" come from the runs in ``docs/experiments-gcln.md``; the others are
defaults, not measured.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .crafting import DEFAULT_ATTACK_MIX
from .guard import GUARD_ACTIONS


@dataclass(frozen=True)
class GCLNSettings:
    """Settings of one GCLN training run (see the module docstring of :mod:`gcln_fast.gcln.train`).

    Attributes:
        epochs / detector_epochs: phase 2 (G vs D) and phase 1 (D alone) epochs.
        q, trainable_q, generator_kwargs: G (:class:`~.generator.Generator`).
        detector_kwargs: D (:class:`~.detector.Detector`), on top of ``spectral_norm=True`` (measured:
            E2, D learns with it and without the on-the-fly clean samples).
        batch_size: global batch (split across DDP ranks).
        lr, lr_d, lr_c: Adam rates of G (1e-3, measured: E1 vs E2) and D (default ``lr``); AdamW
            rate of a fine-tuned C.
        lam: lambda of eq. 3 (0.5, the paper's). adv_warmup: share of the G steps over which L_A's
            weight ramps up from 0 to ``1 - lam`` (G first learns to restore content).
        mu, beta: weights of L_CE (cross-entropy of C(G([x*, x]))) and of the TRADES KL term.
        pixel_weight: extra pixel MSE in L_P. grad_clip: clip G's gradient norm (None: no clipping).
        attack_mix / attack_fns: the training attacks and optional ``{name: fn}`` overrides.
        eps_ramp: share of the G steps over which every training attack's radius (and step) grows
            linearly from 0 to its value in ``attack_mix`` (0: full radius from the start); the
            ramp of PGD adversarial training, for the adaptive variants.
        adaptive, adaptive_ramp: share of each batch crafted through the current G and C (True = 1),
            and the share of the G steps over which it rises from 0 (oblivious) to ``adaptive``.
        finetune_classifier: train a copy of C jointly on ``mu L_CE + beta L_KL`` (one must be > 0).
        clean_pass: G (and C) also train on the clean images of each batch (step 2 of the module
            docstring); False trains on ``G(x*)`` alone, as PGD adversarial training trains on ``x*``
            alone (a cheaper step; ``beta`` needs the clean pass).
        lr_decay: cosine decay of G's and C's rates to 1% over the G steps (D keeps its rate, so
            that it can follow G to the end), as PGD adversarial training's schedule decays C's.
        clean_buffer_size, buffer_fraction: the paper's on-the-fly clean set and its share of D's
            clean batch (0 by default: measured, D's clean class then holds no G outputs and D learns).
        guard_size: held-out training images of the divergence guard (None: ``min(256, n // 8)``;
            0: none); guard_margin / guard_action / guard_backoffs: see :mod:`.guard`.
        perceptual: a :class:`~.losses.PerceptualLoss`, or its ``source``. vgg_weights: local VGG-19 file.
        train_size: use only the first ``train_size`` images. device: ``"auto"``, ``"cpu"``, ``"cuda"``;
            amp: bf16 autocast on CUDA. seed. resume / force: continue from ``out_dir/gcln.pt``
            (changed settings refused unless ``force``, which records them). progress: tqdm bars.
    """

    epochs: int = 5
    detector_epochs: int = 1
    q: float = 10.0
    trainable_q: bool = False
    generator_kwargs: dict | None = None
    detector_kwargs: dict | None = None
    batch_size: int = 64
    lr: float = 1e-3
    lr_d: float | None = None
    lam: float = 0.5
    adv_warmup: float = 0.5
    mu: float = 0.0
    beta: float = 0.0
    pixel_weight: float = 0.0
    grad_clip: float | None = None
    attack_mix: tuple = field(default=DEFAULT_ATTACK_MIX)
    attack_fns: dict | None = None
    eps_ramp: float = 0.0
    adaptive: float = 0.0
    adaptive_ramp: float = 0.0
    finetune_classifier: bool = False
    clean_pass: bool = True
    lr_decay: bool = False
    lr_c: float = 1e-3
    clean_buffer_size: int = 1024
    buffer_fraction: float = 0.0
    guard_size: int | None = None
    guard_margin: float = 0.03
    guard_action: str = "backoff"
    guard_backoffs: int = 3
    perceptual: object = "auto"
    vgg_weights: object = None
    train_size: int | None = None
    device: object = "auto"
    amp: bool = True
    seed: int = 0
    resume: bool = False
    force: bool = False
    progress: bool = True

    def __post_init__(self):
        object.__setattr__(self, "adaptive", float(self.adaptive))
        object.__setattr__(self, "attack_mix", tuple(dict(m) for m in self.attack_mix))
        for name in ("lr", "lr_d", "lr_c"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("lam", "eps_ramp", "adaptive", "adaptive_ramp", "adv_warmup", "buffer_fraction", "guard_margin"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("mu", "beta", "pixel_weight", "epochs", "detector_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.finetune_classifier and not (self.mu > 0 or self.beta > 0):
            raise ValueError("finetune_classifier trains C on mu * L_CE + beta * L_KL: set mu > 0 or beta > 0")
        if self.beta > 0 and not self.clean_pass:
            raise ValueError("beta (the TRADES term KL(C(G(x)) || C(G(x*)))) needs clean_pass=True")
        if self.guard_action not in GUARD_ACTIONS:
            raise ValueError(f"guard_action must be one of {GUARD_ACTIONS}, got {self.guard_action!r}")

    def replace(self, **changes) -> GCLNSettings:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown GCLN setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    @property
    def d_rate(self) -> float:
        """D's learning rate: ``lr_d``, or G's ``lr`` when ``lr_d`` is None (resolved here, so that a
        ``replace(lr=...)`` moves it too)."""
        return self.lr if self.lr_d is None else self.lr_d

    def generator_config(self) -> dict:
        return {"q": float(self.q), "trainable_q": bool(self.trainable_q), **(self.generator_kwargs or {})}

    def detector_config(self) -> dict:
        return {"spectral_norm": True, **(self.detector_kwargs or {})}

    def recorded(self, n_train: int, world: int) -> dict:
        """The training settings as stored in checkpoints and history (plain values)."""
        keep = (
            "epochs", "detector_epochs", "batch_size", "lr", "lr_d", "lam", "adv_warmup", "mu", "beta",
            "pixel_weight", "grad_clip", "attack_mix", "eps_ramp", "adaptive", "adaptive_ramp", "finetune_classifier", "clean_pass", "lr_decay", "lr_c",
            "clean_buffer_size", "buffer_fraction", "guard_size", "guard_margin", "guard_action", "guard_backoffs",
            "seed",
        )  # fmt: skip
        rec = {k: getattr(self, k) for k in keep}
        rec["attack_mix"] = [dict(m) for m in self.attack_mix]
        rec["lr_d"] = self.d_rate
        rec.update(train_size=int(n_train), world_size=int(world))
        return rec
