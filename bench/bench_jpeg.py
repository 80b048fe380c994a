"""Benchmark of gcln_fast.jpeg beside the differentiable JPEGs a user would otherwise run, in one process.

For each shape and for forward / forward+backward it times ``gcln_fast.jpeg`` (quality 75,
4:2:0, the fused QNT op), ``torch.compile(gcln_fast.jpeg)``, kornia's
``kornia.enhance.jpeg_codec_differentiable`` (when kornia is importable), a Pillow round
trip per image (the ART ``JpegCompression`` / advertorch ``JPEGFilter`` way; its backward is
the identity, as BPDA through it would be) and ``x.clone()`` (the memory floor), and
reports the speed-up of gcln_fast.jpeg over each, measured in the same run (these machines
are noisy: compare ratios, not seconds across runs).

    python bench/bench_jpeg.py --threads 2                  # CPU, the issue's shapes
    python bench/bench_jpeg.py --device cuda                # GPU: same table

Writes Markdown, JSON and a PNG plot (``--out``, default ``results/bench_jpeg``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

# Inductor's pool of compile workers would otherwise keep the cores busy
# while the rows after torch.compile are timed.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_qnt import time_call  # noqa: E402  (one timing rule for every benchmark)
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

import gcln_fast  # noqa: E402

QUALITY = 75
SHAPES = "256x3x32x32,32x3x224x224"
MODES = ("forward", "forward+backward")
OURS = "gcln_fast.jpeg"


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    shapes = []
    for item in text.split(","):
        dims = tuple(int(v) for v in item.lower().split("x"))
        if len(dims) != 4 or dims[1] != 3 or min(dims) < 1:
            raise SystemExit(f"--shapes: expected Nx3xHxW items, got {item!r}")
        shapes.append(dims)
    return shapes


class PillowRoundTrip(torch.autograd.Function):
    """Encode and decode every image with Pillow (libjpeg-turbo); identity backward (BPDA)."""

    @staticmethod
    def forward(ctx, x, quality):
        pixels = (x.detach() * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out = np.empty_like(pixels)
        for i, image in enumerate(pixels):
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, "JPEG", quality=quality)
            out[i] = np.asarray(Image.open(buf))
        return torch.from_numpy(out).to(x.device).permute(0, 3, 1, 2).to(x.dtype).div_(255)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def candidates(skip_compile: bool):
    """(name, function(x)) pairs."""
    yield OURS, lambda x: gcln_fast.jpeg(x, QUALITY)
    if not skip_compile:
        compiled = torch.compile(gcln_fast.jpeg, fullgraph=True, dynamic=False)
        yield f"torch.compile({OURS})", lambda x: compiled(x, QUALITY)
    try:
        from kornia.enhance import jpeg_codec_differentiable
    except ImportError:
        print("kornia is not importable: its rows are skipped", file=sys.stderr)
    else:
        yield (
            "kornia",
            lambda x: jpeg_codec_differentiable(x, torch.full((x.shape[0],), float(QUALITY), device=x.device)),
        )
    yield "Pillow round trip", lambda x: PillowRoundTrip.apply(x, QUALITY)
    yield "x.clone()", lambda x: x.clone()


def make_call(fn, x, grad, mode: str):
    """The timed call: ``fn(x)`` without autograd, or ``fn(x)`` and its backward of ``grad``."""
    if mode == "forward":

        def call():
            with torch.no_grad():
                fn(x)

        return call
    xg = x.detach().requires_grad_()

    def call():
        y = fn(xg)
        if y.requires_grad:  # x.clone() of a leaf does; the floor row times its backward too
            y.backward(grad)
        xg.grad = None

    return call


def run(args) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    shapes = parse_shapes(args.shapes)
    funcs = list(candidates(args.no_compile))
    rows = []
    with tqdm(total=len(shapes) * len(MODES) * len(funcs), desc="bench_jpeg", file=sys.stderr) as bar:
        for shape in shapes:
            g = torch.Generator().manual_seed(0)
            x = torch.rand(shape, generator=g).to(device)
            grad = torch.randn(shape, generator=g).to(device)
            for mode in MODES:
                timings = {}
                for name, fn in funcs:
                    bar.set_postfix_str(f"{'x'.join(map(str, shape))} {mode} {name}")
                    timings[name] = time_call(make_call(fn, x, grad, mode), device, args.min_time, threads)
                    bar.update()
                for name, seconds in timings.items():
                    rows.append(
                        {
                            "shape": list(shape),
                            "mode": mode,
                            "impl": name,
                            "ms": seconds * 1e3,
                            "gcln_fast_speedup": seconds / timings[OURS],
                        }
                    )
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": threads,
        "torch": torch.__version__,
        "quality": QUALITY,
        "subsampling": "4:2:0",
        "dtype": "float32",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "rows": rows,
    }


def markdown(result: dict) -> str:
    lines = [
        f"JPEG Q{result['quality']} 4:2:0, fp32, on {result['device']} ({result['threads']} threads, "
        f"torch {result['torch']}); speed-up = that row's time / {OURS}'s time",
        "",
        "| shape | pass | implementation | time (ms) | gcln_fast.jpeg speed-up |",
        "|---|---|---|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {'x'.join(map(str, r['shape']))} | {r['mode']} | {r['impl']} | {r['ms']:.3f} | "
            f"{r['gcln_fast_speedup']:.1f}x |"
        )
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({("x".join(map(str, r["shape"])), r["mode"]) for r in result["rows"]})
    impls = list(dict.fromkeys(r["impl"] for r in result["rows"]))
    fig, ax = plt.subplots(figsize=(2.2 * len(groups) + 2, 4))
    width = 0.8 / len(impls)
    for k, impl in enumerate(impls):
        ms = [
            next(
                (
                    r["ms"]
                    for r in result["rows"]
                    if r["impl"] == impl and ("x".join(map(str, r["shape"])), r["mode"]) == g
                ),
                np.nan,
            )
            for g in groups
        ]
        ax.bar(np.arange(len(groups)) + k * width, ms, width, label=impl)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, [f"{s}\n{m}" for s, m in groups])
    ax.set_yscale("log")
    ax.set_ylabel("ms per call (log)")
    ax.set_title(f"JPEG Q{result['quality']} on {result['device']}, {result['threads']} threads")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shapes", default=SHAPES, help="comma-separated Nx3xHxW (default: the issue's shapes)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds of timed calls per entry")
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the torch.compile row (it compiles for minutes)"
    )
    parser.add_argument("--out", type=Path, default=Path("results/bench_jpeg"), help="writes OUT.json, OUT.md, OUT.png")
    args = parser.parse_args(argv)
    result = run(args)
    table = markdown(result)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    args.out.with_suffix(".md").write_text(table + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(f"\nwrote {args.out}.json, .md and .png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
