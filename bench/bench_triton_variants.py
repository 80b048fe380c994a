"""Compare the Triton QNT kernel forms (``gcln_fast.kernels``) on a GPU.

For each shape and dtype it times, for every form (``dot`` with ``ieee`` and
``tf32x3`` input precision, ``separable``, ``butterfly``), the forward, the fused
backward of the cubic surrogate (grad_x and grad_q) and the identity surrogate's
grad_q, beside ``x.clone()`` (the memory floor), after autotuning, and checks each
form's forward against the reference. Prints a Markdown table: milliseconds,
effective bandwidth (bytes read + written / time) and the ratio to clone, and
writes it as JSON and Markdown. The fastest forward form should become
``qnt_triton.DEFAULT_VARIANT`` (the first call of each form compiles and
autotunes it: allow a minute or two). No GPU run of it has been made yet.

    python bench/bench_triton_variants.py
    python bench/bench_triton_variants.py --shapes 256x3x32x32,32x3x224x224 --dtypes float32,float16

On a machine without CUDA it says so and exits 0 (the interpreter measures
correctness only, not speed).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import torch
from bench_qnt import parse_shapes  # bench/ is on sys.path when a script here runs

FORMS = [("dot", "ieee"), ("dot", "tf32x3"), ("separable", "ieee"), ("butterfly", "ieee")]


COLUMNS = ["shape", "dtype", "kernel", "form", "ms", "GB/s", "x clone", "max abs err vs reference"]


def row(shape, dtype_name, kernel, form, ms, nbytes, clone_ms, err) -> dict:
    return {
        "shape": "x".join(map(str, shape)),
        "dtype": dtype_name,
        "kernel": kernel,
        "form": form,
        "ms": round(ms, 4),
        "GB/s": round(nbytes / ms / 1e6),
        "x clone": round(ms / clone_ms, 2),
        "max abs err vs reference": err,
    }


def print_row(r: dict) -> None:
    print("| " + " | ".join("-" if r[c] is None else str(r[c]) for c in COLUMNS) + " |", flush=True)


def make_table(q_form: str, shape, device) -> torch.Tensor:
    n, c = shape[:2]
    sizes = {"scalar": (1, 1), "channel": (1, c), "sample": (n, c)}[q_form]
    if q_form == "scalar":
        return torch.full((*sizes, 8, 8), 10.0, device=device)
    return torch.rand((*sizes, 8, 8), device=device) * 20 + 2


def bench_case(qt, shape, dtype_name: str, q_form: str, with_backward: bool, device="cuda", timer=None,
               forms=FORMS) -> list[dict]:  # fmt: skip
    """The rows of one shape and dtype. ``timer(fn) -> ms`` is triton.testing.do_bench by default
    (tests/test_gpu_check.py runs this on the CPU under the interpreter with a stand-in timer)."""
    import triton.testing

    from gcln_fast.reference import qnt_reference

    timer = timer or triton.testing.do_bench
    dtype = getattr(torch, dtype_name)
    x = torch.rand(shape, device=device).to(dtype)
    gy = (torch.rand(shape, device=device) - 0.5).to(dtype)
    table = make_table(q_form, shape, device)
    nbytes = 2 * x.numel() * x.element_size()  # forward: read x, write y
    clone_ms = timer(x.clone)
    rows = [row(shape, dtype_name, "clone", "-", clone_ms, nbytes, clone_ms, None)]
    y_ref = qnt_reference(x.float(), table).to(dtype)
    for variant, precision in forms:
        form = f"{variant}/{precision}"
        fwd = functools.partial(qt.launch_qnt, x, table, 255.0, variant=variant, precision=precision)
        err = float(f"{(fwd().float() - y_ref.float()).abs().max().item():.3g}")
        rows.append(row(shape, dtype_name, "forward", form, timer(fwd), nbytes, clone_ms, err))
        if not with_backward:
            continue
        for kernel, surrogate, need_x, traffic in [
            ("backward cubic (grad_x, grad_q)", "cubic", True, 3),  # read x, grad_y; write grad_x
            ("grad_q (identity)", "identity", False, 2),
        ]:
            bwd = functools.partial(qt.launch_backward, gy, x, table, 255.0, surrogate, False, need_x, True,
                                    variant=variant, precision=precision)  # fmt: skip
            ms = timer(bwd)
            rows.append(row(shape, dtype_name, kernel, form, ms, nbytes // 2 * traffic, clone_ms, None))
    for r in rows:
        print_row(r)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="256x3x32x32,32x3x224x224,64x3x512x512")
    parser.add_argument("--dtypes", default="float32,float16")
    parser.add_argument("--q", default="channel", choices=["scalar", "channel", "sample"], help="the table's form")
    parser.add_argument("--no-backward", action="store_true", help="time the forward kernels only")
    parser.add_argument(
        "--forms", default=",".join(f"{v}/{p}" for v, p in FORMS), help="comma-separated FORM/PRECISION to time"
    )
    parser.add_argument("--json", type=Path, default=Path("results/triton_variants.json"))
    parser.add_argument("--md", type=Path, default=Path("results/triton_variants.md"))
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        print(
            "bench_triton_variants.py needs a CUDA GPU (under TRITON_INTERPRET=1 only correctness is measurable); skipping."
        )
        return 0

    import triton

    from gcln_fast.kernels import qnt_triton as qt

    header = (
        f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}; "
        f"default form in gcln_fast.kernels: {qt.DEFAULT_VARIANT} ({qt.DEFAULT_DOT_PRECISION})"
    )
    lines = [header, "", "| " + " | ".join(COLUMNS) + " |", "|---|---|---|---|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    forms = [tuple(f.split("/")) for f in args.forms.split(",")]
    if any(f not in FORMS for f in forms):
        raise SystemExit(f"--forms: each of {args.forms!r} must be one of {[f'{v}/{p}' for v, p in FORMS]}")
    rows = []
    for shape in parse_shapes(args.shapes):
        for dtype_name in args.dtypes.split(","):
            rows += bench_case(qt, shape, dtype_name, args.q, not args.no_backward, forms=forms)
            torch.cuda.empty_cache()
    for path in (args.json, args.md):
        path.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    md_rows = ["| " + " | ".join("-" if r[c] is None else str(r[c]) for c in COLUMNS) + " |" for r in rows]
    args.md.write_text("\n".join(lines + md_rows) + "\n")
    print(f"wrote {args.json} and {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
