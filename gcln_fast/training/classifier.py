"""Train a target classifier, resumably; standard or PGD adversarial training.

Files written by :func:`train_classifier`:

* ``checkpoint_path`` -- the resumable training state, rewritten atomically after every
  epoch: ``{"kind": "classifier_train_state", "arch", "num_classes", "state_dict",
  "meta", "optimizer", "epoch" (completed epochs), "step" (optimizer steps), "seconds"
  (training wall time), "history", "rng", "config"}``. It is a superset of the
  classifier format, so ``load_classifier`` also reads it (weights of the last completed epoch).
* ``final_path`` -- the final weights in ``save_classifier`` format (default:
  ``<checkpoint stem>.final<suffix>`` beside ``checkpoint_path``), written when the run
  finishes. This is the file to hand to ``load_classifier``.
* ``<final_path without suffix>.history.json`` -- the history, also returned:
  ``{"epochs": [{"epoch", "steps", "train_loss", "train_acc", "val_loss", "val_acc",
  ["val_pgd_acc"], "lr", "seconds"}...], "config", "final_val_acc", "stopped_by"
  ("epochs" or "time_budget"), "train_seconds", "final_path", "checkpoint_path"}``.

Shuffling, augmentation and the PGD random starts draw from a generator seeded by
``(seed, epoch)``, so an interrupted run resumed with ``resume=True`` continues from the last
completed epoch and, on the same machine and thread count, ends with the same weights as an
uninterrupted one. With ``time_budget`` the schedule follows the wall clock, so such a run is
not reproducible bit for bit.

A non-finite loss stops the run (:class:`~gcln_fast.utils.errors.NonFiniteLossError`, naming
the step) before anything is written, so the checkpoint of the last completed epoch stays good.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gcln_fast.data import as_uint8_tensors
from gcln_fast.models.classifiers import save_classifier
from gcln_fast.utils.checkpoint import atomic_save, load_checkpoint
from gcln_fast.utils.guards import ensure_finite
from gcln_fast.utils.io import atomic_write_json
from gcln_fast.utils.modules import in_memory_format, preferred_memory_format
from gcln_fast.utils.resume import HISTORY_KEY, reconcile_resume

from .adversarial import AdversarialTraining, adversarial_batch, robust_accuracy

STATE_KIND = "classifier_train_state"
# settings a resumed run can never change, even with force=True: the saved weights and optimizer
# state would not fit
FIXED_ON_RESUME = ("arch", "num_classes", "optimizer")


def default_final_path(checkpoint_path) -> Path:
    p = Path(checkpoint_path)
    return p.with_name(f"{p.stem}.final{p.suffix or '.pt'}")


def history_path(final_path) -> Path:
    p = Path(final_path)
    return p.with_name(f"{p.stem}.history.json")


def warmup_cosine(total_steps: int, warmup_frac: float = 0.1, start: float = 0.1, end: float = 0.01):
    """LR multiplier: linear warm-up from ``start`` over the first ``warmup_frac`` of the
    steps, then a cosine decay to ``end`` (well defined for any ``total_steps >= 1``; the
    step may be fractional)."""
    warm = max(1, int(round(warmup_frac * total_steps)))

    def factor(step: float) -> float:
        if step < warm:
            return start + (1.0 - start) * step / warm
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


def augment_batch(x: torch.Tensor, *, pad: int, hflip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random crop after replicate-padding by ``pad`` (per-sample integer shifts) and,
    if ``hflip``, random horizontal flips. ``x``: float (B, C, H, W)."""
    b, c, h, w = x.shape
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
        ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
        rows = (oy[:, None] + torch.arange(h)[None]).to(x.device)  # (B, H)
        cols = (ox[:, None] + torch.arange(w)[None]).to(x.device)  # (B, W)
        bi = torch.arange(b, device=x.device)[:, None, None]
        x = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
    if hflip:
        flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


def _to_float(xb: torch.Tensor, device) -> torch.Tensor:
    xb = xb.to(device, non_blocking=True)
    return xb.float().div_(255.0) if xb.dtype == torch.uint8 else xb.float()


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module, X: torch.Tensor, Y: torch.Tensor, *, device="cpu", batch_size: int = 512
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on uint8 or float images ``X``."""
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    for i in range(0, len(Y), batch_size):
        xb, yb = _to_float(X[i : i + batch_size], device), Y[i : i + batch_size].to(device)
        logits = model(xb)
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    model.train(was_training)
    n = max(1, len(Y))
    return correct / n, loss_sum / n


# --------------------------------------------------------------------------- the run's pieces


@dataclass
class _Data:
    X: torch.Tensor
    Y: torch.Tensor
    Xv: torch.Tensor | None
    Yv: torch.Tensor | None
    pad: int
    hflip: bool
    batch_size: int

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.Y) / self.batch_size)


@dataclass
class _Progress:
    """Where the run stands; what a checkpoint restores besides weights and optimizer."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    seconds: float = 0.0  # training wall time before this process's start
    history: dict = field(default_factory=lambda: {"epochs": []})


@dataclass
class _Schedule:
    """Learning rate, PGD radius and the end of the run, as functions of the training progress:
    the fraction of ``total_steps`` done, or of ``time_budget`` seconds spent when that is larger."""

    lr: float
    total_steps: int
    time_budget: float | None
    adversarial: AdversarialTraining | None

    def position(self, step: int, seconds: float) -> float:
        """Progress in optimizer steps (fractional when the wall clock is ahead of the steps)."""
        if self.time_budget is None:
            return float(step)
        return max(float(step), seconds / self.time_budget * self.total_steps)

    def done(self, step: int, seconds: float) -> bool:
        return self.position(step, seconds) >= self.total_steps

    def lr_at(self, position: float) -> float:
        return self.lr * warmup_cosine(self.total_steps)(position)


def _check_arguments(epochs, batch_size, lr, optimizer, time_budget) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if optimizer not in ("sgd", "adamw"):
        raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
    if time_budget is not None and not (math.isfinite(time_budget) and time_budget > 0):
        raise ValueError(f"time_budget must be a number of seconds > 0, got {time_budget!r}")


def _prepare_data(train_set, val_set, batch_size: int, augment) -> _Data:
    X, Y = as_uint8_tensors(train_set)
    if len(Y) == 0:
        raise ValueError("empty training set")
    Xv, Yv = as_uint8_tensors(val_set) if val_set is not None else (None, None)
    hflip = bool(augment) and bool(getattr(train_set, "allows_hflip", False))
    pad = (4 if hflip else 2) if augment else 0
    return _Data(X, Y, Xv, Yv, pad, hflip, batch_size)


def _make_optimizer(model, name: str, lr: float, weight_decay: float):
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def _restore(path: Path, model, opt, config: dict, device, force: bool) -> tuple[_Progress, dict]:
    """Load the training state of ``path`` into ``model`` and ``opt``; returns (progress, config to
    continue with). Different settings are refused unless ``force`` (then both are recorded)."""
    state = load_checkpoint(path, map_location="cpu", kind=STATE_KIND)
    config = reconcile_resume(state["config"], config, path=path, force=force, fixed=FIXED_ON_RESUME)
    model.load_state_dict(state["state_dict"])
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    if device.type == "cuda" and state["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(state["rng"]["cuda"], device)
    progress = _Progress(
        epoch=int(state["epoch"]),
        step=int(state.get("step", state["epoch"] * config["steps_per_epoch"])),
        seconds=float(state.get("seconds", 0.0)),
        history=state["history"],
    )
    progress.history["config"] = config
    return progress, config


def _save_state(path: Path, model, opt, progress: _Progress, config: dict, meta: dict, device) -> None:
    rng = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }
    state = {
        "kind": STATE_KIND,
        "arch": config["arch"],
        "num_classes": int(config["num_classes"]),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta,
        "optimizer": opt.state_dict(),
        "epoch": progress.epoch,
        "step": progress.step,
        "seconds": progress.seconds,
        "history": progress.history,
        "rng": rng,
        "config": config,
    }
    atomic_save(state, path)


def _train_step(
    model, opt, xb, yb, *, lr: float, adversarial, progress: float, gen
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on the batch (on its PGD examples when ``adversarial``); (loss, logits)."""
    if adversarial is not None:
        xb = adversarial_batch(model, xb, yb, adversarial, progress, gen)
    for group in opt.param_groups:
        group["lr"] = lr
    logits = model(xb)
    loss = F.cross_entropy(logits, yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach(), logits.detach()


def _run_epoch(model, opt, data: _Data, sched: _Schedule, run: _Progress, ctx: dict) -> dict:
    """Train one epoch (or until the schedule says stop); returns the epoch's record."""
    from tqdm.auto import tqdm

    epoch, seed, device = run.epoch, ctx["seed"], ctx["device"]
    t0 = time.time()
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(len(data.Y), generator=gen)
    model.train()
    loss_sum, correct, seen, lr, first_step = 0.0, 0, 0, sched.lr, run.step
    spe = data.steps_per_epoch
    bar = tqdm(range(spe), desc=f"epoch {epoch + 1}/{ctx['epochs']}", disable=not ctx["progress"], leave=False)
    for i in bar:
        if sched.done(run.step, run.seconds + time.time() - t0):
            break
        idx = perm[i * data.batch_size : (i + 1) * data.batch_size]
        xb, yb = _to_float(data.X[idx], device), data.Y[idx].to(device)
        if data.pad or data.hflip:
            xb = augment_batch(xb, pad=data.pad, hflip=data.hflip, gen=gen)
        xb = xb.contiguous(memory_format=ctx["mf"])
        pos = sched.position(run.step, run.seconds + time.time() - t0)
        lr = sched.lr_at(pos)
        loss, logits = _train_step(
            model, opt, xb, yb, lr=lr, adversarial=sched.adversarial, progress=pos / sched.total_steps, gen=gen
        )
        run.step += 1
        loss_value = loss.item()
        ensure_finite({"train_loss": loss_value}, step=run.step, where=f"epoch {epoch + 1}", checkpoint=ctx["path"])
        loss_sum += loss_value * len(yb)
        correct += (logits.argmax(1) == yb).sum().item()
        seen += len(yb)
        if i % 10 == 0 or i == spe - 1:
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
    bar.close()
    rec = {"epoch": epoch + 1, "steps": run.step - first_step, "lr": lr}
    rec["train_loss"], rec["train_acc"] = (loss_sum / seen, correct / seen) if seen else (None, None)
    if data.Yv is not None and len(data.Yv):
        rec["val_acc"], rec["val_loss"] = evaluate_accuracy(model, data.Xv, data.Yv, device=device)
        if sched.adversarial is not None and sched.adversarial.val_n:
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch + 777)
            rec["val_pgd_acc"] = robust_accuracy(model, data.Xv, data.Yv, sched.adversarial, device=device, generator=g)
    rec["seconds"] = time.time() - t0
    return rec


def _log_epoch(rec: dict, epochs: int) -> None:
    from tqdm.auto import tqdm

    parts = [f"epoch {rec['epoch']}/{epochs}:"]
    for key in ("train_loss", "train_acc", "val_acc", "val_pgd_acc"):
        if rec.get(key) is not None:
            parts.append(f"{key} {rec[key]:.4f}")
    tqdm.write(" ".join(parts) + f" ({rec['seconds']:.1f}s)")


def _run_config(model, data: _Data, arch, num_classes, meta, settings: dict) -> dict:
    """Everything that defines the run (compared on resume) as plain values."""
    arch = arch or getattr(model, "arch", None)
    num_classes = num_classes or getattr(model, "num_classes", None)
    if arch is None or num_classes is None:
        raise ValueError("pass arch= and num_classes= (or a model from build_classifier)")
    config = {
        **settings,
        "batch_size": data.batch_size,
        "augment_pad": data.pad,
        "augment_hflip": data.hflip,
        "train_size": len(data.Y),
        "val_size": 0 if data.Yv is None else len(data.Yv),
        "arch": arch,
        "num_classes": int(num_classes),
        "steps_per_epoch": data.steps_per_epoch,
    }
    # the caller's metadata too (the dataset, say), where it does not repeat a setting
    config["meta"] = {k: v for k, v in (meta or {}).items() if k not in config}
    return config


def train_classifier(
    model: nn.Module,
    train_set,
    val_set,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 0.05,
    device="cpu",
    checkpoint_path,
    resume: bool = False,
    force: bool = False,
    seed: int = 0,
    progress: bool = True,
    augment: bool | None = True,
    optimizer: str = "sgd",
    weight_decay: float = 5e-4,
    adversarial=None,
    time_budget: float | None = None,
    final_path=None,
    arch: str | None = None,
    num_classes: int | None = None,
    meta: dict | None = None,
    on_epoch_end=None,
) -> dict:
    """Train ``model`` (images in [0, 1] -> logits) with cross-entropy; returns the history.

    Optimiser: ``"sgd"`` (momentum 0.9, Nesterov) or ``"adamw"``, with linear warm-up
    (10% of the steps) to ``lr`` then cosine decay to ``lr/100`` (:func:`warmup_cosine`).
    ``augment``: random crop after replicate padding (2 px; 4 px plus horizontal flips when the
    dataset ``allows_hflip``: CIFAR-10, never digits). ``val_set`` may be None.
    ``on_epoch_end(epoch, history)`` is called after each epoch's checkpoint is written.

    ``adversarial``: PGD adversarial training (:class:`~.adversarial.AdversarialTraining`, a dict
    of its fields, or ``True`` for the defaults); to fine-tune, pass a trained ``model``.
    ``time_budget``: stop after that many seconds of training wall time; the learning-rate
    schedule and the PGD radius ramp then follow the fraction of the budget spent (or of the
    ``epochs``, whichever is further), so methods compare at equal wall time.
    ``resume``: continue from ``checkpoint_path``; settings that differ from the saved run's
    are refused (naming them) unless ``force``, which records both.
    Returns the history (see the module docstring).
    """
    _check_arguments(epochs, batch_size, lr, optimizer, time_budget)
    adversarial = AdversarialTraining.from_any(adversarial)
    device = torch.device(device)
    checkpoint_path = Path(checkpoint_path)
    final_path = Path(final_path) if final_path is not None else default_final_path(checkpoint_path)
    data = _prepare_data(train_set, val_set, batch_size, augment)
    settings = dict(epochs=epochs, lr=lr, optimizer=optimizer, weight_decay=weight_decay, seed=seed)
    settings.update(adversarial=adversarial.to_dict() if adversarial else None, time_budget=time_budget)
    config = _run_config(model, data, arch, num_classes, meta, settings)

    torch.manual_seed(seed)
    model.to(device).train()
    opt = _make_optimizer(model, optimizer, lr, weight_decay)
    run = _Progress(history={"epochs": [], "config": config})
    if resume and checkpoint_path.is_file():
        run, config = _restore(checkpoint_path, model, opt, config, device, force)
    sched = _Schedule(lr, epochs * data.steps_per_epoch, time_budget, adversarial)
    mf = preferred_memory_format(device)
    ctx = {"seed": seed, "device": device, "epochs": epochs, "progress": progress, "path": checkpoint_path, "mf": mf}
    with in_memory_format(model, mf):
        while run.epoch < epochs and not sched.done(run.step, run.seconds):
            rec = _run_epoch(model, opt, data, sched, run, ctx)
            run.epoch += 1
            run.seconds += rec["seconds"]
            run.history["epochs"].append(rec)
            if progress:
                _log_epoch(rec, epochs)
            _save_state(checkpoint_path, model, opt, run, config, dict(meta or {}), device)
            if on_epoch_end is not None:
                on_epoch_end(run.epoch, run.history)
    return _finish(model, run, config, meta, checkpoint_path, final_path)


def _finish(model, run: _Progress, config: dict, meta, checkpoint_path: Path, final_path: Path) -> dict:
    """Write the final weights and the history; return the history."""
    history = run.history
    last = history["epochs"][-1] if history["epochs"] else {}
    history["final_val_acc"] = last.get("val_acc")
    history["train_seconds"] = run.seconds
    budget = config.get("time_budget")
    history["stopped_by"] = "time_budget" if budget and run.seconds >= budget else "epochs"
    history["final_path"] = str(final_path)
    history["checkpoint_path"] = str(checkpoint_path)
    model.eval()
    final_meta = dict(meta or {})
    final_meta.update(val_acc=last.get("val_acc"), epochs=run.epoch, steps=run.step, train_seconds=run.seconds)
    if config.get("adversarial"):
        final_meta.update(adversarial=config["adversarial"], val_pgd_acc=last.get("val_pgd_acc"))
    if config.get(HISTORY_KEY):
        final_meta[HISTORY_KEY] = config[HISTORY_KEY]
    save_classifier(model, final_path, arch=config["arch"], num_classes=config["num_classes"], **final_meta)
    atomic_write_json(history_path(final_path), history, indent=2)
    return history
