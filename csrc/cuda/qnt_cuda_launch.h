// Host side of the CUDA QNT ops: checks, output allocation, geometry, launch
// shapes and the kernel arguments, written once for the CUDA build
// (qnt_cuda.cu, which launches the __global__ kernels on the current stream)
// and the host simulation (csrc/cuda/tests/, which runs the same CTA programs
// for every thread on the CPU). The `Launcher` policy does the launches:
//   int sm_count(const at::Tensor& x)
//   void step_tables(uint32_t grid, const StepTableArgs&)
//   template <typename T> void forward(uint32_t grid, const ForwardArgs<T>&, block::Surrogate, bool soft)
//   template <typename T> void backward(uint32_t grid, const BackwardArgs<T>&, block::Surrogate)
//   void grad_q_final(uint32_t grid, const GradQFinalArgs&)
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <cstdint>
#include <limits>
#include <tuple>

#include "qnt_checks.h"
#include "qnt_cuda_kernels.cuh"

namespace gcln_fast {
namespace qnt_cuda {

inline Strides strides_of(const at::Tensor& t) { return Strides{t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

inline Geom geometry_of(const at::Tensor& x) {
  Geom g;
  g.N = static_cast<int>(x.size(0));
  g.C = static_cast<int>(x.size(1));
  g.H = static_cast<int>(x.size(2));
  g.W = static_cast<int>(x.size(3));
  g.Hb = (g.H + 7) / 8;
  g.Wb = (g.W + 7) / 8;
  const int64_t total = static_cast<int64_t>(g.N) * g.C * g.Hb * g.Wb;
  // Block indices are 32-bit (with headroom for the grid-stride increment):
  // up to 2^30 blocks, i.e. 6.9e10 elements.
  TORCH_CHECK(total <= (int64_t{1} << 30), "gcln_fast::qnt (CUDA): tensor too large (", total,
              " 8x8 blocks; at most 2^30)");
  g.total = static_cast<uint32_t>(total);
  g.div_wb = FastDiv(static_cast<uint32_t>(g.Wb));
  g.div_hb = FastDiv(static_cast<uint32_t>(g.Hb));
  g.div_c = FastDiv(static_cast<uint32_t>(g.C));
  g.channel_fastest = g.C > 1 && x.stride(1) < x.stride(3);
  return g;
}

// The canonical (Nq, Cq, 8, 8) table as the kernels index it.
inline TableMap table_map(const Geom& g, const at::Tensor& q) {
  TableMap m;
  m.nq = static_cast<int>(q.size(0));
  m.cq = static_cast<int>(q.size(1));
  m.qsn = m.nq > 1 ? m.cq : 0;
  m.qsc = m.cq > 1 ? 1 : 0;
  m.count = m.nq * m.cq;
  m.cc = m.cq > 1 ? 1 : g.C;
  m.per_table = static_cast<uint32_t>((m.nq > 1 ? 1 : g.N) * static_cast<int64_t>(m.cc) * g.Hb * g.Wb);
  return m;
}

// The shared checks (qnt_checks.h) plus what only this backend needs.
inline void check_inputs(const at::Tensor& x, const at::Tensor& q, double scale) {
  check_qnt_x(x, "x");
  check_qnt_q(x, q);
  check_qnt_scale(scale);
  for (int d = 0; d < 4; ++d)
    TORCH_CHECK(x.size(d) <= std::numeric_limits<int32_t>::max(), "x dimension ", d, " is too large: ", x.size(d));
}

template <typename Launcher>
at::Tensor qnt_forward(const at::Tensor& x, const at::Tensor& q_in, double scale_d, block::Surrogate surrogate,
                       bool soft_forward, Launcher& launch) {
  check_inputs(x, q_in, scale_d);
  at::Tensor y = at::empty_like(x);  // keeps x's memory format (channels-last stays channels-last)
  if (x.numel() == 0) return y;
  const at::Tensor q = q_in.contiguous();
  const float scale = static_cast<float>(scale_d);
  const Geom g = geometry_of(x);
  const TableMap m = table_map(g, q);
  const TableMode mode = forward_table_mode(g, m);

  at::Tensor tables;
  if (mode == TableMode::kGlobal) {
    tables = at::empty({m.count, kTableFloats}, q.options());
    launch.step_tables(step_table_grid(m.count), StepTableArgs{q.const_data_ptr<float>(), int64_t{m.count} * 64,
                                                               scale, tables.mutable_data_ptr<float>()});
  }
  const float* gtables = tables.defined() ? tables.const_data_ptr<float>() : nullptr;
  GCLN_DISPATCH_QNT_FLOAT_TYPES(x.scalar_type(), "gcln_fast_qnt_cuda", [&] {
    launch.forward(forward_grid(g),
                   ForwardArgs<scalar_t>{x.const_data_ptr<scalar_t>(), strides_of(x), y.mutable_data_ptr<scalar_t>(),
                                         strides_of(y), g, q.const_data_ptr<float>(), m, mode, gtables, scale},
                   surrogate, soft_forward);
  });
  return y;
}

// (grad_x, grad_q); an output not wanted is an empty (0,) tensor.
template <typename Launcher>
std::tuple<at::Tensor, at::Tensor> qnt_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& q_in,
                                                double scale_d, block::Surrogate surrogate, bool need_grad_x,
                                                bool need_grad_q, Launcher& launch) {
  check_inputs(x, q_in, scale_d);
  check_qnt_x(grad_y, "grad_y");
  TORCH_CHECK_VALUE(grad_y.sizes() == x.sizes(), "grad_y must have x's shape ", x.sizes(), ", got ", grad_y.sizes());
  TORCH_CHECK_VALUE(grad_y.device() == x.device(), "grad_y is on ", grad_y.device(), " but x is on ", x.device());
  const at::Tensor q = q_in.contiguous();
  at::Tensor gx = need_grad_x ? at::empty_like(x) : at::empty({0}, x.options());
  at::Tensor gq = need_grad_q ? at::empty_like(q) : at::empty({0}, q.options());
  if (x.numel() == 0) {
    if (need_grad_q) gq.zero_();
    return {gx, gq};
  }
  if (!need_grad_x && !need_grad_q) return {gx, gq};
  const float scale = static_cast<float>(scale_d);
  const Geom g = geometry_of(x);
  const TableMap m = table_map(g, q);
  const int64_t ctas = backward_ctas_per_table(m, launch.sm_count(x));
  TORCH_CHECK(ctas * m.count <= std::numeric_limits<int32_t>::max(), "gcln_fast::qnt_backward (CUDA): grid too large");
  at::Tensor partials = need_grad_q ? at::empty({ctas * m.count, 64}, q.options()) : at::Tensor();

  // The gradient arrives in the output's dtype, which is x's; anything else is
  // cast once (as the CPU kernel does) rather than compiling 9 kernels.
  const at::Tensor gy = grad_y.scalar_type() == x.scalar_type() ? grad_y : grad_y.to(x.scalar_type());
  GCLN_DISPATCH_QNT_FLOAT_TYPES(x.scalar_type(), "gcln_fast_qnt_backward_cuda", [&] {
    const BackwardArgs<scalar_t> args{gy.const_data_ptr<scalar_t>(),
                                      strides_of(gy),
                                      x.const_data_ptr<scalar_t>(),
                                      strides_of(x),
                                      need_grad_x ? gx.mutable_data_ptr<scalar_t>() : nullptr,
                                      need_grad_x ? strides_of(gx) : Strides{0, 0, 0, 0},
                                      g,
                                      q.const_data_ptr<float>(),
                                      m,
                                      scale,
                                      static_cast<uint32_t>(ctas),
                                      need_grad_q ? partials.mutable_data_ptr<float>() : nullptr};
    launch.backward(static_cast<uint32_t>(ctas * m.count), args, surrogate);
  });
  if (need_grad_q) {
    launch.grad_q_final(static_cast<uint32_t>(m.count),
                        GradQFinalArgs{partials.const_data_ptr<float>(), static_cast<uint32_t>(ctas), scale,
                                       gq.mutable_data_ptr<float>()});
  }
  return {gx, gq};
}

}  // namespace qnt_cuda
}  // namespace gcln_fast
