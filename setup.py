"""Builds gcln_fast._C: the QNT op's schema and its C++ CPU (always) and CUDA (when possible) kernels.

Environment:
  GCLN_FAST_NO_CUDA=1     build without the CUDA sources even where nvcc exists.
  GCLN_FAST_CPU_ISA=...   "avx2" (the default where the build machine has AVX2, FMA
                          and F16C) or "generic" (at::vec's portable fallback): set it
                          when building for other machines than this one.
  TORCH_CUDA_ARCH_LIST    CUDA targets; defaults to Ampere and Hopper ("8.0;9.0+PTX")
                          when no GPU is visible.
"""

import glob
import os
import shutil

# Torch guesses CUDA_HOME from the nvcc on PATH, which may be a wrapper outside
# the toolkit; point it at the real toolkit before cpp_extension reads it.
if "CUDA_HOME" not in os.environ and os.path.isfile("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402
from setuptools import find_packages, setup  # noqa: E402
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def _cpu_has(*flags) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read().split()
    except OSError:
        return False
    return all(flag in info for flag in flags)


# The kernel's vectors are 8 lanes wide (one block row). Measured on an
# AVX-512 machine (single thread, (32, 3, 224, 224)): AVX-512VL's larger
# register file did not change the time, and 16-lane vectors holding two
# blocks were about 1.4x slower, so AVX2 is the fast path.
_ISA_FLAGS = {"generic": [], "avx2": ["-mavx2", "-mfma", "-mf16c"]}


def _cpu_isa_flags() -> list:
    default = "avx2" if _cpu_has("avx2", "fma", "f16c") else "generic"
    isa = os.environ.get("GCLN_FAST_CPU_ISA", default)
    if isa not in _ISA_FLAGS:
        raise SystemExit(f"GCLN_FAST_CPU_ISA must be one of {sorted(_ISA_FLAGS)}, got {isa!r}")
    return _ISA_FLAGS[isa]


def _want_cuda() -> bool:
    if os.environ.get("GCLN_FAST_NO_CUDA", "0") == "1":
        return False
    return torch.version.cuda is not None and CUDA_HOME is not None and shutil.which("nvcc") is not None


def _extension():
    cxx = ["-O3", "-std=c++20", "-fopenmp", *_cpu_isa_flags()]
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    include_dirs = [os.path.join(HERE, "csrc")]
    if _want_cuda():
        if not torch.cuda.is_available() and "TORCH_CUDA_ARCH_LIST" not in os.environ:
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        nvcc = ["-O3", "-std=c++20", "-lineinfo"]
        return CUDAExtension(
            "gcln_fast._C", sources, include_dirs=include_dirs, extra_compile_args={"cxx": cxx, "nvcc": nvcc}
        )
    return CppExtension("gcln_fast._C", sources, include_dirs=include_dirs, extra_compile_args={"cxx": cxx})


setup(
    # kernels/ (the Triton kernels) installs as gcln_fast.kernels: no top-level name but gcln_fast.
    packages=find_packages(include=["gcln_fast", "gcln_fast.*"]) + ["gcln_fast.kernels"],
    package_dir={"gcln_fast.kernels": "kernels"},
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
