"""One GCLN generator training step with the fused QNT op vs the same step with the PyTorch reference.

The step is what ``train_gcln`` does for G: forward of G on a batch (QNT layer
-> residual encoder-decoder), an L2 reconstruction loss, backward, Adam step.
Both variants start from identical weights and data; only the QNT layer's
``backend`` differs (``"auto"`` -> the fused kernel of the device, vs
``"reference"``). Timed interleaved in one process (median of repeats); the
result is the ratio reference / fused measured in the same run (the machines
are shared and noisy: compare ratios, not seconds across runs).

    python bench/bench_generator_step.py                   # CPU
    python bench/bench_generator_step.py --device cuda --json results/gen_step.json

Prints a Markdown table and writes JSON (``--json``, default ``results/bench_generator_step.json``).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
import torch.nn.functional as F
from _timing import interleaved_times, write_result

from gcln_fast.gcln import Generator
from gcln_fast.ops import resolve_backend


def make_step(backend, args, device, state):
    torch.manual_seed(0)
    g = Generator(q=args.q, trainable_q=args.trainable_q, width=args.width, blocks=args.blocks, backend=backend).to(
        device
    )
    g.load_state_dict(state)
    opt = torch.optim.Adam(g.parameters(), lr=1e-4)

    def step(x, target):
        out = g(x)
        loss = F.mse_loss(out, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=32, help="image height = width")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--q", type=float, default=10.0)
    p.add_argument("--trainable-q", action="store_true")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default="results/bench_generator_step.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    fused_name = resolve_backend("auto", device)
    torch.manual_seed(0)
    state = Generator(q=args.q, trainable_q=args.trainable_q, width=args.width, blocks=args.blocks).state_dict()
    # a non-trivial residual so the whole network is exercised
    state = {k: (torch.randn_like(v) * 0.01 if k.startswith("tail.") else v) for k, v in state.items()}
    x = torch.rand(args.batch, 3, args.size, args.size, device=device)
    target = torch.rand_like(x)
    steps = {
        name: make_step(backend, args, device, state)
        for name, backend in (("fused", "auto"), ("reference", "reference"))
    }
    times = interleaved_times(
        {k: (lambda fn=fn: fn(x, target)) for k, fn in steps.items()},
        repeats=args.repeats,
        warmup=args.warmup,
        device=device,
    )
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["reference"] / med["fused"]
    result = {
        "benchmark": "generator_training_step",
        "device": str(device),
        "fused_backend": fused_name,
        "shape": [args.batch, 3, args.size, args.size],
        "generator": {"width": args.width, "blocks": args.blocks, "q": args.q, "trainable_q": args.trainable_q},
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "median_ms": {k: 1000 * v for k, v in med.items()},
        "min_ms": {k: 1000 * min(v) for k, v in times.items()},
        "speedup_fused_over_reference": ratio,
    }
    shape = "x".join(map(str, result["shape"]))
    print("| step | device | shape | fused backend | fused ms (median) | reference ms (median) | reference / fused |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| G train step (width {args.width}, {args.blocks} blocks, q={args.q:g}{', trainable q' if args.trainable_q else ''}) "
        f"| {device} | {shape} | {fused_name} | {1000 * med['fused']:.2f} | {1000 * med['reference']:.2f} | {ratio:.2f}x |"
    )
    if fused_name == "reference":
        print(
            "\nnote: no compiled kernel is available here, so 'auto' resolved to the reference: the ratio is ~1 by construction."
        )
    write_result(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
