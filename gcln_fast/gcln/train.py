"""Training of GCLN: the detector D, then G and D against each other (section 3.3, eq. 6).

Phase 1 (``detector_epochs``): D learns clean images (label 0) against their attacked versions
(label 1), crafted against the target classifier C by ``gcln_fast.attacks`` (an attack mix).

Phase 2 (``epochs``), per batch of clean images ``x_o`` with labels ``y``:

1. ``x*``: adversarial examples regenerated for *this* batch (:mod:`.crafting`): on C alone
   (oblivious, the paper) or, for a share that ``adaptive`` / ``adaptive_ramp`` schedule from 0
   upwards, through the current G and C (BPDA: the QNT layer's backward is straight-through).
2. G runs once on ``[x*, x_o]``: G also sees the clean images and is asked to return them
   unchanged in feature space (not in the paper: it keeps clean accuracy; a deployed G cannot
   know whether its input was attacked). ``clean_pass=False``: on ``x*`` alone (the terms below
   then have no clean half).
3. D step (the max of eq. 6): clean images (``x_o`` plus a ``buffer_fraction`` of samples of the
   on-the-fly clean set Omega^o) -> 0, ``G(x*)`` -> 1.
4. G step (the min): ``L_G = lam L_P + w_A L_A + mu L_CE + beta L_KL`` where ``L_P`` is the
   perceptual loss of ``G([x*, x_o])`` against ``[x_o, x_o]``, ``L_A = CE(D(G(x*)), clean)``
   with ``w_A`` ramped from 0 to ``1 - lam`` over the first ``adv_warmup`` of the G steps (G
   first learns to restore content, then to fool D), ``L_CE`` the cross-entropy of
   ``C(G([x*, x_o]))`` (through C; ``mu=0``: the paper's loss) and ``L_KL`` the TRADES term
   ``KL(C(G(x_o)) || C(G(x*)))``. With ``finetune_classifier`` a copy of C is trained jointly on
   ``L_CE + L_KL`` (the pair becomes an adversarially trained model with a QNT front end).
5. Recovered images ``G(x*)`` that C classifies correctly are added to Omega^o (a bounded FIFO).

After every phase-2 epoch the divergence guard (:mod:`.guard`) compares clean accuracy through G
with C alone on ``guard_size`` held-out training images and backs off / stops visibly.

Each epoch record holds its wall time (``seconds``). Checkpoints (``out_dir/gcln.pt``, written atomically after every epoch of either phase) hold G,
D (and the fine-tuned C), the optimizers, the counters, the history, the RNG states, the clean
buffer and the configuration as plain types; ``resume=True`` continues from it. They are read
with ``weights_only=True`` only. Per-step records go to ``train_log.csv`` and ``history.json``.

Scale-out: under ``torchrun --nproc_per_node=N`` (or with a process group already initialised)
G, D (and a fine-tuned C) are wrapped in DistributedDataParallel, each rank reads its shard,
``batch_size`` is the global batch, and rank 0 alone writes checkpoints and logs. NCCL on CUDA,
gloo on CPU. On CUDA, G/D/the perceptual network run in bf16 autocast and channels-last. Each
rank keeps its own clean buffer; the checkpoint holds rank 0's.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..data import as_tensors
from ..training.classifier import warmup_cosine
from ..utils.checkpoint import atomic_save, load_checkpoint
from ..utils.guards import ensure_finite
from ..utils.modules import frozen, in_memory_format, preferred_memory_format
from ..utils.resume import reconcile_resume, set_learning_rate
from .buffer import CleanBuffer, update_clean_buffer
from .crafting import DEFAULT_ATTACK_MIX, adaptive_fraction, craft_batch, craft_mix, resolve_attacks, scale_mix
from .detector import ATTACKED, CLEAN, Detector
from .generator import Generator
from .guard import DivergenceGuard, held_out_split
from .logs import mean_of, plain, write_logs
from .losses import PerceptualLoss, adversarial_loss
from .settings import GCLNSettings

CHECKPOINT_NAME = "gcln.pt"
KIND = "gcln"
EXTENDABLE = ("train.epochs", "train.detector_epochs")  # a resume may train longer (lr_decay: over the new length)
__all__ = [
    "CleanBuffer",
    "DEFAULT_ATTACK_MIX",
    "update_clean_buffer",
    "train_gcln",
    "load_generator",
    "load_gcln_classifier",
]
EPOCH_KEYS = (
    "loss_d", "loss_g", "loss_p", "loss_a", "loss_ce", "loss_kl", "d_acc", "d_acc_real", "d_acc_fake",
    "g_fool_rate", "acc_recovered", "acc_clean_through_g", "acc_attacked_no_defence", "adaptive_fraction",
    "weight_a", "q",
)  # fmt: skip


# --------------------------------------------------------------------------- plumbing


def _as_tensors(data, limit=None):
    """(X, Y) float32 [0, 1] images and int64 labels from a (X, Y) pair or a dataset of (image, label)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        X, Y = data
    else:
        X, Y = as_tensors(data, limit=limit)
    X, Y = X.float(), Y.long()
    if limit is not None:
        X, Y = X[:limit], Y[:limit]
    if X.dim() != 4 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"expected images (N, C, H, W) and N labels, got {tuple(X.shape)} and {tuple(Y.shape)}")
    return X, Y


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


def _labels(n_real: int, n_fake: int, device) -> torch.Tensor:
    return torch.cat(
        [
            torch.full((n_real,), CLEAN, dtype=torch.long, device=device),
            torch.full((n_fake,), ATTACKED, dtype=torch.long, device=device),
        ]
    )


def _detector_step(Dw, opt_d, real, fake, autocast):
    """One update of D on clean ``real`` against attacked ``fake`` images.

    Returns detached (loss, accuracy, accuracy on the clean part, accuracy on the attacked part)."""
    inp = torch.cat([real, fake])
    lab = _labels(real.shape[0], fake.shape[0], inp.device)
    with autocast():
        logits = Dw(inp).float()
    loss = F.cross_entropy(logits, lab)
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    opt_d.step()
    hit = (logits.argmax(1) == lab).float().detach()
    n = real.shape[0]
    return loss.detach(), hit.mean(), hit[:n].mean(), hit[n:].mean()


def _ramp(step: int, total: int, frac: float) -> float:
    """0 -> 1 linearly over the first ``frac`` of ``total`` steps (1 throughout when ``frac <= 0``)."""
    if frac <= 0 or total <= 0:
        return 1.0
    return min(1.0, step / (frac * total))


# --------------------------------------------------------------------------- one training run


class _Run:
    """The state of one ``train_gcln`` call: networks, optimizers, data, counters, settings ``s``."""

    def __init__(self, classifier, X, Y, out_dir, s: dict, device, rank: int, world: int):
        self.s, self.device, self.rank, self.world = s, device, rank, world
        self.out_dir, self.ckpt_path = Path(out_dir), Path(out_dir) / CHECKPOINT_NAME
        if s["batch_size"] % world:
            raise ValueError(f"batch_size {s['batch_size']} must be divisible by the world size {world}")
        self.local_bs = s["batch_size"] // world
        cuda = device.type == "cuda"
        self.autocast = (
            (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if (cuda and s["amp"]) else contextlib.nullcontext
        )
        self.mf = s.get("memory_format") or preferred_memory_format(device)  # bench_memory_format sets it
        self.X, self.Y, Xm, Ym = held_out_split(X, Y, s["guard_size"], s["seed"])
        torch.manual_seed(s["seed"])  # same initial G and D on every rank and in every run with this seed
        self.G = Generator(**s["generator"]).to(device, memory_format=self.mf)
        self.D = Detector(**s["detector"]).to(device, memory_format=self.mf)
        self.config = plain({"kind": KIND, "generator": self.G.config, "detector": self.D.config, "train": s["train"]})
        torch.manual_seed(s["seed"] + rank)
        self.gen = torch.Generator().manual_seed(s["seed"] + 1000 * (rank + 1))
        self.C = classifier.to(device).eval()  # the original C: frozen, the guard's and L_P's reference
        self.Ct = self.C  # the classifier G is trained against (a fine-tuned copy with finetune_classifier)
        betas = (0.5, 0.999)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=s["lr"], betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=s["lr_d"], betas=betas)
        self.opt_c = None
        if s["finetune_classifier"]:
            self.Ct = copy.deepcopy(self.C).eval()  # eval: BN statistics stay those of C
            self.Ct.requires_grad_(True)
            self.opt_c = torch.optim.AdamW(self.Ct.parameters(), lr=s["lr_c"], weight_decay=5e-4)
        self.buffer = CleanBuffer(s["clean_buffer_size"])
        self.history = {"epochs": [], "steps": [], "guard": []}
        self.phase1_done = self.epoch_done = self.g_steps = 0
        self.backoffs = 0  # the guard's learning-rate back-offs so far (also when this session has no guard)
        self.stopped = False
        self.guard = None
        if Xm is not None:
            g = s["guard"]
            self.guard = DivergenceGuard(Xm.to(device, memory_format=self.mf), Ym.to(device), self.C, **g)
        self.fns = resolve_attacks(s["attack_mix"], s["attack_fns"])
        from torch.utils.data.distributed import DistributedSampler

        n = int(self.X.shape[0])
        self.sampler = DistributedSampler(
            range(n), num_replicas=world, rank=rank, shuffle=True, seed=s["seed"], drop_last=True
        )
        self.steps_per_epoch = len(self.sampler) // self.local_bs
        if self.steps_per_epoch == 0:
            raise ValueError(f"{n} training images are fewer than one batch of {s['batch_size']}")
        self.total_steps = s["epochs"] * self.steps_per_epoch
        self.show = s["progress"] and rank == 0
        self.Gw, self.Dw, self.Cw = self.G, self.D, self.Ct

    # ---------------------------------------------------------------- state
    def state(self) -> dict:
        st = {
            "kind": KIND,
            "config": self.config,
            "generator": self.G.state_dict(),
            "detector": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "detector_epochs_done": self.phase1_done,
            "epoch": self.epoch_done,
            "steps": self.g_steps,
            "history": self.history,
            "clean_buffer": self.buffer.state_dict(),
            "rng": _rng_state(self.gen, self.device),
            "guard_backoffs": self.backoffs,
            "stopped_by_guard": self.stopped,
        }
        if self.opt_c is not None:
            st["classifier"] = self.Ct.state_dict()
            st["opt_c"] = self.opt_c.state_dict()
        return st

    def load(self, st: dict) -> None:
        self.G.load_state_dict(st["generator"])
        self.D.load_state_dict(st["detector"])
        self.opt_g.load_state_dict(st["opt_g"])
        self.opt_d.load_state_dict(st["opt_d"])
        if self.opt_c is not None:
            self.Ct.load_state_dict(st["classifier"])
            self.opt_c.load_state_dict(st["opt_c"])
        self.history = copy.deepcopy(st["history"])
        self.history.setdefault("guard", [])
        self.phase1_done, self.epoch_done = int(st["detector_epochs_done"]), int(st["epoch"])
        self.g_steps = int(st["steps"])
        self.backoffs = int(st.get("guard_backoffs", 0))
        self.buffer.load_state_dict(st["clean_buffer"])
        _set_rng_state(st["rng"], self.gen, self.device)

    def resume(self) -> None:
        if not (self.s["resume"] and self.ckpt_path.is_file()):
            return
        ck = load_checkpoint(self.ckpt_path, map_location="cpu", kind=KIND)
        if ("classifier" in ck) != (self.opt_c is not None):
            raise ValueError(f"{self.ckpt_path}: finetune_classifier differs from the run that wrote it")
        self.config = reconcile_resume(
            ck["config"], self.config, path=self.ckpt_path, force=self.s["force"], fixed=("generator", "detector"),
            may_change=EXTENDABLE,
        )  # fmt: skip
        self.load(ck)
        self.stopped = bool(ck.get("stopped_by_guard", False))  # a stopped run stays stopped: no silent restart
        if self.stopped and self.rank == 0:
            print(f"GUARD: {self.ckpt_path} was stopped by the divergence guard; not training further", flush=True)
        self.set_rates()  # a forced resume may change the base rates; back-offs (and the decay) still apply
        if self.world > 1:  # per-rank streams stay distinct after a resume
            torch.manual_seed(self.s["seed"] + self.rank + 7919 * (self.phase1_done + self.epoch_done))

    def checkpoint(self) -> None:
        if self.rank == 0:
            atomic_save(self.state(), self.ckpt_path)
            write_logs(self.out_dir, self.history, self.config)

    def wrap_ddp(self) -> None:
        if self.world == 1:
            return
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        self.Gw, self.Dw = DDP(self.G, device_ids=ids), DDP(self.D, device_ids=ids)
        if self.opt_c is not None:
            self.Cw = DDP(self.Ct, device_ids=ids)

    def batches(self, epoch_index: int):
        self.sampler.set_epoch(epoch_index)
        idx = torch.tensor(list(iter(self.sampler)), dtype=torch.long)
        for k in range(self.steps_per_epoch):
            b = idx[k * self.local_bs : (k + 1) * self.local_bs]
            yield self.X[b].to(self.device, memory_format=self.mf), self.Y[b].to(self.device)

    def bar(self, epoch_index: int, desc: str):
        from tqdm.auto import tqdm

        return tqdm(
            self.batches(epoch_index), total=self.steps_per_epoch, desc=desc, disable=not self.show, leave=False
        )

    def record(self, rec: dict, names, values) -> dict:
        """Log one step (means over the ranks); a non-finite loss stops training, naming the step."""
        stats = _all_mean(torch.stack([v.detach().float() for v in values]), self.world).tolist()
        rec.update(zip(names, stats, strict=True))
        rec["step"] = len(self.history["steps"]) + 1
        where = f"phase {rec['phase']}, epoch {rec['epoch']}"
        losses = {k: rec[k] for k in ("loss_g", "loss_d") if k in rec}
        ensure_finite(losses, step=rec["step"], where=where, checkpoint=self.ckpt_path)
        self.history["steps"].append(rec)
        return rec

    # ---------------------------------------------------------------- phase 1: D alone
    def pretrain_detector(self) -> None:
        s = self.s
        while self.phase1_done < s["detector_epochs"]:
            ep, recs, t0 = self.phase1_done, [], time.time()
            bar = self.bar(10_000 + ep, f"D pretrain {ep + 1}/{s['detector_epochs']}")
            for x, y in bar:
                x_adv = craft_mix(self.C, x, y, s["attack_mix"], self.fns, self.gen)
                d = _detector_step(self.Dw, self.opt_d, x, x_adv, self.autocast)
                rec = self.record({"phase": 1, "epoch": ep + 1}, ("loss_d", "d_acc", "d_acc_real", "d_acc_fake"), d)
                recs.append(rec)
                bar.set_postfix(loss_d=f"{rec['loss_d']:.3f}", d_acc=f"{rec['d_acc']:.3f}")
            self.phase1_done += 1
            summary = {"phase": 1, "epoch": ep + 1, "seconds": time.time() - t0}
            summary.update({k: mean_of(recs, k) for k in ("loss_d", "d_acc", "d_acc_real", "d_acc_fake")})
            self.history["epochs"].append(summary)
            self.checkpoint()

    # ---------------------------------------------------------------- phase 2: G vs D
    def generator_terms(self, out, x, y, n):
        """The terms of L_G (tensors) and C's logits on ``out`` when they were computed with gradient."""
        clean_pass = self.s["clean_pass"]  # out is G([x*, x]), else G(x*)
        target, labels = (torch.cat([x, x]), torch.cat([y, y])) if clean_pass else (x, y)
        with frozen(self.D), self.autocast():
            loss_p = self.perceptual(out, target).float()
            logits_d = self.D(out[:n]).float()  # the unwrapped D: no DDP reduction for G's step
        terms = {"loss_p": loss_p, "loss_a": adversarial_loss(logits_d)}
        logits_c = None
        if self.s["mu"] > 0 or self.s["beta"] > 0 or self.opt_c is not None:
            with self.autocast():
                logits_c = self.Cw(out).float()
            terms["loss_ce"] = F.cross_entropy(logits_c, labels)
            if clean_pass:  # the TRADES term needs the clean half
                terms["loss_kl"] = F.kl_div(
                    F.log_softmax(logits_c[:n], 1), F.softmax(logits_c[n:], 1), reduction="batchmean"
                )
        return terms, logits_d, logits_c

    def weights(self) -> dict:
        s = self.s
        w_a = (1.0 - s["lam"]) * _ramp(self.g_steps, self.total_steps, s["adv_warmup"])
        return {"loss_p": s["lam"], "loss_a": w_a, "loss_ce": s["mu"], "loss_kl": s["beta"]}

    def set_rates(self) -> None:
        """G's, D's and C's learning rates, from the settings, the guard's back-offs and (``lr_decay``:
        G's and C's, along a cosine) the step count alone: one rule, so that a resumed, rolled-back
        or decayed run takes the same rates as an uninterrupted one."""
        s = self.s
        backoff = s["guard"]["factor"] ** self.backoffs
        decay = warmup_cosine(self.total_steps + 1, warmup_frac=0.0)(self.g_steps + 1) if s["lr_decay"] else 1.0
        for opt, lr, f in ((self.opt_g, s["lr"], decay), (self.opt_d, s["lr_d"], 1.0), (self.opt_c, s["lr_c"], decay)):
            if opt is not None:
                set_learning_rate(opt, lr * backoff * f)

    def update_g(self, terms: dict, w: dict) -> torch.Tensor:
        loss = sum(w[k] * v for k, v in terms.items() if w[k] or k == "loss_p")
        opts = [o for o in (self.opt_g, self.opt_c) if o is not None]
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss.backward()
        if self.s["grad_clip"]:
            nn.utils.clip_grad_norm_(self.G.parameters(), self.s["grad_clip"])
        for o in opts:
            o.step()
        self.g_steps += 1
        return loss.detach()

    def adversarial_step(self, x, y, ep: int) -> dict:
        s, n = self.s, x.shape[0]
        frac = adaptive_fraction(self.g_steps, self.total_steps, s["adaptive"], s["adaptive_ramp"])
        radius = _ramp(self.g_steps + 1, self.total_steps, s["eps_ramp"])  # never a zero radius
        mix = scale_mix(s["attack_mix"], radius)
        x_adv, _ = craft_batch(self.Ct, self.G, x, y, mix, self.fns, self.gen, frac)
        with self.autocast():
            out = self.Gw(torch.cat([x_adv, x]) if s["clean_pass"] else x_adv).float()
        extra = self.buffer.sample(int(round(s["buffer_fraction"] * n)), self.gen)
        real = x if extra is None else torch.cat([x, extra.to(self.device, memory_format=self.mf)])
        d = _detector_step(self.Dw, self.opt_d, real, out[:n].detach(), self.autocast)
        w = self.weights()
        self.set_rates()
        terms, logits_d, logits_c = self.generator_terms(out, x, y, n)
        loss_g = self.update_g(terms, w)
        with torch.no_grad():
            pred = (logits_c.detach() if logits_c is not None else self.Ct(out.detach())).argmax(1)
            if not s["clean_pass"]:  # the clean-accuracy metric still needs C(G(x)): forward only
                with self.autocast():
                    pred = torch.cat([pred, self.Ct(self.G(x)).argmax(1)])
            correct = pred[:n] == y
            self.buffer.add(out[:n].detach(), correct)
            metrics = [correct.float().mean(), (pred[n:] == y).float().mean()]
            metrics.append((self.Ct(x_adv).argmax(1) == y).float().mean())
            metrics.append((logits_d.argmax(1) == CLEAN).float().mean())
        zero = torch.zeros((), device=x.device)
        names = ("loss_d", "d_acc", "d_acc_real", "d_acc_fake", "loss_g", "loss_p", "loss_a", "loss_ce", "loss_kl")
        values = [*d, loss_g] + [terms.get(k, zero) for k in names[5:]]
        names += ("acc_recovered", "acc_clean_through_g", "acc_attacked_no_defence", "g_fool_rate")
        rec = {"phase": 2, "epoch": ep + 1, "adaptive_fraction": frac, "weight_a": w["loss_a"], "eps_scale": radius}
        rec = self.record(rec, names, values + metrics)
        rec.update(clean_buffer=self.buffer.size, q=float(self.G.q.detach().float().mean()))
        return rec

    def adversarial_epoch(self) -> dict:
        ep, recs, t0 = self.epoch_done, [], time.time()
        self.G.train()
        self.D.train()
        bar = self.bar(ep, f"GCLN epoch {ep + 1}/{self.s['epochs']}")
        for x, y in bar:
            rec = self.adversarial_step(x, y, ep)
            recs.append(rec)
            bar.set_postfix(
                loss_g=f"{rec['loss_g']:.3f}", d_acc=f"{rec['d_acc']:.2f}", acc_rec=f"{rec['acc_recovered']:.2f}"
            )
        summary = {"phase": 2, "epoch": ep + 1, "seconds": time.time() - t0}
        summary.update({k: mean_of(recs, k) for k in EPOCH_KEYS})
        summary.update(clean_buffer=self.buffer.size, clean_buffer_added=self.buffer.added)
        return summary

    def adversarial_phase(self) -> None:
        if self.guard is not None:
            if self.epoch_done == 0 and self.s["epochs"] > 0 and not self.history["guard"]:
                start = self.guard.check(self.G, self.Ct, 0)
                self.history["guard"].append({**start, "action": "start (untrained G: QNT alone)"})
            self.guard.remember(self.state())
        while self.epoch_done < self.s["epochs"] and not self.stopped:
            summary = self.adversarial_epoch()
            if self.guard is not None and not self.guard_accepts(summary):
                continue
            self.epoch_done += 1
            self.history["epochs"].append(summary)
            self.announce(summary)
            self.checkpoint()
            if self.guard is not None:
                self.guard.remember(self.state())

    def guard_accepts(self, summary: dict) -> bool:
        """The guard's verdict on the epoch just run; on a failure, back off or stop (see :mod:`.guard`)."""
        g = self.guard
        event = g.check(self.G, self.Ct, summary["epoch"])
        summary.update(guard_acc_through_g=event["acc_through_g"], guard_acc_classifier=event["acc_classifier"])
        if event["ok"] or g.action == "warn":
            if not event["ok"]:
                g.report(event, "continuing (guard_action='warn')") if self.rank == 0 else None
                self.history["guard"].append({**event, "action": "warn"})
            return True
        backoff = g.action == "backoff" and self.backoffs < g.max_backoffs
        self.load(g.good)  # back to the last epoch that passed (its history, counters and RNG too)
        if backoff:
            self.backoffs += 1
            self.set_rates()
            what = f"epoch rolled back, learning rates x{g.factor} (back-off {self.backoffs}/{g.max_backoffs})"
        else:
            self.stopped = True
            what = "training stopped; the last epoch that passed is kept"
        if self.rank == 0:
            g.report(event, what)
        self.history["guard"].append({**event, "action": what, "seconds": summary["seconds"]})
        if backoff:  # the rolled-back state must carry the lower rates into the next checkpoint
            g.remember(self.state())
        self.checkpoint()
        return False

    def announce(self, e: dict) -> None:
        if not self.show:
            return
        from tqdm.auto import tqdm

        guard = f" | guard: C(G(x)) {e['guard_acc_through_g']:.3f}" if "guard_acc_through_g" in e else ""
        tqdm.write(
            f"epoch {e['epoch']}/{self.s['epochs']}: L_G {e['loss_g']:.4f} L_P {e['loss_p']:.4f} "
            f"L_A {e['loss_a']:.4f} L_D {e['loss_d']:.4f} D acc {e['d_acc']:.3f} | train batches: "
            f"C(G(x*)) {e['acc_recovered']:.3f} C(G(x)) {e['acc_clean_through_g']:.3f} "
            f"C(x*) {e['acc_attacked_no_defence']:.3f} adaptive {e['adaptive_fraction']:.2f}{guard}"
        )

    def run(self) -> dict:
        own = isinstance(self.s["perceptual"], str)
        self.perceptual = (
            PerceptualLoss(self.C, source=self.s["perceptual"], weights=self.s["vgg_weights"],
                           pixel_weight=self.s["pixel_weight"])
            if own
            else self.s["perceptual"]
        ).to(self.device)  # fmt: skip
        self.config["perceptual"] = self.perceptual.source
        try:
            self.resume()
            self.wrap_ddp()
            self.pretrain_detector()
            self.adversarial_phase()
            if self.world > 1:
                dist.barrier()
            if self.rank == 0 and not self.ckpt_path.is_file():  # nothing trained: still leave a loadable G
                self.checkpoint()
        finally:
            if own and self.perceptual.source == "classifier":
                self.perceptual.remove()
        self.G.eval()
        self.D.eval()
        return {
            "generator": self.G,
            "detector": self.D,
            "classifier": self.Ct.eval(),
            "history": self.history,
            "checkpoint": self.ckpt_path,
            "steps": self.g_steps,
            "clean_buffer": self.buffer,
            "stopped_by_guard": self.stopped,
            "perceptual": self.perceptual.source,
        }


# --------------------------------------------------------------------------- public API


def _run_settings(st: GCLNSettings, n_train: int, world: int) -> dict:
    """The flat settings dict a :class:`_Run` reads (guard size resolved, configs of G and D built)."""
    if st.guard_size is None:  # default: on, with up to 256 held-out images
        st = st.replace(guard_size=min(256, n_train // 8))
    s = {f.name: getattr(st, f.name) for f in dataclasses.fields(st)}
    s["lr_d"] = st.d_rate
    s.update(generator=st.generator_config(), detector=st.detector_config(), train=st.recorded(n_train, world))
    s["guard"] = {"margin": st.guard_margin, "action": st.guard_action, "max_backoffs": st.guard_backoffs}
    s["guard"]["factor"] = 0.5
    return s


def train_gcln(
    classifier: nn.Module, train_data, *, out_dir, settings: GCLNSettings | None = None, **overrides
) -> dict:
    """Train G and D of GCLN against ``classifier``; see the module docstring.

    Args:
        classifier: target classifier C (images [0, 1] -> logits); never modified (with
            ``finetune_classifier`` a copy is trained and returned as ``result["classifier"]``).
        train_data: ``(X, Y)`` tensors or a dataset of ``(image, label)``.
        out_dir: where ``gcln.pt``, ``train_log.csv`` and ``history.json`` go.
        settings: a :class:`~.settings.GCLNSettings` (default: its defaults); ``overrides``: any of
            its fields by name (``epochs=3, mu=1.0, ...``), applied on top.

    Returns:
        dict with ``generator`` (eval mode), ``detector``, ``classifier`` (the fine-tuned copy, or
        C), ``history``, ``checkpoint``, ``steps`` (G steps, all runs), ``clean_buffer``,
        ``stopped_by_guard`` and ``perceptual`` (the feature network L_P used).
    """
    st = (settings or GCLNSettings()).replace(**overrides)
    device = _resolve_device(st.device)
    rank, world, created_group = _dist_info(device)
    X, Y = _as_tensors(train_data, limit=st.train_size)
    s = _run_settings(st, int(X.shape[0]), world)
    if rank == 0:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    with frozen(classifier), in_memory_format(classifier, preferred_memory_format(device)):
        try:
            return _Run(classifier, X, Y, out_dir, s, device, rank, world).run()
        finally:
            if created_group:
                dist.destroy_process_group()


def load_generator(path, map_location="cpu") -> Generator:
    """The trained G of a ``train_gcln`` checkpoint, in eval mode: a defence mapping [0, 1] images to [0, 1] images."""
    ck = _load_gcln(path, map_location)
    G = Generator(**ck["config"]["generator"])
    G.load_state_dict(ck["generator"])
    if isinstance(map_location, (str, torch.device)):
        G = G.to(map_location)
    return G.eval()


def load_gcln_classifier(path, base: nn.Module, map_location="cpu") -> nn.Module | None:
    """The jointly fine-tuned C of a ``finetune_classifier`` checkpoint (``base``: a classifier of the
    same architecture, copied, not modified), in eval mode; None when the run did not fine-tune C."""
    ck = _load_gcln(path, map_location)
    if "classifier" not in ck:
        return None
    C = copy.deepcopy(base)
    C.load_state_dict(ck["classifier"])
    return C.eval()


def _load_gcln(path, map_location):
    return load_checkpoint(path, map_location=map_location, kind=KIND)
