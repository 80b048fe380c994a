// CUDA kernels of the QNT op (shared/design/qnt-op.md): the fused forward
// (load, 8x8 DCT, quantize, inverse DCT, store in one pass over memory) and
// the fused step-size gradient grad_q (a two-stage deterministic reduction).
//
// The transform arithmetic is csrc/qnt_block.h; the thread mapping and every
// address computation are in qnt_cuda_index.cuh, the kernels themselves (CTA
// programs of per-thread phases and barriers) in qnt_cuda_kernels.cuh and the
// host side (checks, allocation, launch shapes) in qnt_cuda_launch.h, all
// shared with the host simulation in csrc/cuda/tests/ that runs every thread
// of the real launches on the CPU in CI. This file only binds them to CUDA:
// the execution policy, the __global__ kernels, the launches on the current
// stream and the op registration.
//
// Why 8 threads per 8x8 block, one pixel column each (see the index header):
// the op is memory bound (at full HBM bandwidth each H200 SM must finish ~2.5
// fp32 pixels per clock, a budget of ~50 instructions per pixel), so what matters is that
// every warp-wide load and store is one contiguous run, as in a copy kernel,
// and that enough bytes are in flight. Column-per-thread gives contiguous runs
// with plain scalar accesses for any layout (no 16-byte alignment or
// contiguous-row preconditions, so no separate vector and strided paths),
// needs ~32 registers (full occupancy: 2048 threads, each with 8 loads in
// flight), and costs one shared-memory transpose each way (conflict-free
// layouts, 16 bytes of shared traffic per pixel). One thread per whole block
// would skip the transposes but needs ~100 registers for the 64 values, and
// its 32-byte row loads each use half of every sector they touch.
//
// Both kernels work on the coefficients of x itself, with `scale` folded into
// the step tables: inv_step = scale / q and step = q / scale, so
// round(Z_x * inv_step) * step == round(Z / q) * q / scale with Z = scale * Z_x.
// The tables are computed with correctly rounded division (__fdiv_rn), which
// --use_fast_math does not approximate; rounding is rintf (cvt.rni), also
// untouched by fast math.

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "qnt_cuda_launch.h"

namespace gcln_fast {
namespace qnt_cuda {
namespace {

// The device execution policy of the CTA programs (qnt_cuda_kernels.cuh):
// each thread runs its own phase; the barriers are the hardware ones.
struct DeviceExec {
  template <typename V>
  struct Local {
    V v;
    GCLN_HD V& operator[](int) { return v; }
  };
  GCLN_HD uint32_t block() const {
#if defined(__CUDA_ARCH__)
    return blockIdx.x;
#else
    return 0;
#endif
  }
  template <typename F>
  GCLN_HD void threads(F&& f) const {
#if defined(__CUDA_ARCH__)
    f(static_cast<int>(threadIdx.x));
#endif
  }
  // The 8 lanes of the calling thread's group.
  GCLN_HD void sync_group() const {
#if defined(__CUDA_ARCH__)
    __syncwarp(0xFFu << (threadIdx.x & 24));
#endif
  }
  GCLN_HD void sync_cta() const {
#if defined(__CUDA_ARCH__)
    __syncthreads();
#endif
  }
};

__global__ void __launch_bounds__(kThreads) step_table_kernel(const StepTableArgs a) {
  step_table_cta(DeviceExec{}, a);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) qnt_forward_kernel(const ForwardArgs<T> a) {
  __shared__ ForwardShared sh;
  forward_cta(DeviceExec{}, a, sh);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) qnt_grad_q_partial_kernel(const GradQArgs<T> a) {
  __shared__ GradQShared sh;
  grad_q_partial_cta(DeviceExec{}, a, sh);
}

__global__ void __launch_bounds__(kFinalThreads) qnt_grad_q_final_kernel(const GradQFinalArgs a) {
  __shared__ GradQFinalShared sh;
  grad_q_final_cta(DeviceExec{}, a, sh);
}

// (ATen/cuda/CUDAContext.h would give the SM count too, but it pulls in
// cuSPARSE and cuBLAS headers that a bare toolkit may lack.)
struct CudaLauncher {
  cudaStream_t stream;

  int sm_count(const at::Tensor& x) const {
    int n = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, x.get_device()));
    return n;
  }
  void step_tables(uint32_t grid, const StepTableArgs& a) const {
    step_table_kernel<<<grid, kThreads, 0, stream>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  template <typename T>
  void forward(uint32_t grid, const ForwardArgs<T>& a) const {
    qnt_forward_kernel<T><<<grid, kThreads, 0, stream>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  template <typename T>
  void grad_q_partial(uint32_t grid, const GradQArgs<T>& a) const {
    qnt_grad_q_partial_kernel<T><<<grid, kThreads, 0, stream>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  void grad_q_final(uint32_t grid, const GradQFinalArgs& a) const {
    qnt_grad_q_final_kernel<<<grid, kFinalThreads, 0, stream>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

void check_on_cuda(const at::Tensor& x) {
  TORCH_CHECK(x.is_cuda(), "gcln_fast::qnt (CUDA): x must be a CUDA tensor, got ", x.device());
}

at::Tensor qnt_cuda(const at::Tensor& x, const at::Tensor& q, double scale) {
  check_on_cuda(x);
  const c10::cuda::CUDAGuard guard(x.device());
  CudaLauncher launch{c10::cuda::getCurrentCUDAStream()};
  return qnt_forward(x, q, scale, launch);
}

at::Tensor qnt_grad_q_cuda(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& q, double scale) {
  check_on_cuda(x);
  const c10::cuda::CUDAGuard guard(x.device());
  CudaLauncher launch{c10::cuda::getCurrentCUDAStream()};
  return qnt_grad_q(grad_y, x, q, scale, launch);
}

// Bridge from the second-edition schema (docs/qnt-op.md) to the kernels
// above, which implement shared tables (Nq = 1), the hard forward and grad_q of
// the identity surrogate so far; the rest raises until this backend has it.
at::Tensor qnt_cuda_v2(const at::Tensor& x, const at::Tensor& q, double scale, c10::string_view surrogate,
                       bool soft_forward) {
  const block::Surrogate s = parse_surrogate(surrogate);
  TORCH_CHECK(!soft_forward || s == block::Surrogate::kIdentity,
              "gcln_fast::qnt (CUDA): soft_forward is not implemented in this backend yet");
  return qnt_cuda(x, q, scale);
}

std::tuple<at::Tensor, at::Tensor> qnt_backward_cuda_v2(const at::Tensor& grad_y, const at::Tensor& x,
                                                        const at::Tensor& q, double scale, c10::string_view surrogate,
                                                        bool soft_forward, bool need_grad_x, bool need_grad_q) {
  (void)soft_forward;
  const block::Surrogate s = parse_surrogate(surrogate);
  TORCH_CHECK(s == block::Surrogate::kIdentity && !need_grad_x,
              "gcln_fast::qnt_backward (CUDA): only grad_q of the identity surrogate is implemented in this "
              "backend yet");
  at::Tensor gq = need_grad_q ? qnt_grad_q_cuda(grad_y, x, q, scale) : at::empty({0}, q.options());
  return {at::empty({0}, x.options()), gq};
}

}  // namespace
}  // namespace qnt_cuda
}  // namespace gcln_fast

TORCH_LIBRARY_IMPL(gcln_fast, CUDA, m) {
  m.impl("qnt", &gcln_fast::qnt_cuda::qnt_cuda_v2);
  m.impl("qnt_backward", &gcln_fast::qnt_cuda::qnt_backward_cuda_v2);
}
