// The backward kernels: the fused pass (grad_x and/or the grad_q partial
// sums, one instantiation per dtype and surrogate) and the fixed-order final
// sum of grad_q.
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "qnt_checks.h"
#include "qnt_cuda_device.cuh"

namespace gcln_fast {
namespace qnt_cuda {
namespace {

template <typename T, block::Surrogate S>
__global__ void __launch_bounds__(kThreads) qnt_backward_kernel(const BackwardArgs<T> a) {
  __shared__ BackwardShared sh;
  backward_cta<DeviceExec, T, S>(DeviceExec{}, a, sh);
}

__global__ void __launch_bounds__(kFinalThreads) qnt_grad_q_final_kernel(const GradQFinalArgs a) {
  __shared__ GradQFinalShared sh;
  grad_q_final_cta(DeviceExec{}, a, sh);
}

}  // namespace

template <typename T>
void launch_backward(cudaStream_t stream, uint32_t grid, const BackwardArgs<T>& a, block::Surrogate s) {
  with_surrogate(s, [&](auto surrogate) {
    qnt_backward_kernel<T, decltype(surrogate)::value><<<grid, kThreads, 0, stream>>>(a);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_grad_q_final(cudaStream_t stream, uint32_t grid, const GradQFinalArgs& a) {
  qnt_grad_q_final_kernel<<<grid, kFinalThreads, 0, stream>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template void launch_backward<float>(cudaStream_t, uint32_t, const BackwardArgs<float>&, block::Surrogate);
template void launch_backward<c10::Half>(cudaStream_t, uint32_t, const BackwardArgs<c10::Half>&, block::Surrogate);
template void launch_backward<c10::BFloat16>(cudaStream_t, uint32_t, const BackwardArgs<c10::BFloat16>&,
                                             block::Surrogate);

}  // namespace qnt_cuda
}  // namespace gcln_fast
