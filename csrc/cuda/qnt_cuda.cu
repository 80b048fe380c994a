// CUDA kernels of the QNT op (docs/qnt-op.md): the fused forward
// (load, 8x8 DCT, quantize, inverse DCT, store in one pass over memory) and
// the fused step-size gradient grad_q (a two-stage deterministic reduction).
//
// The transform arithmetic is csrc/qnt_block.h; the thread mapping, every
// address computation and the per-thread phases are in qnt_cuda_index.cuh
// (host-testable). This file is launches, step tables and the reductions.
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

#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "qnt_block.h"
#include "qnt_checks.h"
#include "qnt_cuda_index.cuh"

// The op's dtypes only (AT_DISPATCH_FLOATING_TYPES_AND2 would also build double kernels).
#define GCLN_DISPATCH_QNT_TYPES(TYPE, NAME, ...)                  \
  AT_DISPATCH_SWITCH(TYPE, NAME,                                       \
                     AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__)         \
                     AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__)          \
                     AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))

namespace gcln_fast {
namespace qnt_cuda {
namespace {

// ----------------------------------------------------------------------------- kernels

// Step tables (Cq, 2, 8, kRowPitch) for Cq > kMaxSmemTables channels, which
// the forward kernel then reads through the read-only cache. Dividing in
// every CTA would cost two IEEE divisions per pixel; for 1..4 tables the
// forward kernel divides in shared memory instead and skips this launch.
__global__ void step_table_kernel(const float* __restrict__ q, int64_t entries, float scale,
                                  float* __restrict__ tables) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= entries) return;
  const int64_t c = e >> 6;
  const int k = static_cast<int>(e & 63);
  float* t = tables + c * kTableFloats + (k >> 3) * kRowPitch + (k & 7);
  t[0] = __fdiv_rn(scale, q[e]);
  t[kBlockFloats] = __fdiv_rn(q[e], scale);
}

// Fills shared-memory step tables for `count` channels of q (count <= kMaxSmemTables).
__device__ __forceinline__ void fill_smem_tables(float* s_tab, const float* __restrict__ q, int count, float scale) {
  for (int e = threadIdx.x; e < count * 64; e += blockDim.x) {
    const int c = e >> 6, k = e & 63;
    float* t = s_tab + c * kTableFloats + (k >> 3) * kRowPitch + (k & 7);
    t[0] = __fdiv_rn(scale, q[e]);
    t[kBlockFloats] = __fdiv_rn(q[e], scale);
  }
}

__device__ __forceinline__ void ldg8(const float* __restrict__ p, float v[8]) {
  const float4 a = __ldg(reinterpret_cast<const float4*>(p));
  const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
  v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
  v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}

// One CTA = kGroups blocks, consecutive in Geom's order; no loop, so every
// thread has its 8 loads in flight at once and the grid covers the tensor.
template <typename T>
__global__ void __launch_bounds__(kThreads)
qnt_forward_kernel(const T* __restrict__ x, Strides sx, T* __restrict__ y, Strides sy, Geom g,
                   const float* __restrict__ q, int cq, const float* __restrict__ gtables, float scale) {
  __shared__ __align__(16) float s_tab[kMaxSmemTables * kTableFloats];
  __shared__ __align__(16) float s_buf[kGroups * kFwdGroupPitch];
  if (gtables == nullptr) {
    fill_smem_tables(s_tab, q, cq, scale);
    __syncthreads();
  }
  const int group = threadIdx.x >> 3;
  const int i = threadIdx.x & 7;
  const uint32_t slot = blockIdx.x * static_cast<uint32_t>(kGroups) + group;
  if (slot >= g.total) return;  // whole groups only: the group barrier below stays valid
  const unsigned lanes = 0xFFu << (threadIdx.x & 24);
  float* buf = s_buf + group * kFwdGroupPitch;
  const BlockPos b = slot_position(slot, g);

  forward_columns(x, sx, g, b, i, buf);
  __syncwarp(lanes);
  const int tc = cq == 1 ? 0 : b.c;
  float inv[8], step[8];
  if (gtables == nullptr) {
    load8(s_tab + tc * kTableFloats + i * kRowPitch, inv);
    load8(s_tab + tc * kTableFloats + kBlockFloats + i * kRowPitch, step);
  } else {
    ldg8(gtables + static_cast<int64_t>(tc) * kTableFloats + i * kRowPitch, inv);
    ldg8(gtables + static_cast<int64_t>(tc) * kTableFloats + kBlockFloats + i * kRowPitch, step);
  }
  forward_rows(buf, i, inv, step);  // a lane rewrites only the row it read: no barrier inside
  __syncwarp(lanes);
  forward_store(buf, y, sy, g, b, i);
}

// Stage 1 of grad_q. The grid is `cq` groups of `ctas` CTAs; group c covers
// the blocks whose coefficients feed grad_q[c] (channel c, or every block
// when q is shared) with a grid-stride loop, so each thread accumulates its 8
// coefficients of the fixed row i in registers. The CTA then sums its 32
// groups in a fixed order and writes one 64-float partial row: no atomics, and
// the launch shape depends only on the tensor shape and the SM count, so the
// result is bitwise reproducible.
template <typename T>
__global__ void __launch_bounds__(kThreads)
qnt_grad_q_partial_kernel(const T* __restrict__ gy, Strides sg, const T* __restrict__ x, Strides sx, Geom g,
                          const float* __restrict__ q, int cq, float scale, uint32_t ctas,
                          float* __restrict__ partials) {
  __shared__ __align__(16) float s_inv[kBlockFloats];
  __shared__ __align__(16) float s_buf[kGroups * kGradGroupPitch];
  const uint32_t qgroup = blockIdx.x / ctas;
  const uint32_t cta = blockIdx.x - qgroup * ctas;
  const float* qg = q + static_cast<int64_t>(qgroup) * 64;
  for (int k = threadIdx.x; k < 64; k += blockDim.x) s_inv[(k >> 3) * kRowPitch + (k & 7)] = __fdiv_rn(scale, qg[k]);
  __syncthreads();

  const int group = threadIdx.x >> 3;
  const int i = threadIdx.x & 7;
  const unsigned lanes = 0xFFu << (threadIdx.x & 24);
  float* bx_buf = s_buf + group * kGradGroupPitch;
  float* bg_buf = bx_buf + kBlockFloats;
  float inv[8];
  load8(s_inv + i * kRowPitch, inv);

  float acc[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) acc[j] = 0.0f;
  const uint32_t count = cq == 1 ? g.total : g.per_channel;
  const uint32_t stride = ctas * static_cast<uint32_t>(kGroups);
  for (uint32_t s = cta * static_cast<uint32_t>(kGroups) + group; s < count; s += stride) {
    const BlockPos b = cq == 1 ? slot_position(s, g) : channel_slot_position(s, static_cast<int>(qgroup), g);
    grad_columns(x, sx, gy, sg, g, b, i, bx_buf, bg_buf);
    __syncwarp(lanes);
    grad_rows(bx_buf, bg_buf, i, inv, acc);
    __syncwarp(lanes);  // the next write_column overwrites rows other lanes read above
  }

  __syncthreads();
  float* s_red = s_buf;  // kGroups x 64, reusing the transpose buffers
  store8(s_red + group * 64 + i * 8, acc);
  __syncthreads();
  if (threadIdx.x < 64) {
    float sum = 0.0f;
#pragma unroll 8
    for (int r = 0; r < kGroups; ++r) sum += s_red[r * 64 + threadIdx.x];
    partials[static_cast<int64_t>(blockIdx.x) * 64 + threadIdx.x] = sum;
  }
}

// Stage 2: CTA c sums the `ctas` partial rows of group c in a fixed order
// (kFinalRows interleaved running sums, then those in order; several running
// sums keep enough loads in flight that this pass is not latency bound) and
// applies the contract's 1/scale: G is the transform of grad_y itself and
// round(t) - t is taken on t = Z_x * scale / q = Z / q, so nothing else
// carries a scale.
constexpr int kFinalRows = 16;

__global__ void __launch_bounds__(64 * kFinalRows)
qnt_grad_q_final_kernel(const float* __restrict__ partials, uint32_t ctas, float scale, float* __restrict__ out) {
  __shared__ float s_sum[kFinalRows][64];
  const int k = threadIdx.x, r = threadIdx.y;
  const float* p = partials + static_cast<int64_t>(blockIdx.x) * ctas * 64 + k;
  float sum = 0.0f;
#pragma unroll 4
  for (uint32_t row = r; row < ctas; row += kFinalRows) sum += p[static_cast<int64_t>(row) * 64];
  s_sum[r][k] = sum;
  __syncthreads();
  if (r == 0) {
    float total = 0.0f;
#pragma unroll
    for (int j = 0; j < kFinalRows; ++j) total += s_sum[j][k];
    out[static_cast<int64_t>(blockIdx.x) * 64 + k] = __fdiv_rn(total, scale);
  }
}

// ----------------------------------------------------------------------------- host side

Strides strides_of(const at::Tensor& t) {
  return Strides{t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

Geom geometry_of(const at::Tensor& x) {
  Geom g;
  g.N = static_cast<int>(x.size(0));
  g.C = static_cast<int>(x.size(1));
  g.H = static_cast<int>(x.size(2));
  g.W = static_cast<int>(x.size(3));
  g.Hb = (g.H + 7) / 8;
  g.Wb = (g.W + 7) / 8;
  const int64_t per_channel = static_cast<int64_t>(g.N) * g.Hb * g.Wb;
  const int64_t total = per_channel * g.C;
  // Block indices are 32-bit (with headroom for the grid-stride increment):
  // up to 2^30 blocks, i.e. 6.9e10 elements.
  TORCH_CHECK(total <= (int64_t{1} << 30), "gcln_fast::qnt (CUDA): tensor too large (", total,
              " 8x8 blocks; at most 2^30)");
  g.total = static_cast<uint32_t>(total);
  g.per_channel = static_cast<uint32_t>(per_channel);
  g.div_wb = FastDiv(static_cast<uint32_t>(g.Wb));
  g.div_hb = FastDiv(static_cast<uint32_t>(g.Hb));
  g.div_c = FastDiv(static_cast<uint32_t>(g.C));
  g.channel_fastest = g.C > 1 && x.stride(1) < x.stride(3);
  return g;
}

// The shared checks (qnt_checks.h) plus what only this backend needs.
void check_inputs(const at::Tensor& x, const at::Tensor& q, double scale) {
  check_qnt_x(x, "x");
  check_qnt_q(x, q.unsqueeze(0));  // first-edition (Cq, 8, 8) table: see the bridge at the end
  check_qnt_scale(scale);
  TORCH_CHECK(x.is_cuda(), "gcln_fast::qnt (CUDA): x must be a CUDA tensor, got ", x.device());
  for (int d = 0; d < 4; ++d)
    TORCH_CHECK(x.size(d) <= std::numeric_limits<int32_t>::max(), "x dimension ", d, " is too large: ", x.size(d));
}

// (ATen/cuda/CUDAContext.h would give this too, but it pulls in cuSPARSE and
// cuBLAS headers that a bare toolkit may lack.)
int sm_count(int device) {
  int n = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
  return n;
}

at::Tensor qnt_cuda(const at::Tensor& x, const at::Tensor& q_in, double scale_d) {
  check_inputs(x, q_in, scale_d);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty_like(x);  // keeps x's memory format (channels-last stays channels-last)
  if (x.numel() == 0) return y;
  const at::Tensor q = q_in.contiguous();
  const float scale = static_cast<float>(scale_d);
  const Geom g = geometry_of(x);
  const int cq = static_cast<int>(q.size(0));
  const auto stream = c10::cuda::getCurrentCUDAStream();

  at::Tensor tables;
  const float* gtables = nullptr;
  if (cq > kMaxSmemTables) {
    tables = at::empty({cq, kTableFloats}, q.options());
    const int64_t entries = static_cast<int64_t>(cq) * 64;
    step_table_kernel<<<static_cast<unsigned>((entries + 255) / 256), 256, 0, stream>>>(
        q.data_ptr<float>(), entries, scale, tables.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    gtables = tables.data_ptr<float>();
  }
  const unsigned grid = (g.total + kGroups - 1) / kGroups;
  GCLN_DISPATCH_QNT_TYPES(x.scalar_type(), "gcln_fast_qnt_cuda", [&] {
    qnt_forward_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), strides_of(x), y.mutable_data_ptr<scalar_t>(), strides_of(y), g,
        q.const_data_ptr<float>(), cq, gtables, scale);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

// CTAs per SM for stage 1: 4 x 256 threads keeps 16 loads per thread in
// flight (enough to saturate HBM) while keeping the partials few enough for
// stage 2 to be a negligible pass.
constexpr int kGradCtasPerSm = 4;

at::Tensor qnt_grad_q_cuda(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& q_in, double scale_d) {
  check_inputs(x, q_in, scale_d);
  check_qnt_x(grad_y, "grad_y");
  TORCH_CHECK_VALUE(grad_y.sizes() == x.sizes(), "grad_y must have x's shape ", x.sizes(), ", got ", grad_y.sizes());
  TORCH_CHECK_VALUE(grad_y.device() == x.device(), "grad_y is on ", grad_y.device(), " but x is on ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor q = q_in.contiguous();
  const int cq = static_cast<int>(q.size(0));
  at::Tensor out = at::empty({cq, 8, 8}, q.options());
  if (x.numel() == 0) return out.zero_();
  const float scale = static_cast<float>(scale_d);
  const Geom g = geometry_of(x);
  const auto stream = c10::cuda::getCurrentCUDAStream();

  const int64_t count = cq == 1 ? g.total : g.per_channel;  // blocks per q group
  const int64_t useful = (count + kGroups - 1) / kGroups;
  const int64_t target = static_cast<int64_t>(sm_count(x.get_device())) * kGradCtasPerSm;
  const int64_t ctas = std::max<int64_t>(1, std::min<int64_t>(useful, (target + cq - 1) / cq));
  TORCH_CHECK(ctas * cq <= std::numeric_limits<int32_t>::max(), "gcln_fast::qnt_grad_q (CUDA): grid too large");
  at::Tensor partials = at::empty({ctas * cq, 64}, q.options());

  // The gradient arrives in the output's dtype, which is x's; anything else is
  // cast once (as the CPU kernel does) rather than compiling 9 kernels.
  const at::Tensor gy = grad_y.scalar_type() == x.scalar_type() ? grad_y : grad_y.to(x.scalar_type());
  GCLN_DISPATCH_QNT_TYPES(x.scalar_type(), "gcln_fast_qnt_grad_q_cuda", [&] {
    qnt_grad_q_partial_kernel<scalar_t><<<static_cast<unsigned>(ctas * cq), kThreads, 0, stream>>>(
        gy.const_data_ptr<scalar_t>(), strides_of(gy), x.const_data_ptr<scalar_t>(), strides_of(x), g,
        q.const_data_ptr<float>(), cq, scale, static_cast<uint32_t>(ctas), partials.mutable_data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  qnt_grad_q_final_kernel<<<static_cast<unsigned>(cq), dim3(64, kFinalRows), 0, stream>>>(
      partials.const_data_ptr<float>(), static_cast<uint32_t>(ctas), scale, out.mutable_data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// Bridge from the second-edition schema (docs/qnt-op.md) to the kernels
// above, which implement shared tables (Nq = 1), the hard forward and grad_q of
// the identity surrogate so far; the rest raises until this backend has it.
at::Tensor qnt_cuda_v2(const at::Tensor& x, const at::Tensor& q, double scale, c10::string_view surrogate,
                       bool soft_forward) {
  check_qnt_x(x, "x");
  check_qnt_q(x, q);
  const block::Surrogate s = parse_surrogate(surrogate);
  TORCH_CHECK(q.size(0) == 1, "gcln_fast::qnt (CUDA): per-sample tables are not implemented in this backend yet");
  TORCH_CHECK(!soft_forward || s == block::Surrogate::kIdentity,
              "gcln_fast::qnt (CUDA): soft_forward is not implemented in this backend yet");
  return qnt_cuda(x, q[0], scale);
}

std::tuple<at::Tensor, at::Tensor> qnt_backward_cuda_v2(const at::Tensor& grad_y, const at::Tensor& x,
                                                        const at::Tensor& q, double scale, c10::string_view surrogate,
                                                        bool soft_forward, bool need_grad_x, bool need_grad_q) {
  (void)soft_forward;
  check_qnt_x(x, "x");
  check_qnt_q(x, q);
  const block::Surrogate s = parse_surrogate(surrogate);
  TORCH_CHECK(q.size(0) == 1 && s == block::Surrogate::kIdentity && !need_grad_x,
              "gcln_fast::qnt_backward (CUDA): only grad_q of the identity surrogate with a shared table is "
              "implemented in this backend yet");
  at::Tensor gq = need_grad_q ? qnt_grad_q_cuda(grad_y, x, q[0], scale).unsqueeze(0) : at::empty({0}, q.options());
  return {at::empty({0}, x.options()), gq};
}

}  // namespace
}  // namespace qnt_cuda
}  // namespace gcln_fast

TORCH_LIBRARY_IMPL(gcln_fast, CUDA, m) {
  m.impl("qnt", &gcln_fast::qnt_cuda::qnt_cuda_v2);
  m.impl("qnt_backward", &gcln_fast::qnt_cuda::qnt_backward_cuda_v2);
}
