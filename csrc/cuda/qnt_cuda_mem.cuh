// Every memory access of the CUDA QNT kernels, in one place.
//
// On the device these are plain loads and stores (vectorised where noted).
// Built for the host with GCLN_QNT_HOST_SIM defined (the simulation under
// csrc/cuda/tests/, which runs the kernels' CTA programs for every thread of
// the real launch on the CPU), each access first reports to the simulator,
// which checks it: global accesses inside the tensors the launch was given,
// every output element written exactly once, shared accesses inside the CTA's
// shared memory and ordered by a barrier against other threads' accesses to
// the same word (a missing __syncwarp / __syncthreads is a reported race),
// 16-byte alignment of the vector accesses. Everything else the kernels run is
// the same code in both builds.
#pragma once

#include <cstddef>
#include <cstdint>

#include "qnt_block.h"

#if defined(GCLN_QNT_HOST_SIM) && !defined(__CUDACC__)
namespace gcln_fast {
namespace qnt_cuda {
namespace sim {
// Defined by the simulation (csrc/cuda/tests/qnt_cuda_sim.cpp).
void on_global_load(const void* p, std::size_t bytes);
void on_global_store(const void* p, std::size_t bytes);
void on_shared_load(const void* p, std::size_t bytes);
void on_shared_store(const void* p, std::size_t bytes);
void on_vector_access(const void* p, std::size_t alignment);
}  // namespace sim
}  // namespace qnt_cuda
}  // namespace gcln_fast
#define GCLN_SIM(call) ::gcln_fast::qnt_cuda::sim::call
#else
#define GCLN_SIM(call) ((void)0)
#endif

namespace gcln_fast {
namespace qnt_cuda {

template <typename T>
GCLN_HD T global_load(const T* p) {
  GCLN_SIM(on_global_load(p, sizeof(T)));
  return *p;
}

template <typename T>
GCLN_HD void global_store(T* p, T v) {
  GCLN_SIM(on_global_store(p, sizeof(T)));
  *p = v;
}

GCLN_HD float shared_load(const float* p) {
  GCLN_SIM(on_shared_load(p, sizeof(float)));
  return *p;
}

GCLN_HD void shared_store(float* p, float v) {
  GCLN_SIM(on_shared_store(p, sizeof(float)));
  *p = v;
}

// Eight consecutive floats of shared memory at a 16-byte aligned address, as two float4.
GCLN_HD void shared_load8(const float* p, float v[8]) {
#if defined(__CUDA_ARCH__)
  const float4 a = reinterpret_cast<const float4*>(p)[0];
  const float4 b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
  v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
#else
  GCLN_SIM(on_vector_access(p, 16));
  for (int j = 0; j < 8; ++j) v[j] = shared_load(p + j);
#endif
}

GCLN_HD void shared_store8(float* p, const float v[8]) {
#if defined(__CUDA_ARCH__)
  reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
#else
  GCLN_SIM(on_vector_access(p, 16));
  for (int j = 0; j < 8; ++j) shared_store(p + j, v[j]);
#endif
}

// Eight consecutive read-only floats of global memory at a 16-byte aligned
// address, through the read-only data cache.
GCLN_HD void global_load8_ro(const float* p, float v[8]) {
#if defined(__CUDA_ARCH__)
  const float4 a = __ldg(reinterpret_cast<const float4*>(p));
  const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
  v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
  v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
#else
  GCLN_SIM(on_vector_access(p, 16));
  for (int j = 0; j < 8; ++j) v[j] = global_load(p + j);
#endif
}

// Correctly rounded float division (what --use_fast_math would otherwise approximate).
GCLN_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

}  // namespace qnt_cuda
}  // namespace gcln_fast
