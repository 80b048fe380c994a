"""Benchmark of the QNT op: every backend beside what a user would otherwise run, in one process.

For each shape and for forward / forward+backward it times the eager PyTorch
reference, ``torch.compile(reference)``, every compiled backend available for
the device (C++ CPU, CUDA, Triton) and ``x.clone()`` (the memory floor), and
reports each as a ratio to eager and to clone measured in the same run (these
machines are noisy: compare ratios, not seconds across runs).

    python bench/bench_qnt.py                       # CPU, the issue's shapes
    python bench/bench_qnt.py --device cuda --json results/gpu_bench.json

Prints a Markdown table and writes JSON (``--json``) and Markdown (``--md``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path

# Inductor's pool of compile workers would otherwise keep the cores busy
# while the rows after torch.compile are timed.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import torch  # noqa: E402
import torch.utils.benchmark as tbench  # noqa: E402

import gcln_fast  # noqa: E402
from gcln_fast.reference import qnt_reference  # noqa: E402

Q = 10.0
DEFAULT_SHAPES = {"cpu": "256x3x32x32,32x3x224x224", "cuda": "256x3x32x32,32x3x224x224,64x3x512x512"}


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    shapes = []
    for item in text.split(","):
        dims = tuple(int(v) for v in item.lower().split("x"))
        if len(dims) != 4 or min(dims) < 1:
            raise SystemExit(f"--shapes: expected NxCxHxW items, got {item!r}")
        shapes.append(dims)
    return shapes


def candidates(device: torch.device):
    """(name, function(x, q)) pairs; ``q`` is 10, as a number or a trainable 0-d tensor."""

    def reference(x, q):
        return qnt_reference(x, q)

    yield "eager reference", reference
    yield "torch.compile(reference)", torch.compile(reference, dynamic=False)
    for backend in gcln_fast.available_backends(device):
        if backend != "reference":
            yield f"gcln_fast {backend}", functools.partial(gcln_fast.qnt, backend=backend)
    yield "x.clone()", lambda x, q: x.clone()


MODES = {
    # pass name -> (needs grad, q): the trainable pass also runs the fused grad_q kernel.
    "forward": (False, "number"),
    "forward+backward": (True, "number"),
    "forward+backward, trainable q": (True, "parameter"),
}


def time_call(fn, x, grad, mode: str, device: torch.device, min_run_time: float, threads: int) -> float:
    """Median seconds per call (torch.utils.benchmark handles CUDA sync and thread pinning)."""
    needs_grad, q_kind = MODES[mode]
    q = torch.tensor(Q, device=device, requires_grad=True) if q_kind == "parameter" else Q
    if not needs_grad:

        def call():
            with torch.no_grad():
                fn(x, q)
    else:
        xg = x.detach().requires_grad_()

        def call():
            fn(xg, q).backward(grad)
            xg.grad = None
            if q_kind == "parameter":
                q.grad = None

    for _ in range(3):  # warm-up: compilation, autotuning, allocator
        call()
    if device.type == "cuda":
        torch.cuda.synchronize()
    timer = tbench.Timer(stmt="call()", globals={"call": call}, num_threads=threads)
    return timer.blocked_autorange(min_run_time=min_run_time).median


def run(args) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    shapes = parse_shapes(args.shapes or DEFAULT_SHAPES[device.type])
    funcs = list(candidates(device))
    total = len(shapes) * len(args.modes) * len(funcs)
    done = 0
    for shape in shapes:
        x = torch.rand(shape, device=device)
        grad = torch.randn(shape, device=device)
        nbytes = 2 * x.numel() * x.element_size()  # read x, write y
        for mode in args.modes:
            timings = {}
            for name, fn in funcs:
                done += 1
                print(
                    f"[{done}/{total}] {mode:16s} {'x'.join(map(str, shape)):15s} {name}", file=sys.stderr, flush=True
                )
                timings[name] = time_call(fn, x, grad, mode, device, args.min_time, threads)
            eager, floor = timings["eager reference"], timings["x.clone()"]
            for name, seconds in timings.items():
                rows.append(
                    {
                        "shape": list(shape),
                        "mode": mode,
                        "impl": name,
                        "ms": seconds * 1e3,
                        "speedup_vs_eager": eager / seconds,
                        "time_vs_clone": seconds / floor,
                        "fraction_of_clone_bandwidth": floor / seconds,
                        "GB/s": nbytes / seconds / 1e9 if mode == "forward" else None,
                    }
                )
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": threads,
        "torch": torch.__version__,
        "q": Q,
        "dtype": "float32",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "rows": rows,
    }


def markdown(result: dict) -> str:
    lines = [
        f"QNT op, fp32, q={result['q']:g}, on {result['device']} ({result['threads']} threads, torch {result['torch']})",
        "",
        "| shape | pass | implementation | time (ms) | speed-up vs eager | time / clone | GB/s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        gbs = f"{r['GB/s']:.1f}" if r["GB/s"] is not None else "-"
        lines.append(
            f"| {'x'.join(map(str, r['shape']))} | {r['mode']} | {r['impl']} | {r['ms']:.3f} | "
            f"{r['speedup_vs_eager']:.1f}x | {r['time_vs_clone']:.2f} | {gbs} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shapes", default=None, help="comma-separated NxCxHxW (default: the issue's shapes)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds of timed calls per entry")
    parser.add_argument("--json", type=Path, default=Path("results/bench_qnt.json"))
    parser.add_argument("--md", type=Path, default=Path("results/bench_qnt.md"))
    args = parser.parse_args(argv)
    result = run(args)
    table = markdown(result)
    print(table)
    for path, text in ((args.json, json.dumps(result, indent=2)), (args.md, table + "\n")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"\nwrote {args.json} and {args.md}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
