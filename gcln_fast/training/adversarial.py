"""PGD adversarial training (Madry et al. 2018): the classifier learns on PGD examples of itself.

Each training batch is replaced by L-inf PGD examples crafted against the current model
(``gcln_fast.attacks.pgd``: random start, ``steps`` sign-gradient steps of ``step``, default
``eps / 4``), in eval mode so that the attack neither updates nor depends on batch-norm batch
statistics; the update itself is in train mode on the adversarial batch only (Madry's min-max
objective).

The radius is ramped up linearly from 0 to ``eps`` over the first ``ramp`` fraction of training
(default 0.4), ``step`` in proportion. Reason: an independent PGD-AT of a small CNN on the embedded
data at 8/255 collapsed to chance without a ramp, and with it (eps ramped over the first 40% of the
steps, 8 epochs on 2 cores) measured clean 93.0%, APGD-CE 45.5% on 200 test images (issue 12).
The defaults ``eps = 8/255``, ``steps = 7`` are Madry et al.'s CIFAR-10 training budget; not
measured here.

Short runs from scratch do not get off the ground. Measured on this project's shared 2-core
machine, embedded data, 4000 training images, batch 128, AdamW, 1 thread (test accuracy on 500
images; PGD-7 at 8/255 on 256 of them, the per-epoch monitor):
``gcln train-classifier --adversarial --train-size 4000 --test-size 500 --epochs 5 --optimizer
adamw --lr 3e-3`` stayed at chance (clean 14.0%, PGD 5.5%) where the same standard training
reached 63.8%; fine-tuning that standard model (``--init-from``, ``--epochs 3 --lr 1e-3``) gave
clean 59.6%, PGD 15.2%, still rising. For a small budget, start from a standard model.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from gcln_fast.attacks import pgd
from gcln_fast.utils.metrics import batched_correct


@dataclass(frozen=True)
class AdversarialTraining:
    """Settings of PGD adversarial training; radii in [0, 1] image units (8/255, not 8)."""

    eps: float = 8 / 255
    step: float | None = None  # None: eps / 4
    steps: int = 7
    ramp: float = 0.4  # fraction of training over which eps grows linearly from 0
    random_start: bool = True
    val_n: int = 256  # held-out images of the per-epoch PGD accuracy (0: not measured)

    def __post_init__(self):
        for name in ("eps", "ramp") + (() if self.step is None else ("step",)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TypeError(f"adversarial {name} must be a finite number, got {v!r}")
        if not 0 < self.eps <= 1:
            raise ValueError(f"adversarial eps must be in (0, 1] (image units: 8/255, not 8), got {self.eps}")
        if self.step is not None and not 0 < self.step <= 1:
            raise ValueError(f"adversarial step must be in (0, 1], got {self.step}")
        if not 0 <= self.ramp <= 1:
            raise ValueError(f"adversarial ramp must be in [0, 1], got {self.ramp}")
        for name in ("steps", "val_n"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "steps" else 0):
                raise ValueError(f"adversarial {name} must be an int >= {1 if name == 'steps' else 0}, got {v!r}")

    @classmethod
    def from_any(cls, value) -> AdversarialTraining | None:
        """``None``/``False`` -> None, ``True`` -> defaults, a dict -> its fields, an instance as is."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ValueError(f"unknown adversarial setting(s): {', '.join(sorted(unknown))}")
            return cls(**value)
        raise TypeError(f"adversarial must be None, True, a dict or AdversarialTraining, got {type(value).__name__}")

    @property
    def full_step(self) -> float:
        return self.eps / 4 if self.step is None else self.step

    def budget(self, progress: float) -> tuple[float, float]:
        """(eps, step) at ``progress`` in [0, 1] of training: linear ramp from 0 over ``ramp``."""
        scale = 1.0 if self.ramp == 0 else min(1.0, max(0.0, progress) / self.ramp)
        return self.eps * scale, self.full_step * scale

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def adversarial_batch(model, x, y, settings: AdversarialTraining, progress: float, generator=None) -> torch.Tensor:
    """PGD examples of ``model`` for the batch ``x, y`` at the ramped radius of ``progress``; the clean
    batch while the radius is 0. The model is attacked in eval mode; its mode is restored."""
    eps, step = settings.budget(progress)
    if eps <= 0:
        return x
    was_training = model.training
    model.eval()
    try:
        return pgd(
            model,
            x,
            y,
            eps=eps,
            step=step,
            steps=settings.steps,
            random_start=settings.random_start,
            generator=generator,
            best_iterate=False,  # Madry's last iterate: the first one that fools is a weak training example
        )
    finally:
        model.train(was_training)


def robust_accuracy(model, X, Y, settings: AdversarialTraining, *, device, generator=None, batch_size=256) -> float:
    """Accuracy of ``model`` on full-radius PGD examples of the first ``settings.val_n`` images of
    ``X`` (uint8 or float), attacked batch by batch. A training-time monitor, not an evaluation:
    judge robustness with ``gcln eval`` (APGD, the worst case over attacks)."""
    n = min(settings.val_n, len(Y))
    if n == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, n, batch_size):
        xb = X[i : min(n, i + batch_size)].to(device)
        xb = xb.float().div_(255.0) if xb.dtype == torch.uint8 else xb.float()
        yb = Y[i : min(n, i + batch_size)].to(device)
        xa = adversarial_batch(model, xb, yb, settings, 1.0, generator)
        correct += int(batched_correct(model, xa, yb).sum())
    model.train(was_training)
    return correct / n
