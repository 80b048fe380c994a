"""Compare the Triton QNT kernel forms (``kernels/qnt_triton.py``) on a GPU.

For each shape and dtype it times the forward kernel and the grad_q kernel of
every variant (``dot`` with ``ieee`` and ``tf32x3`` input precision,
``separable``, ``butterfly``) beside ``x.clone()`` (the memory floor), after autotuning, and
checks each variant's output against the reference. Prints a Markdown table:
milliseconds, effective bandwidth (bytes read + written / time) and the ratio
to clone. The fastest forward form should be ``qnt_triton.DEFAULT_VARIANT``
(the first call of each form compiles and autotunes it: allow a minute or two).

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


def bench_case(qt, shape, dtype_name: str, q_form: str, with_grad_q: bool) -> list[dict]:
    import triton.testing

    from gcln_fast.reference import qnt_reference

    dtype = getattr(torch, dtype_name)
    x = torch.rand(shape, device="cuda").to(dtype)
    gy = (torch.rand(shape, device="cuda") - 0.5).to(dtype)
    if q_form == "scalar":
        table = torch.full((1, 8, 8), 10.0, device="cuda")
    else:
        table = torch.rand(shape[1], 8, 8, device="cuda") * 20 + 2
    nbytes = 2 * x.numel() * x.element_size()  # read x, write y (grad_q: read x and grad_y)
    clone_ms = triton.testing.do_bench(x.clone)
    rows = [row(shape, dtype_name, "clone", "-", clone_ms, nbytes, clone_ms, None)]
    y_ref = qnt_reference(x, table[0] if table.shape[0] == 1 else table)
    for variant, precision in FORMS:
        fwd = functools.partial(qt.launch_qnt, x, table, 255.0, variant=variant, precision=precision)
        err = float(f"{(fwd().float() - y_ref.float()).abs().max().item():.3g}")
        rows.append(row(shape, dtype_name, "forward", f"{variant}/{precision}", triton.testing.do_bench(fwd), nbytes,
                        clone_ms, err))  # fmt: skip
        if with_grad_q:
            grad_q = functools.partial(qt.launch_grad_q, gy, x, table, 255.0, variant=variant, precision=precision)
            rows.append(row(shape, dtype_name, "grad_q", f"{variant}/{precision}", triton.testing.do_bench(grad_q),
                            nbytes, clone_ms, None))  # fmt: skip
    for r in rows:
        print_row(r)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="256x3x32x32,32x3x224x224,64x3x512x512")
    parser.add_argument("--dtypes", default="float32,float16")
    parser.add_argument("--q", default="channel", choices=["scalar", "channel"], help="shared or per-channel table")
    parser.add_argument("--no-grad-q", action="store_true", help="time the forward kernels only")
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
    rows = []
    for shape in parse_shapes(args.shapes):
        for dtype_name in args.dtypes.split(","):
            rows += bench_case(qt, shape, dtype_name, args.q, not args.no_grad_q)
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
