// The CUDA side of the kernels' execution: the device policy of the CTA
// programs (qnt_cuda_kernels.cuh) and the launch functions that the .cu files
// define (forward and backward are separate translation units, so that nvcc
// compiles them in parallel).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "qnt_block.h"
#include "qnt_cuda_kernels.cuh"

namespace gcln_fast {
namespace qnt_cuda {

// Each thread runs its own phase; the barriers are the hardware ones.
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

// Launches on `stream` (qnt_cuda_forward.cu, qnt_cuda_backward.cu); T is float, c10::Half or c10::BFloat16.
void launch_step_tables(cudaStream_t stream, uint32_t grid, const StepTableArgs& a);
template <typename T>
void launch_forward(cudaStream_t stream, uint32_t grid, const ForwardArgs<T>& a, block::Surrogate s, bool soft);
template <typename T>
void launch_backward(cudaStream_t stream, uint32_t grid, const BackwardArgs<T>& a, block::Surrogate s);
void launch_grad_q_final(cudaStream_t stream, uint32_t grid, const GradQFinalArgs& a);
// R(u), s(u), s'(u) elementwise with the kernels' device code (for the tie-rule tests).
void launch_rounding(cudaStream_t stream, const float* u, int64_t n, block::Surrogate s, float* r, float* v, float* d);

}  // namespace qnt_cuda
}  // namespace gcln_fast
