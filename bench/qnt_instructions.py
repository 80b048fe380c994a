"""Instruction counts of the C++ CPU kernel, the repeatable measure on a shared machine.

Runs one pass of the compiled op ``--calls`` times on one thread; under callgrind, with
collection switched on only inside the op, the total divided by the blocks processed is the
instructions per 8x8 block (timings on a busy machine are noise; these counts are not):

    valgrind --tool=callgrind --toggle-collect='*qnt_cpu*' \\
        python bench/qnt_instructions.py forward            # qnt_backward_cpu for backward passes
    callgrind_annotate callgrind.out.* | grep 'PROGRAM TOTALS'

It prints the number of blocks so the division is at hand.
"""

from __future__ import annotations

import argparse
import math

import torch

import gcln_fast  # noqa: F401  (loads the extension)

PASSES = {
    # name -> (surrogate, soft_forward, per-sample table, need_grad_x, need_grad_q); None: forward
    "forward": ("identity", False, False, None, None),
    "forward-per-sample": ("identity", False, True, None, None),
    "forward-soft-cubic": ("cubic", True, False, None, None),
    "backward-grad-q": ("identity", False, False, False, True),
    "backward-cubic": ("cubic", False, False, True, False),
    "backward-cubic-grad-q": ("cubic", False, False, True, True),
    "backward-sine": ("sine", False, False, True, False),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=list(PASSES))
    parser.add_argument("--shape", default="4x3x224x224")
    parser.add_argument("--calls", type=int, default=6)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    shape = tuple(int(v) for v in args.shape.split("x"))
    x, g = torch.rand(shape), torch.randn(shape)
    surrogate, soft, per_sample, need_x, need_q = PASSES[args.which]
    q = torch.full((shape[0] if per_sample else 1, 1, 8, 8), 10.0)
    if per_sample:
        q = q * torch.linspace(0.5, 2.0, shape[0]).reshape(-1, 1, 1, 1)
    for _ in range(args.calls):
        if need_x is None:
            torch.ops.gcln_fast.qnt(x, q, 255.0, surrogate, soft)
        else:
            torch.ops.gcln_fast.qnt_backward(g, x, q, 255.0, surrogate, soft, need_x, need_q)
    blocks = shape[0] * shape[1] * math.ceil(shape[2] / 8) * math.ceil(shape[3] / 8) * args.calls
    print(f"{args.which}: {blocks} blocks processed")


if __name__ == "__main__":
    main()
