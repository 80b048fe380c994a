"""Train a target classifier, resumably.

Files written by :func:`train_classifier`:

* ``checkpoint_path`` -- the resumable training state, rewritten atomically after every
  epoch: ``{"kind": "classifier_train_state", "arch", "num_classes", "state_dict",
  "meta", "optimizer", "scheduler", "epoch" (completed epochs), "history", "rng",
  "config"}``. It is a superset of the classifier format, so ``load_classifier`` also
  reads it (weights of the last completed epoch).
* ``final_path`` -- the final weights in ``save_classifier`` format (default:
  ``<checkpoint stem>.final<suffix>`` beside ``checkpoint_path``), written when the run
  finishes. This is the file to hand to ``load_classifier``.
* ``<final_path without suffix>.history.json`` -- the per-epoch history (also returned).

Shuffling and augmentation draw from a generator seeded by ``(seed, epoch)``, so an
interrupted run resumed with ``resume=True`` continues from the last completed epoch
and, on the same machine and thread count, ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gcln_fast.data import as_uint8_tensors
from gcln_fast.models.classifiers import save_classifier
from gcln_fast.utils.checkpoint import atomic_save, load_checkpoint
from gcln_fast.utils.io import atomic_write_json

STATE_KIND = "classifier_train_state"


def default_final_path(checkpoint_path) -> Path:
    p = Path(checkpoint_path)
    return p.with_name(f"{p.stem}.final{p.suffix or '.pt'}")


def history_path(final_path) -> Path:
    p = Path(final_path)
    return p.with_name(f"{p.stem}.history.json")


def warmup_cosine(total_steps: int, warmup_frac: float = 0.1, start: float = 0.1, end: float = 0.01):
    """LR multiplier: linear warm-up from ``start`` over the first ``warmup_frac`` of the
    steps, then a cosine decay to ``end`` (well defined for any ``total_steps >= 1``)."""
    warm = max(1, int(round(warmup_frac * total_steps)))

    def factor(step: int) -> float:
        if step < warm:
            return start + (1.0 - start) * step / warm
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


def _dataset_allows_hflip(dataset) -> bool:
    return bool(getattr(dataset, "allows_hflip", False))


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
    seed: int = 0,
    progress: bool = True,
    augment: bool | None = True,
    optimizer: str = "sgd",
    weight_decay: float = 5e-4,
    final_path=None,
    arch: str | None = None,
    num_classes: int | None = None,
    meta: dict | None = None,
    on_epoch_end=None,
) -> dict:
    """Train ``model`` (images in [0, 1] -> logits) with cross-entropy; returns the history.

    Optimiser: ``"sgd"`` (momentum 0.9, Nesterov) or ``"adamw"``, with linear warm-up
    (10% of the steps) to ``lr`` then cosine decay to ``lr/100`` (:func:`warmup_cosine`). ``augment``: ``True`` = random crop after
    replicate padding (2 px; 4 px plus horizontal flips when the dataset says
    ``allows_hflip``, i.e. CIFAR-10, never for digits); ``False``/``None`` = none.
    ``val_set`` may be None. ``on_epoch_end(epoch, history)`` is called after each
    epoch's checkpoint is written. See the module docstring for the files written.

    history: ``{"epochs": [{"epoch", "train_loss", "train_acc", "val_loss", "val_acc",
    "lr", "seconds"}...], "config": {...}, "final_val_acc", "final_path", "checkpoint_path"}``.
    """
    if epochs < 1:
        raise ValueError("epochs must be >= 1")
    if optimizer not in ("sgd", "adamw"):
        raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
    device = torch.device(device)
    checkpoint_path = Path(checkpoint_path)
    final_path = Path(final_path) if final_path is not None else default_final_path(checkpoint_path)
    arch = arch or getattr(model, "arch", None)
    num_classes = num_classes or getattr(model, "num_classes", None)
    if arch is None or num_classes is None:
        raise ValueError("pass arch= and num_classes= (or a model from build_classifier)")

    X, Y = as_uint8_tensors(train_set)
    if len(Y) == 0:
        raise ValueError("empty training set")
    Xv, Yv = as_uint8_tensors(val_set) if val_set is not None else (None, None)
    hflip = _dataset_allows_hflip(train_set)
    pad = (4 if hflip else 2) if augment else 0
    steps_per_epoch = math.ceil(len(Y) / batch_size)
    config = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": optimizer,
        "weight_decay": weight_decay,
        "seed": seed,
        "augment_pad": pad,
        "augment_hflip": bool(augment and hflip),
        "train_size": len(Y),
        "val_size": 0 if Yv is None else len(Yv),
        "arch": arch,
        "num_classes": num_classes,
        "steps_per_epoch": steps_per_epoch,
    }

    torch.manual_seed(seed)
    model.to(device).train()
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(epochs * steps_per_epoch))
    history = {"epochs": [], "config": config}
    start_epoch = 0
    if resume and checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path, map_location="cpu")
        if state.get("kind") != STATE_KIND:
            raise ValueError(f"{checkpoint_path} is not a classifier training state")
        old = state["config"]
        for key in ("epochs", "batch_size", "steps_per_epoch", "optimizer", "arch"):
            if old.get(key) != config[key]:
                raise ValueError(f"cannot resume {checkpoint_path}: {key} was {old.get(key)!r}, now {config[key]!r}")
        model.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history = state["history"]
        start_epoch = int(state["epoch"])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)

    from tqdm.auto import tqdm

    for epoch in range(start_epoch, epochs):
        t0 = time.time()
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(len(Y), generator=gen)
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{epochs}",
            disable=not progress,
            leave=False,
            dynamic_ncols=True,
        )
        for step in bar:
            idx = perm[step * batch_size : (step + 1) * batch_size]
            xb, yb = _to_float(X[idx], device), Y[idx].to(device)
            if pad or hflip and augment:
                xb = augment_batch(xb, pad=pad, hflip=bool(augment and hflip), gen=gen)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(yb)
            correct += (logits.argmax(1) == yb).sum().item()
            seen += len(yb)
            if step % 10 == 0 or step == steps_per_epoch - 1:
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        bar.close()
        rec = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen,
            "lr": sched.get_last_lr()[0],
        }
        if Yv is not None and len(Yv):
            rec["val_acc"], rec["val_loss"] = evaluate_accuracy(model, Xv, Yv, device=device)
        rec["seconds"] = time.time() - t0
        history["epochs"].append(rec)
        if progress:
            val = f" val_acc {rec['val_acc']:.4f}" if "val_acc" in rec else ""
            tqdm.write(
                f"epoch {epoch + 1}/{epochs}: train_loss {rec['train_loss']:.4f} "
                f"train_acc {rec['train_acc']:.4f}{val} ({rec['seconds']:.1f}s)"
            )
        rng = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        }
        atomic_save(
            {
                "kind": STATE_KIND,
                "arch": arch,
                "num_classes": int(num_classes),
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "meta": dict(meta or {}),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "epoch": epoch + 1,
                "history": history,
                "rng": rng,
                "config": config,
            },
            checkpoint_path,
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, history)

    last = history["epochs"][-1] if history["epochs"] else {}
    history["final_val_acc"] = last.get("val_acc")
    history["final_path"] = str(final_path)
    history["checkpoint_path"] = str(checkpoint_path)
    model.eval()
    final_meta = dict(meta or {})
    final_meta.update(val_acc=last.get("val_acc"), epochs=epochs)
    save_classifier(model, final_path, arch=arch, num_classes=num_classes, **final_meta)
    atomic_write_json(history_path(final_path), history, indent=2)
    return history
