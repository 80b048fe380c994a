// CUDA kernels of the QNT op (docs/qnt-op.md): the fused forward (load, 8x8
// DCT, quantize, inverse DCT, store in one pass over memory) and the fused
// backward (grad_x through the rounding surrogate and/or grad_q, one pass
// over the saved input; grad_q a two-stage deterministic reduction).
//
// The transform arithmetic is csrc/qnt_block.h; the thread mapping and every
// address computation are in qnt_cuda_index.cuh, the kernels themselves (CTA
// programs of per-thread phases and barriers) in qnt_cuda_kernels.cuh and the
// host side (checks, allocation, launch shapes) in qnt_cuda_launch.h, all
// shared with the host simulation in csrc/cuda/tests/ that runs every thread
// of the real launches on the CPU in CI. The __global__ kernels are in
// qnt_cuda_forward.cu and qnt_cuda_backward.cu, the device execution policy
// in qnt_cuda_device.cuh; this file binds the ops to them: launches on the
// current stream and the op registration.
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
// Both kernels work on the coefficients of x itself, with `scale` (and the 512
// of the rounding rule R(u) = rint(rint(512 u) / 512)) folded into the step
// tables: inv = 512 scale / q and step = q / scale, so R(Z_x * inv / 512) * step
// == R(Z / q) * q / scale with Z = scale * Z_x. The tables are computed with
// correctly rounded division (__fdiv_rn), which --use_fast_math does not
// approximate; rounding is rintf (cvt.rni), also untouched by fast math (the
// build does not use it).

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "qnt_checks.h"
#include "qnt_cuda_device.cuh"
#include "qnt_cuda_launch.h"

namespace gcln_fast {
namespace qnt_cuda {
namespace {

// (ATen/cuda/CUDAContext.h would give the SM count too, but it pulls in
// cuSPARSE and cuBLAS headers that a bare toolkit may lack.)
struct CudaLauncher {
  cudaStream_t stream;

  int sm_count(const at::Tensor& x) const {
    int n = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, x.get_device()));
    return n;
  }
  void step_tables(uint32_t grid, const StepTableArgs& a) const { launch_step_tables(stream, grid, a); }
  template <typename T>
  void forward(uint32_t grid, const ForwardArgs<T>& a, block::Surrogate s, bool soft) const {
    launch_forward(stream, grid, a, s, soft);
  }
  template <typename T>
  void backward(uint32_t grid, const BackwardArgs<T>& a, block::Surrogate s) const {
    launch_backward(stream, grid, a, s);
  }
  void grad_q_final(uint32_t grid, const GradQFinalArgs& a) const { launch_grad_q_final(stream, grid, a); }
};

void check_on_cuda(const at::Tensor& x) {
  TORCH_CHECK(x.is_cuda(), "gcln_fast::qnt (CUDA): x must be a CUDA tensor, got ", x.device());
}

at::Tensor qnt_cuda(const at::Tensor& x, const at::Tensor& q, double scale, c10::string_view surrogate,
                    bool soft_forward) {
  const block::Surrogate s = parse_surrogate(surrogate);
  check_on_cuda(x);
  const c10::cuda::CUDAGuard guard(x.device());
  CudaLauncher launch{c10::cuda::getCurrentCUDAStream()};
  return qnt_forward(x, q, scale, s, soft_forward, launch);
}

std::tuple<at::Tensor, at::Tensor> qnt_backward_cuda(const at::Tensor& grad_y, const at::Tensor& x,
                                                     const at::Tensor& q, double scale, c10::string_view surrogate,
                                                     bool /*soft_forward: the backward is the same*/,
                                                     bool need_grad_x, bool need_grad_q) {
  const block::Surrogate s = parse_surrogate(surrogate);
  check_on_cuda(x);
  const c10::cuda::CUDAGuard guard(x.device());
  CudaLauncher launch{c10::cuda::getCurrentCUDAStream()};
  return qnt_backward(grad_y, x, q, scale, s, need_grad_x, need_grad_q, launch);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> qnt_rounding_cuda(const at::Tensor& u_in, c10::string_view surrogate) {
  TORCH_CHECK_TYPE(u_in.scalar_type() == at::kFloat, "u must be float32, got ", u_in.scalar_type());
  const block::Surrogate s = parse_surrogate(surrogate);
  const c10::cuda::CUDAGuard guard(u_in.device());
  const at::Tensor u = u_in.contiguous();
  at::Tensor r = at::empty_like(u), v = at::empty_like(u), d = at::empty_like(u);
  if (u.numel() > 0) {
    launch_rounding(c10::cuda::getCurrentCUDAStream(), u.const_data_ptr<float>(), u.numel(), s,
                    r.mutable_data_ptr<float>(), v.mutable_data_ptr<float>(), d.mutable_data_ptr<float>());
  }
  return {r, v, d};
}

}  // namespace
}  // namespace qnt_cuda
}  // namespace gcln_fast

TORCH_LIBRARY_IMPL(gcln_fast, CUDA, m) {
  m.impl("qnt", &gcln_fast::qnt_cuda::qnt_cuda);
  m.impl("qnt_backward", &gcln_fast::qnt_cuda::qnt_backward_cuda);
  m.impl("qnt_rounding", &gcln_fast::qnt_cuda::qnt_rounding_cuda);
}
