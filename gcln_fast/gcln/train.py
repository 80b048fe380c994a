"""Training of GCLN: the detector D, then G and D against each other (section 3.3, eq. 6).

Phase 1 (``detector_epochs``): D learns clean images (label 0) against their
attacked versions (label 1), crafted against the target classifier C by the
existing attacks (``gcln_fast.attacks``; a mix of attacks and budgets).

Phase 2 (``epochs``), per batch of clean images ``x_o`` with labels ``y``:

1. ``x*``: adversarial examples regenerated against C for *this* batch, so a
   new set every epoch. Oblivious by default (crafted on C alone, as in the
   paper); with ``adaptive=True`` they are crafted through the current G as
   well (on ``C(G(.))``, BPDA: the QNT layer's backward is straight-through).
2. G runs once on ``[x*, x_o]``: **G also sees the clean images** and is asked
   to return them unchanged in feature space. Design choice (not in the paper):
   it keeps clean accuracy; a deployed G cannot know whether its input was
   attacked.
3. D step (the max of eq. 6): cross-entropy on clean images (``x_o`` plus
   samples of the on-the-fly clean set Omega^o) -> 0 and ``G(x*)`` -> 1.
4. G step (the min): ``L_G = lambda * L_P + (1 - lambda) * L_A`` (eq. 3), with
   ``L_P`` the perceptual loss of ``G([x*, x_o])`` against ``[x_o, x_o]`` and
   ``L_A = CE(D(G(x*)), clean)``.
5. Recovered images ``G(x*)`` that C classifies correctly are added to Omega^o
   (a bounded FIFO buffer, ``clean_buffer_size``), which feeds step 3.

Checkpoints (one file, ``out_dir/gcln.pt``, written atomically after every
epoch of either phase) hold G, D, both optimizers, the epoch counters, the
history, the RNG states, the clean buffer and the configuration as plain
types; ``resume=True`` continues from it. They are read with
``weights_only=True`` only. Per-step records go to ``out_dir/train_log.csv``
and ``out_dir/history.json``.

Scale-out: under ``torchrun --nproc_per_node=N`` (or with a process group
already initialised) G and D are wrapped in DistributedDataParallel, each rank
reads its shard through a ``DistributedSampler``, ``batch_size`` is the
*global* batch (each rank takes ``batch_size // world_size``, so the number of
steps is that of a single process), and rank 0 alone writes checkpoints and
logs. NCCL on CUDA, gloo on CPU. On CUDA, G/D/the perceptual network run in
bf16 autocast and channels-last. Each rank keeps its own clean buffer; the
checkpoint holds rank 0's.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .. import attacks
from ..data import as_tensors
from ..utils.checkpoint import atomic_save, load_checkpoint
from ..utils.guards import ensure_finite
from ..utils.io import atomic_write, atomic_write_json
from ..utils.modules import frozen
from ..utils.resume import reconcile_resume, set_learning_rate
from .detector import ATTACKED, CLEAN, Detector
from .generator import Generator
from .losses import PerceptualLoss, adversarial_loss, generator_loss

CHECKPOINT_NAME = "gcln.pt"
KIND = "gcln"
EXTENDABLE = ("train.epochs", "train.detector_epochs")  # a resume may train longer (constant learning rates)

# The attacks G and D are trained on: each batch is split evenly between them.
# Keyword names follow gcln_fast.attacks (fgsm/pgd(model, x, y, **settings)).
# Budgets span 4/255 .. 12/255 (12/255 = 0.05 is the SVHN / embedded-set budget of the paper).
DEFAULT_ATTACK_MIX = (
    {"attack": "pgd", "eps": 8 / 255, "step": 2 / 255, "steps": 7},
    {"attack": "pgd", "eps": 12 / 255, "step": 3 / 255, "steps": 7},
    {"attack": "pgd", "eps": 4 / 255, "step": 1 / 255, "steps": 7},
    {"attack": "fgsm", "eps": 12 / 255},
)


# --------------------------------------------------------------------------- helpers


class CleanBuffer:
    """Bounded FIFO of recovered images that C classified correctly (the on-the-fly part of Omega^o)."""

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.images: torch.Tensor | None = None  # (capacity, C, H, W) float32 on CPU (exactly what C judged)
        self.size = 0
        self.head = 0
        self.added = 0  # total ever added

    def add(self, images: torch.Tensor, keep: torch.Tensor) -> int:
        """Add ``images[keep]`` (``keep`` a boolean mask); returns how many were added."""
        if self.capacity <= 0:
            return 0
        sel = images[keep.to(images.device)].detach().to("cpu", torch.float32)
        n = int(sel.shape[0])
        if n == 0:
            return 0
        if self.images is None:
            self.images = torch.zeros((self.capacity, *sel.shape[1:]), dtype=torch.float32)
        sel = sel[-self.capacity :]
        idx = (self.head + torch.arange(sel.shape[0])) % self.capacity
        self.images[idx] = sel
        self.head = int((self.head + sel.shape[0]) % self.capacity)
        self.size = min(self.capacity, self.size + sel.shape[0])
        self.added += n
        return n

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor | None:
        if self.size == 0 or n <= 0:
            return None
        idx = torch.randint(0, self.size, (n,), generator=generator)
        return self.images[idx].float()

    def state_dict(self) -> dict:
        images = self.images[: self.size].clone() if self.images is not None else torch.zeros(0)
        # store in FIFO order so the write head can be restored
        return {"capacity": self.capacity, "images": images, "head": self.head, "added": self.added}

    def load_state_dict(self, state: dict) -> None:
        self.capacity = int(state["capacity"])
        imgs = state["images"]
        self.size = int(imgs.shape[0]) if imgs.dim() == 4 else 0
        self.head = int(state["head"])
        self.added = int(state["added"])
        if self.size:
            self.images = torch.zeros((self.capacity, *imgs.shape[1:]), dtype=torch.float32)
            self.images[: self.size] = imgs.to(torch.float32)
        else:
            self.images = None


@torch.no_grad()
def update_clean_buffer(
    buffer: CleanBuffer, classifier: nn.Module, recovered: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Add the recovered images that ``classifier`` gets right to ``buffer``; returns the correctness mask."""
    correct = classifier(recovered).argmax(dim=1) == labels
    buffer.add(recovered, correct)
    return correct


def _as_tensors(data, limit=None):
    """(X, Y) float32 [0, 1] images and int64 labels from a (X, Y) pair or a dataset of (image, label)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        X, Y = data
    else:
        X, Y = as_tensors(data, limit=limit)
    X = X.float()
    Y = Y.long()
    if limit is not None:
        X, Y = X[:limit], Y[:limit]
    if X.dim() != 4 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"expected images (N, C, H, W) and N labels, got {tuple(X.shape)} and {tuple(Y.shape)}")
    return X, Y


def _resolve_attacks(mix, attack_fns):
    fns = dict(attack_fns or {})
    for spec in mix:
        fns.setdefault(spec["attack"], getattr(attacks, spec["attack"]))
    return fns


def _craft(model, x, y, mix, fns, gen):
    """Split the batch at random between the attacks of ``mix``; each part is attacked on ``model``."""
    if len(mix) == 1:
        parts = [torch.arange(x.shape[0])]
    else:
        perm = torch.randperm(x.shape[0], generator=gen)
        parts = list(perm.chunk(len(mix)))
    out = x.clone()
    with torch.enable_grad():
        for spec, idx in zip(mix, parts, strict=False):
            if idx.numel() == 0:
                continue
            idx = idx.to(x.device)
            kwargs = {k: v for k, v in spec.items() if k != "attack"}
            adv = fns[spec["attack"]](model, x[idx], y[idx], **kwargs)
            out[idx] = adv.detach().to(out.dtype)
    return out.clamp_(0, 1)


def _rng_state(gen, device):
    state = {"torch": torch.get_rng_state(), "generator": gen.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state, gen, device):
    torch.set_rng_state(state["torch"].cpu())
    gen.set_state(state["generator"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _plain(obj):
    """JSON/weights_only-safe copy (tuples become lists, numbers stay numbers)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def _write_logs(out_dir: Path, history: dict, config: dict) -> None:
    steps = history["steps"]
    keys = []
    for rec in steps:
        for k in rec:
            if k not in keys:
                keys.append(k)

    def write_csv(f):
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(steps)

    atomic_write(out_dir / "train_log.csv", write_csv, binary=False)
    atomic_write_json(out_dir / "history.json", _plain({"config": config, **history}))


def _mean(records, key):
    vals = [r[key] for r in records if r.get(key) is not None]
    return sum(vals) / len(vals) if vals else None


def _dist_info(device: torch.device):
    """(rank, world, created): joins torchrun's process group when launched by it."""
    created = False
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created = True
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), created
    return 0, 1, created


def _resolve_device(device) -> torch.device:
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def _all_mean(value: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        value = value.detach().clone()
        dist.all_reduce(value)
        value /= world
    return value


# --------------------------------------------------------------------------- training


def _detector_step(Dw, opt_d, real, fake, autocast):
    """One update of D on clean ``real`` against attacked ``fake`` images; returns (loss, accuracy), detached."""
    inp = torch.cat([real, fake])
    lab = torch.cat(
        [
            torch.full((real.shape[0],), CLEAN, dtype=torch.long, device=inp.device),
            torch.full((fake.shape[0],), ATTACKED, dtype=torch.long, device=inp.device),
        ]
    )
    with autocast():
        logits = Dw(inp).float()
    loss = F.cross_entropy(logits, lab)
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    opt_d.step()
    return loss.detach(), (logits.argmax(1) == lab).float().mean()


def _classifier_frozen(fn):
    """Run ``fn(classifier, ...)`` with the classifier's parameters frozen, restored even if it raises."""

    @functools.wraps(fn)
    def wrapper(classifier, *args, **kwargs):
        with frozen(classifier):
            return fn(classifier, *args, **kwargs)

    return wrapper


@_classifier_frozen
def train_gcln(
    classifier: nn.Module,
    train_data,
    *,
    out_dir,
    epochs: int = 5,
    detector_epochs: int = 1,
    q: float = 10.0,
    trainable_q: bool = False,
    generator_kwargs: dict | None = None,
    detector_kwargs: dict | None = None,
    batch_size: int = 64,
    lr: float = 2e-3,
    lr_d: float | None = None,
    lam: float = 0.5,
    attack_mix=DEFAULT_ATTACK_MIX,
    attack_fns: dict | None = None,
    adaptive: bool = False,
    clean_buffer_size: int = 1024,
    buffer_fraction: float = 0.5,
    perceptual: PerceptualLoss | str = "auto",
    vgg_weights=None,
    train_size: int | None = None,
    device="auto",
    amp: bool = True,
    seed: int = 0,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Train G and D of GCLN against the frozen ``classifier``; see the module docstring.

    Args:
        classifier: target classifier C (images [0, 1] -> logits); not modified.
        train_data: ``(X, Y)`` tensors or a dataset of ``(image, label)``.
        out_dir: where ``gcln.pt``, ``train_log.csv`` and ``history.json`` go.
        epochs: adversarial (phase 2) epochs. ``detector_epochs``: phase 1 epochs.
        q, trainable_q: the QNT layer of G; ``generator_kwargs`` go to :class:`Generator`.
        batch_size: global batch (split across DDP ranks).
        lr, lr_d: Adam learning rates of G and D (``lr_d`` defaults to ``lr``).
        lam: lambda of eq. 3.
        attack_mix: sequence of ``{"attack": name, **settings}`` (see ``DEFAULT_ATTACK_MIX``).
        attack_fns: ``{name: fn(model, x, y, **settings) -> x_adv}`` overriding ``gcln_fast.attacks``.
        adaptive: also craft G's training examples through the current G (BPDA).
        clean_buffer_size: capacity of the on-the-fly clean set (0 disables it);
            ``buffer_fraction``: buffer samples added to D's clean batch, as a fraction of the batch.
        perceptual: a :class:`PerceptualLoss`, or its ``source`` (``"auto"``, ``"vgg19"``, ``"classifier"``).
        train_size: use only the first ``train_size`` images.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...; amp: bf16 autocast on CUDA.
        resume: continue from ``out_dir/gcln.pt`` if it exists.

    Returns:
        dict with ``generator`` (eval mode, unwrapped), ``detector``, ``history``,
        ``checkpoint`` (path) and ``steps`` (optimizer steps taken in phase 2, all runs).
    """
    from torch.utils.data.distributed import DistributedSampler

    device = _resolve_device(device)
    rank, world, created_group = _dist_info(device)
    out_dir = Path(out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} must be divisible by the world size {world}")
    local_bs = batch_size // world
    lr_d = lr if lr_d is None else lr_d
    use_cuda_fast = device.type == "cuda"
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if (use_cuda_fast and amp) else contextlib.nullcontext
    )
    mf = torch.channels_last if use_cuda_fast else torch.contiguous_format

    X, Y = _as_tensors(train_data, limit=train_size)
    n_train = int(X.shape[0])

    gen_cfg = dict(generator_kwargs or {})
    gen_cfg.setdefault("q", float(q))
    gen_cfg.setdefault("trainable_q", bool(trainable_q))
    torch.manual_seed(seed)  # same initial G and D on every rank and in every run with this seed
    G = Generator(**gen_cfg)
    D = Detector(**(detector_kwargs or {}))
    attack_mix = [dict(s) for s in attack_mix]
    config = _plain(
        {
            "kind": KIND,
            "generator": G.config,
            "detector": D.config,
            "train": {
                "epochs": epochs,
                "detector_epochs": detector_epochs,
                "batch_size": batch_size,
                "lr": lr,
                "lr_d": lr_d,
                "lam": lam,
                "attack_mix": attack_mix,
                "adaptive": adaptive,
                "clean_buffer_size": clean_buffer_size,
                "buffer_fraction": buffer_fraction,
                "train_size": n_train,
                "seed": seed,
                "world_size": world,
            },
        }
    )

    torch.manual_seed(seed + rank)
    gen = torch.Generator().manual_seed(seed + 1000 * (rank + 1))
    C = classifier.to(device).eval()
    G.to(device, memory_format=mf)
    D.to(device, memory_format=mf)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr_d, betas=(0.5, 0.999))
    buffer = CleanBuffer(clean_buffer_size)
    history = {"epochs": [], "steps": []}
    phase1_done = 0
    epoch_done = 0
    g_steps = 0

    if resume and ckpt_path.is_file():
        ck = load_checkpoint(ckpt_path, map_location="cpu", kind=KIND)
        config = reconcile_resume(
            ck["config"], config, path=ckpt_path, force=force, fixed=("generator", "detector"), may_change=EXTENDABLE
        )
        G.load_state_dict(ck["generator"])
        D.load_state_dict(ck["detector"])
        opt_g.load_state_dict(ck["opt_g"])
        opt_d.load_state_dict(ck["opt_d"])
        set_learning_rate(opt_g, lr)  # a forced resume may change them
        set_learning_rate(opt_d, lr_d)
        history = ck["history"]
        phase1_done = int(ck["detector_epochs_done"])
        epoch_done = int(ck["epoch"])
        g_steps = int(ck["steps"])
        buffer.load_state_dict(ck["clean_buffer"])
        _set_rng_state(ck["rng"], gen, device)
        if world > 1:  # per-rank streams stay distinct after a resume
            torch.manual_seed(seed + rank + 7919 * (phase1_done + epoch_done))

    Gw, Dw = G, D
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        Gw = DDP(G, device_ids=ids)
        Dw = DDP(D, device_ids=ids)

    own_perceptual = isinstance(perceptual, str)
    if own_perceptual:
        perceptual = PerceptualLoss(C, source=perceptual, weights=vgg_weights)
    perceptual = perceptual.to(device)
    fns = _resolve_attacks(attack_mix, attack_fns)
    sampler = DistributedSampler(range(n_train), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    steps_per_epoch = len(sampler) // local_bs
    if steps_per_epoch == 0:
        raise ValueError(f"{n_train} training images are fewer than one batch of {batch_size}")
    show = progress and rank == 0

    def batches(epoch_index):
        sampler.set_epoch(epoch_index)
        idx = torch.tensor(list(iter(sampler)), dtype=torch.long)
        for s in range(steps_per_epoch):
            b = idx[s * local_bs : (s + 1) * local_bs]
            yield X[b].to(device, memory_format=mf), Y[b].to(device)

    def checkpoint():
        if rank != 0:
            return
        state = {
            "kind": KIND,
            "config": config,
            "generator": G.state_dict(),
            "detector": D.state_dict(),
            "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(),
            "detector_epochs_done": phase1_done,
            "epoch": epoch_done,
            "steps": g_steps,
            "history": history,
            "clean_buffer": buffer.state_dict(),
            "rng": _rng_state(gen, device),
        }
        atomic_save(state, ckpt_path)
        _write_logs(out_dir, history, config)

    from tqdm.auto import tqdm

    t_start = time.time()
    # ---------------------------------------------------------------- phase 1: detector
    while phase1_done < detector_epochs:
        ep = phase1_done
        recs = []
        bar = tqdm(
            batches(10_000 + ep),
            total=steps_per_epoch,
            desc=f"D pretrain {ep + 1}/{detector_epochs}",
            disable=not show,
            leave=False,
        )
        for x, y in bar:
            x_adv = _craft(C, x, y, attack_mix, fns, gen)
            loss_d, d_acc = _detector_step(Dw, opt_d, x, x_adv, autocast)
            rec = {
                "phase": 1,
                "epoch": ep + 1,
                "step": len(history["steps"]) + 1,
                "loss_d": _all_mean(loss_d, world).item(),
                "d_acc": _all_mean(d_acc, world).item(),
            }
            ensure_finite(
                {"loss_d": rec["loss_d"]}, step=rec["step"], where=f"phase 1, epoch {ep + 1}", checkpoint=ckpt_path
            )
            recs.append(rec)
            history["steps"].append(rec)
            bar.set_postfix(loss_d=f"{rec['loss_d']:.3f}", d_acc=f"{rec['d_acc']:.3f}")
        phase1_done += 1
        history["epochs"].append(
            {
                "phase": 1,
                "epoch": ep + 1,
                "loss_d": _mean(recs, "loss_d"),
                "d_acc": _mean(recs, "d_acc"),
                "seconds": time.time() - t_start,
            }
        )
        checkpoint()

    # ---------------------------------------------------------------- phase 2: G vs D
    while epoch_done < epochs:
        ep = epoch_done
        recs = []
        G.train()
        D.train()
        bar = tqdm(
            batches(ep), total=steps_per_epoch, desc=f"GCLN epoch {ep + 1}/{epochs}", disable=not show, leave=False
        )
        for x, y in bar:
            n = x.shape[0]
            # 1. fresh adversarial examples for this batch (oblivious on C, or through the current G)
            if adaptive:
                with frozen(G):
                    x_adv = _craft(nn.Sequential(G, C), x, y, attack_mix, fns, gen)
            else:
                x_adv = _craft(C, x, y, attack_mix, fns, gen)
            # 2. G on attacked and clean images in one pass
            with autocast():
                out = Gw(torch.cat([x_adv, x]))
            out = out.float()
            rec_adv, rec_clean = out[:n], out[n:]
            # 3. D step: clean (x_o and the on-the-fly clean set) vs G(x*)
            extra = buffer.sample(int(round(buffer_fraction * n)), gen)
            real = x if extra is None else torch.cat([x, extra.to(device, memory_format=mf)])
            loss_d, d_acc = _detector_step(Dw, opt_d, real, rec_adv.detach(), autocast)
            # 4. G step: L_G = lam * L_P + (1 - lam) * L_A
            with frozen(D), autocast():
                loss_p = perceptual(out, torch.cat([x, x]))
                logits_g = D(rec_adv).float()  # the unwrapped D: no DDP reduction for G's step
            loss_a = adversarial_loss(logits_g)
            loss_g = generator_loss(loss_p, loss_a, lam)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            g_steps += 1
            # 5. the on-the-fly clean set, and metrics
            with torch.no_grad():
                correct = update_clean_buffer(buffer, C, rec_adv.detach(), y)
                c_acc_clean = (C(rec_clean.detach()).argmax(1) == y).float().mean()
                c_acc_adv_raw = (C(x_adv).argmax(1) == y).float().mean()
                fool = (logits_g.argmax(1) == CLEAN).float().mean()
            stats = torch.stack(
                [
                    loss_d,
                    loss_g.detach(),
                    loss_p.detach().float(),
                    loss_a.detach(),
                    d_acc,
                    fool,
                    correct.float().mean(),
                    c_acc_clean,
                    c_acc_adv_raw,
                ]
            )
            stats = _all_mean(stats, world).tolist()
            rec = {
                "phase": 2,
                "epoch": ep + 1,
                "step": len(history["steps"]) + 1,
                "loss_d": stats[0],
                "loss_g": stats[1],
                "loss_p": stats[2],
                "loss_a": stats[3],
                "d_acc": stats[4],
                "g_fool_rate": stats[5],
                "acc_recovered": stats[6],
                "acc_clean_through_g": stats[7],
                "acc_attacked_no_defence": stats[8],
                "clean_buffer": buffer.size,
                "q": float(G.q.detach().float().mean().item()),
            }
            ensure_finite(
                {k: rec[k] for k in ("loss_g", "loss_d")},
                step=rec["step"],
                where=f"epoch {ep + 1}",
                checkpoint=ckpt_path,
            )
            recs.append(rec)
            history["steps"].append(rec)
            bar.set_postfix(
                loss_g=f"{rec['loss_g']:.3f}", loss_d=f"{rec['loss_d']:.3f}", acc_rec=f"{rec['acc_recovered']:.2f}"
            )
        epoch_done += 1
        summary = {
            "phase": 2,
            "epoch": ep + 1,
            "seconds": time.time() - t_start,
            "clean_buffer": buffer.size,
            "clean_buffer_added": buffer.added,
        }
        for k in (
            "loss_d",
            "loss_g",
            "loss_p",
            "loss_a",
            "d_acc",
            "g_fool_rate",
            "acc_recovered",
            "acc_clean_through_g",
            "acc_attacked_no_defence",
            "q",
        ):
            summary[k] = _mean(recs, k)
        history["epochs"].append(summary)
        if show:
            tqdm.write(
                f"epoch {ep + 1}/{epochs}: loss_G {summary['loss_g']:.4f} loss_D {summary['loss_d']:.4f} "
                f"acc(C(G(x*))) {summary['acc_recovered']:.3f} acc(C(G(x))) {summary['acc_clean_through_g']:.3f} "
                f"acc(C(x*)) {summary['acc_attacked_no_defence']:.3f} buffer {buffer.size}"
            )
        checkpoint()

    if world > 1:
        dist.barrier()
    if rank == 0 and not ckpt_path.is_file():  # nothing to train (e.g. epochs=0): still leave a loadable G
        checkpoint()
    if own_perceptual and perceptual.source == "classifier":
        perceptual.remove()
    if created_group:
        dist.destroy_process_group()
    G.eval()
    D.eval()
    return {
        "generator": G,
        "detector": D,
        "history": history,
        "checkpoint": ckpt_path,
        "steps": g_steps,
        "clean_buffer": buffer,
    }


def load_generator(path, map_location="cpu") -> Generator:
    """The trained G of a ``train_gcln`` checkpoint, in eval mode: a defence mapping [0, 1] images to [0, 1] images."""
    ck = load_checkpoint(path, map_location=map_location, kind=KIND)
    G = Generator(**ck["config"]["generator"])
    G.load_state_dict(ck["generator"])
    if isinstance(map_location, (str, torch.device)):
        G = G.to(map_location)
    return G.eval()
