// The forward kernels: step tables (for many tables) and the fused forward,
// one instantiation per dtype and forward function (R, or a soft surrogate).
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "qnt_checks.h"
#include "qnt_cuda_device.cuh"

namespace gcln_fast {
namespace qnt_cuda {
namespace {

__global__ void __launch_bounds__(kThreads) step_table_kernel(const StepTableArgs a) {
  step_table_cta(DeviceExec{}, a);
}

// 8 CTAs per SM (full occupancy: 32 registers). ptxas (sm_90) then spills 4 bytes per
// thread (12 for the soft forwards) instead of using 37-40 registers, which would allow
// only 6 CTAs; a default, not measured.
template <typename T, block::Surrogate S, bool kSoft>
__global__ void __launch_bounds__(kThreads, 8) qnt_forward_kernel(const ForwardArgs<T> a) {
  __shared__ ForwardShared sh;
  forward_cta<DeviceExec, T, S, kSoft>(DeviceExec{}, a, sh);
}

template <block::Surrogate S>
__global__ void rounding_kernel(const float* __restrict__ u, int64_t n, float* __restrict__ r, float* __restrict__ v,
                                float* __restrict__ d) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float ui = u[i];
  const float ri = block::round_tie(ui);
  r[i] = ri;
  v[i] = block::surrogate_value<S>(ui, ri);
  d[i] = block::surrogate_slope<S>(ui, ri);
}

}  // namespace

void launch_rounding(cudaStream_t stream, const float* u, int64_t n, block::Surrogate s, float* r, float* v, float* d) {
  const auto grid = static_cast<unsigned>((n + 255) / 256);
  with_surrogate(s, [&](auto sc) { rounding_kernel<decltype(sc)::value><<<grid, 256, 0, stream>>>(u, n, r, v, d); });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_step_tables(cudaStream_t stream, uint32_t grid, const StepTableArgs& a) {
  step_table_kernel<<<grid, kThreads, 0, stream>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The hard forward is the same for every surrogate, and the soft identity is the hard one.
template <typename T>
void launch_forward(cudaStream_t stream, uint32_t grid, const ForwardArgs<T>& a, block::Surrogate s, bool soft) {
  using block::Surrogate;
  if (soft && s == Surrogate::kCubic) {
    qnt_forward_kernel<T, Surrogate::kCubic, true><<<grid, kThreads, 0, stream>>>(a);
  } else if (soft && s == Surrogate::kSine) {
    qnt_forward_kernel<T, Surrogate::kSine, true><<<grid, kThreads, 0, stream>>>(a);
  } else {
    qnt_forward_kernel<T, Surrogate::kIdentity, false><<<grid, kThreads, 0, stream>>>(a);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template void launch_forward<float>(cudaStream_t, uint32_t, const ForwardArgs<float>&, block::Surrogate, bool);
template void launch_forward<c10::Half>(cudaStream_t, uint32_t, const ForwardArgs<c10::Half>&, block::Surrogate, bool);
template void launch_forward<c10::BFloat16>(cudaStream_t, uint32_t, const ForwardArgs<c10::BFloat16>&,
                                            block::Surrogate, bool);

}  // namespace qnt_cuda
}  // namespace gcln_fast
