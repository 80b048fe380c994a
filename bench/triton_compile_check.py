"""Compile every Triton QNT kernel form for a GPU target without a GPU, and report its resources.

Triton compiles offline (``triton.compile`` with a ``GPUTarget``: the bundled ``ptxas``
makes the cubin), so this checks on any machine that the kernels still compile for real
hardware (the interpreter, which the tests use without a GPU, compiles nothing) and
shows what each configuration of the autotuner costs: registers, local memory (spills),
shared memory, from the bundled ``cuobjdump --dump-resource-usage``. These are compile
facts, not timings; ``bench/bench_triton_variants.py`` times the forms on a GPU.

    python bench/triton_compile_check.py                    # sm_90 (H100/H200), every form
    python bench/triton_compile_check.py --arch 80 --forms separable --quick

Writes Markdown and JSON (``--md``, ``--json``). Run without ``TRITON_INTERPRET``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

if os.environ.get("TRITON_INTERPRET") == "1":
    raise SystemExit("triton_compile_check.py compiles for a GPU: run it without TRITON_INTERPRET=1")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from gcln_fast.kernels import autotune  # noqa: E402

# (kernel, case name, constexprs besides the form's and the configuration's)
CASES = [
    ("forward", "hard", {"SURROGATE": 0, "SOFT": False}),
    ("forward", "soft sine", {"SURROGATE": 2, "SOFT": True}),
    ("backward", "cubic: grad_x + grad_q", {"SURROGATE": 1, "NEED_GX": True, "NEED_GQ": True}),
    ("backward", "identity: grad_q", {"SURROGATE": 0, "NEED_GX": False, "NEED_GQ": True}),
]
TABLES = {"forward": autotune.FORWARD, "backward": autotune.BACKWARD}
FLOAT_ARGS = {"scale", "inv_scale"}
STRIDE_PREFIXES = ("sx", "sy", "sg", "sd")


def signature(fn, dtype: str, constexprs: dict) -> dict:
    """Triton signature of a kernel: data pointers of ``dtype``, q and partial sums float32,
    strides int64, scales float32, other integers int32."""
    sig = {}
    for p in fn.params:
        name = p.name
        if p.is_constexpr:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*fp32" if name in ("q_ptr", "part_ptr") else f"*{dtype}"
        elif name in FLOAT_ARGS:
            sig[name] = "fp32"
        elif name.startswith(STRIDE_PREFIXES) and len(name) == 3:
            sig[name] = "i64"
        else:
            sig[name] = "i32"
    missing = [p.name for p in fn.params if p.is_constexpr and p.name not in constexprs]
    if missing:
        raise SystemExit(f"{fn.__name__}: no value for constexpr {missing}")
    return sig


def resources(cubin: bytes) -> dict:
    """REG, LOCAL (spill bytes per thread), SHARED of the cubin's kernel."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    fields = dict(item.split(":", 1) for line in out.splitlines() if "REG:" in line for item in line.split())
    return {key: int(fields[key]) for key in ("REG", "LOCAL", "SHARED")}


def compile_one(variant: str, kernel: str, case: dict, config, arch: int, dtype: str) -> dict:
    fn = TABLES[kernel][variant].fn  # the JITFunction under the autotuner
    constexprs = {"SEP": variant == "separable", "PRECISION": "ieee", "USE_LIBDEVICE": True, **config.kwargs, **case}
    start = time.perf_counter()
    compiled = triton.compile(
        ASTSource(fn=fn, signature=signature(fn, dtype, constexprs), constexprs=constexprs),
        target=GPUTarget("cuda", arch, 32),
        options={"num_warps": config.num_warps},
    )
    return {"seconds": round(time.perf_counter() - start, 1), **resources(compiled.asm["cubin"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100/H200, 80: A100)")
    parser.add_argument("--forms", default=",".join(autotune.VARIANTS), help="comma-separated kernel forms")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--quick", action="store_true", help="the first autotune configuration of each form only")
    parser.add_argument("--json", type=Path, default=Path("results/triton_compile_check.json"))
    parser.add_argument("--md", type=Path, default=Path("results/triton_compile_check.md"))
    args = parser.parse_args(argv)

    jobs = []
    for variant in args.forms.split(","):
        if variant not in autotune.VARIANTS:
            raise SystemExit(f"--forms: {variant!r} is not one of {autotune.VARIANTS}")
        configs = autotune.configs(variant)[: 1 if args.quick else None]
        jobs += [(variant, kernel, name, case, cfg) for kernel, name, case in CASES for cfg in configs]
    rows = []
    for variant, kernel, name, case, cfg in tqdm(jobs, desc=f"compiling for sm_{args.arch}"):
        res = compile_one(variant, kernel, case, cfg, args.arch, args.dtype)
        rows.append({"form": variant, "kernel": kernel, "case": name, **cfg.kwargs, "warps": cfg.num_warps, **res})
    header = f"Triton {triton.__version__}, target sm_{args.arch}, {args.dtype} data (compile facts, not timings)"
    cols = ["form", "kernel", "case", "BLOCKS", "TILES", "warps", "REG", "LOCAL", "SHARED", "seconds"]
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    print("\n".join(lines))
    for path in (args.json, args.md):
        path.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    args.md.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
