"""Training steps in channels-last against the same steps in NCHW (contiguous), in one run.

Two steps, each built twice from identical weights and data, timed interleaved (median of
repeats) so that both layouts see the same machine load:

* ``pgd_at``: one PGD adversarial-training step of the demo's classifier (``small_cnn``): PGD-5
  at 12/255 on the batch, then an AdamW step on the examples (what ``gcln train-classifier
  --adversarial`` does per batch);
* ``gcln_finetune``: one phase-2 step of ``train_gcln`` for the fine-tuned pair of the demo's
  ``--full-robust`` profile (G width 8, one block, D width 16, PGD-5 through G and C): crafting,
  D's step, G's and C's step and the step's metrics.

The result is the ratio NCHW / channels-last per step, measured in the same run (the machines are
shared and noisy: compare ratios, not seconds across runs). ``gcln_fast.utils.modules.
preferred_memory_format`` picks channels-last for training on every device from this benchmark.

    python bench/bench_memory_format.py --threads 2
    python bench/bench_memory_format.py --device cuda --json results/memory_format_cuda.json

Prints a Markdown table and writes JSON (``--json``, default ``results/bench_memory_format.json``).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
from _timing import interleaved_times, write_result

from gcln_fast.gcln import train as gcln_train
from gcln_fast.gcln.crafting import attack_mix_around
from gcln_fast.gcln.losses import PerceptualLoss
from gcln_fast.gcln.presets import variant
from gcln_fast.gcln.settings import GCLNSettings
from gcln_fast.models import build_classifier
from gcln_fast.training.adversarial import AdversarialTraining
from gcln_fast.training.classifier import _make_optimizer, _train_step

FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
EPS = 12 / 255


def pgd_at_step(fmt, device, x, y, state):
    model = build_classifier("small_cnn", num_classes=10).to(device)
    model.load_state_dict(state)
    model.to(memory_format=fmt).train()
    opt = _make_optimizer(model, "adamw", 1e-3, 5e-4)
    adv = AdversarialTraining(eps=EPS, steps=5)
    xb = x.contiguous(memory_format=fmt)
    gen = torch.Generator().manual_seed(0)

    def step():
        _train_step(model, opt, xb, y, lr=1e-3, adversarial=adv, progress=1.0, gen=gen)

    return step


def gcln_step(fmt, device, x, y, state, batch):
    """A ``train_gcln`` run's phase-2 step for the fine-tuned pair, on ``batch``-image batches of ``x``."""
    C = build_classifier("small_cnn", num_classes=10).to(device)
    C.load_state_dict(state)
    C.eval()
    over = dict(
        variant("finetune"), epochs=1, batch_size=batch, attack_mix=attack_mix_around(EPS, steps=5, spread=(1.0,), fgsm=False),
        generator_kwargs={"width": 8, "blocks": 1}, detector_kwargs={"width": 16}, guard_size=0, device=str(device),
        seed=0, progress=False, detector_epochs=0,
    )  # fmt: skip
    s = gcln_train._run_settings(GCLNSettings().replace(**over), int(x.shape[0]), 1)
    s["memory_format"] = fmt
    C.to(memory_format=fmt)  # as train_gcln puts the caller's C for the run
    run = gcln_train._Run(C, x.cpu(), y.cpu(), "unused", s, device, 0, 1)
    run.perceptual = PerceptualLoss(run.C, source="classifier")
    run.G.train()
    run.D.train()
    batches = list(run.batches(0))
    k = [0]

    def step():
        xb, yb = batches[k[0] % len(batches)]
        k[0] += 1
        run.adversarial_step(xb, yb, 0)

    return step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default="results/bench_memory_format.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    state = build_classifier("small_cnn", num_classes=10).state_dict()
    x = torch.rand(4 * args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (4 * args.batch,), device=device)
    steps = {}
    for fname, fmt in FORMATS.items():
        steps[("pgd_at", fname)] = pgd_at_step(fmt, device, x[: args.batch], y[: args.batch], state)
        steps[("gcln_finetune", fname)] = gcln_step(fmt, device, x, y, state, args.batch)
    times = interleaved_times(steps, repeats=args.repeats, warmup=args.warmup, device=device)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    print("| step | device | batch | NCHW ms (median) | channels-last ms (median) | NCHW / channels-last |")
    print("|---|---|---:|---:|---:|---:|")
    for name in ("pgd_at", "gcln_finetune"):
        a, b = med[(name, "nchw")], med[(name, "channels_last")]
        rows.append({"step": name, "nchw_ms": 1000 * a, "channels_last_ms": 1000 * b, "speedup": a / b})
        print(f"| {name} | {device} | {args.batch} | {1000 * a:.1f} | {1000 * b:.1f} | {a / b:.2f}x |")
    result = {
        "benchmark": "memory_format_training_steps",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "rows": rows,
    }
    write_result(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
