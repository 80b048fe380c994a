"""Benchmark of the QNT op: every backend beside what a user would otherwise run, in one process.

For each shape and pass it times the eager PyTorch reference, ``torch.compile(reference)``,
every gcln_fast backend available for the device (C++ CPU, CUDA, Triton; the list comes from
``gcln_fast.available_backends``, so a GPU adds its rows by itself) and ``x.clone()`` (the
memory floor), and reports each as a ratio to eager and to clone measured in the same run
(these machines are noisy: compare ratios, not seconds across runs). The passes:

* ``forward`` (a number q), ``forward, per-sample q`` (an (N, 1, 8, 8) table);
* ``backward, <surrogate>``: the backward alone (autograd.grad on a kept graph) for grad_x
  through the identity (no kernel), cubic and sine surrogates; ``... + grad_q`` also
  differentiates a trainable step (the fused grad_q);
* ``forward+backward``: the old combined row, identity surrogate.

A summary per backend gives the issue's target ratios: forward / clone, per-sample / shared
forward, cubic backward / forward.

    python bench/bench_qnt.py --threads 2                 # CPU, the issue's shapes
    python bench/bench_qnt.py --device cuda --json results/gpu_bench.json

Writes Markdown (``--md``), JSON (``--json``) and a PNG plot (``--png``).
"""

from __future__ import annotations

import argparse
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
from tqdm import tqdm  # noqa: E402

import gcln_fast  # noqa: E402
from gcln_fast.reference import qnt_reference  # noqa: E402

Q = 10.0
DEFAULT_SHAPES = {"cpu": "256x3x32x32,32x3x224x224", "cuda": "256x3x32x32,32x3x224x224,64x3x512x512"}

# pass name -> (what, q kind, surrogate, differentiate q)
MODES = {
    "forward": ("forward", "number", "identity", False),
    "forward, per-sample q": ("forward", "sample", "identity", False),
    "backward, identity + grad_q": ("backward", "number", "identity", True),
    "backward, cubic": ("backward", "number", "cubic", False),
    "backward, cubic + grad_q": ("backward", "number", "cubic", True),
    "backward, sine": ("backward", "number", "sine", False),
    "backward, cubic, per-sample q": ("backward", "sample", "cubic", False),
    "forward+backward": ("fwd+bwd", "number", "identity", False),
}


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    shapes = []
    for item in text.split(","):
        dims = tuple(int(v) for v in item.lower().split("x"))
        if len(dims) != 4 or min(dims) < 1:
            raise SystemExit(f"--shapes: expected NxCxHxW items, got {item!r}")
        shapes.append(dims)
    return shapes


def candidates(device: torch.device):
    """(name, function(x, q, surrogate)) pairs."""

    def reference(x, q, surrogate):
        return qnt_reference(x, q, surrogate=surrogate)

    yield "eager reference", reference
    yield "torch.compile(reference)", torch.compile(reference, dynamic=False)
    for backend in gcln_fast.available_backends(device):
        if backend != "reference":
            yield f"gcln_fast {backend}", lambda x, q, s, b=backend: gcln_fast.qnt(x, q, backend=b, surrogate=s)
    yield "x.clone()", lambda x, q, s: x.clone()


def make_q(kind: str, x: torch.Tensor, trainable: bool):
    if kind == "sample":  # qualities spread over the batch, like JPEG at a random quality per sample
        q = torch.linspace(0.5 * Q, 2 * Q, x.shape[0], device=x.device).reshape(-1, 1, 1, 1).expand(-1, 1, 8, 8)
        return q.contiguous().requires_grad_(trainable)
    return torch.tensor(Q, device=x.device, requires_grad=True) if trainable else Q


def make_call(fn, x, grad, mode: str):
    """A no-argument function running one timed call of ``fn`` in ``mode``."""
    what, q_kind, surrogate, trainable = MODES[mode]
    q = make_q(q_kind, x, trainable)
    if what == "forward":

        def call():
            with torch.no_grad():
                fn(x, q, surrogate)

        return call
    xg = x.detach().requires_grad_()
    inputs = [xg, q] if trainable else [xg]
    if what == "fwd+bwd":
        return lambda: torch.autograd.grad(fn(xg, q, surrogate), inputs, grad)
    y = fn(xg, q, surrogate)  # the backward alone, on a kept graph
    return lambda: torch.autograd.grad(y, inputs, grad, retain_graph=True, allow_unused=True)


def time_call(call, device: torch.device, min_run_time: float, threads: int) -> float:
    """Median seconds per call (torch.utils.benchmark handles CUDA sync and thread pinning)."""
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
    shapes = parse_shapes(args.shapes or DEFAULT_SHAPES[device.type])
    funcs = list(candidates(device))
    rows = []
    progress = tqdm(total=len(shapes) * len(args.modes) * len(funcs), desc="bench_qnt", file=sys.stderr)
    for shape in shapes:
        x = torch.rand(shape, device=device)
        grad = torch.randn(shape, device=device)
        nbytes = 2 * x.numel() * x.element_size()  # read x, write y
        for mode in args.modes:
            timings = {}
            for name, fn in funcs:
                progress.set_postfix_str(f"{'x'.join(map(str, shape))} {mode} {name}")
                timings[name] = time_call(make_call(fn, x, grad, mode), device, args.min_time, threads)
                progress.update()
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
                        "GB/s": nbytes / seconds / 1e9 if MODES[mode][0] == "forward" else None,
                    }
                )
    progress.close()
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
        "summary": summary(rows),
    }


def summary(rows: list[dict]) -> list[dict]:
    """Per shape and gcln_fast backend: the ratios the issue sets targets for (same run)."""
    ms = {(tuple(r["shape"]), r["mode"], r["impl"]): r["ms"] for r in rows}
    out = []
    for shape, mode, impl in ms:
        if mode != "forward" or not impl.startswith("gcln_fast"):
            continue
        fwd = ms[(shape, "forward", impl)]

        def ratio(num_mode, den, impl=impl, shape=shape):
            value = ms.get((shape, num_mode, impl))
            return None if value is None or den is None else value / den

        out.append(
            {
                "shape": list(shape),
                "impl": impl,
                "forward / clone": ratio("forward", ms.get((shape, "forward", "x.clone()"))),
                "per-sample / shared forward": ratio("forward, per-sample q", fwd),
                "cubic backward / forward": ratio("backward, cubic", fwd),
                "cubic backward + grad_q / forward": ratio("backward, cubic + grad_q", fwd),
                "forward vs eager": ms.get((shape, "forward", "eager reference"), float("nan")) / fwd,
                "forward vs compile": ms.get((shape, "forward", "torch.compile(reference)"), float("nan")) / fwd,
            }
        )
    return out


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
    if result["summary"]:
        keys = [k for k in result["summary"][0] if k not in ("shape", "impl")]
        lines += ["", "| shape | backend | " + " | ".join(keys) + " |", "|---|---|" + "---:|" * len(keys)]
        for s in result["summary"]:
            cells = ["-" if s[k] is None else f"{s[k]:.2f}" for k in keys]
            lines.append(f"| {'x'.join(map(str, s['shape']))} | {s['impl']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Time / clone per pass and implementation, one panel per shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = sorted({tuple(r["shape"]) for r in result["rows"]})
    fig, axes = plt.subplots(len(shapes), 1, figsize=(11, 3.2 * len(shapes)), squeeze=False)
    for ax, shape in zip(axes[:, 0], shapes, strict=True):
        rows = [r for r in result["rows"] if tuple(r["shape"]) == shape]
        modes = list(dict.fromkeys(r["mode"] for r in rows))
        impls = list(dict.fromkeys(r["impl"] for r in rows))
        width = 0.8 / len(impls)
        for i, impl in enumerate(impls):
            values = [
                next((r["time_vs_clone"] for r in rows if r["mode"] == m and r["impl"] == impl), 0) for m in modes
            ]
            ax.bar([j + i * width for j in range(len(modes))], values, width, label=impl)
        ax.set_yscale("log")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(modes))], modes, rotation=20, ha="right", fontsize=7)
        ax.set_ylabel("time / x.clone()")
        ax.set_title("x".join(map(str, shape)), fontsize=9)
    axes[0, 0].legend(fontsize=7, ncol=3)
    fig.suptitle(f"QNT op on {result['device']}, {result['threads']} threads", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shapes", default=None, help="comma-separated NxCxHxW (default: the issue's shapes)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds of timed calls per entry")
    parser.add_argument("--json", type=Path, default=Path("results/bench_qnt.json"))
    parser.add_argument("--md", type=Path, default=Path("results/bench_qnt.md"))
    parser.add_argument("--png", type=Path, default=Path("results/bench_qnt.png"))
    args = parser.parse_args(argv)
    result = run(args)
    table = markdown(result)
    print(table)
    for path, text in ((args.json, json.dumps(result, indent=2)), (args.md, table + "\n")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    plot(result, args.png)
    print(f"\nwrote {args.json}, {args.md} and {args.png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
