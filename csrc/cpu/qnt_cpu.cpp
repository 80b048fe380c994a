// Fused QNT kernels for the CPU: the forward and the fused backward
// (grad_x through the surrogate's slope and grad_q), docs/qnt-op.md.
//
// One 8x8 block lives in eight 8-lane vectors, one per row. The 1-D
// transforms of csrc/qnt_block.h run lane-wise down the columns, an in-register
// transpose turns rows into columns, and they run again: the coefficients come
// out transposed (vector k2 holds row frequencies k1 in its lanes), so the
// quantisation tables are stored transposed too and the block is never turned
// back before the inverse, which undoes the same steps in reverse order.
// Every input element is read once and every output element written once.

#if defined(__AVX2__) && defined(__FMA__)
// at::vec chooses its implementation from these macros; a private namespace
// name keeps these instantiations apart from libtorch's own AVX2 ones.
#define CPU_CAPABILITY GCLN_AVX2
#define CPU_CAPABILITY_AVX2
#endif

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "qnt_block.h"
#include "qnt_checks.h"

using Vec = at::vec::Vectorized<float>;
// The helpers below must inline: a call would pass a block's eight vectors through memory.
#define GCLN_INLINE inline __attribute__((always_inline))
static_assert(Vec::size() == 8, "the CPU kernel holds one 8-wide block row per vector");

namespace gcln_fast::block {
template <>
struct BlockArith<Vec> {
  static GCLN_INLINE Vec splat(float c) { return Vec(c); }
  static GCLN_INLINE Vec madd(Vec a, Vec b, Vec c) { return at::vec::fmadd(a, b, c); }
  static GCLN_INLINE Vec msub(Vec a, Vec b, Vec c) { return at::vec::fmsub(a, b, c); }
  static GCLN_INLINE Vec round(Vec x) { return x.round(); }  // nearest, ties to even
};
}  // namespace gcln_fast::block

namespace gcln_fast {
namespace {

using VA = block::BlockArith<Vec>;
using block::Surrogate;

// In-register 8x8 transpose (unpack, shuffle, 128-bit permute: 24 shuffles).
// at::vec has no register-to-register form, and its memory form costs a
// round trip through the stack on every block.
GCLN_INLINE void transpose8(Vec r[8]) {
#if defined(CPU_CAPABILITY_AVX2)
  __m256 a[8], b[8];
  for (int i = 0; i < 8; i += 2) {
    a[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    a[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    b[i] = _mm256_shuffle_ps(a[i], a[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    b[i + 1] = _mm256_shuffle_ps(a[i], a[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    b[i + 2] = _mm256_shuffle_ps(a[i + 1], a[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    b[i + 3] = _mm256_shuffle_ps(a[i + 1], a[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(b[i], b[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(b[i], b[i + 4], 0x31);
  }
#else
  alignas(32) float a[64], b[64];
  for (int i = 0; i < 8; ++i) r[i].store(a + 8 * i);
  at::vec::transpose_mxn<float, 8, 8>(a, 8, b, 8);
  for (int i = 0; i < 8; ++i) r[i] = Vec::loadu(b + 8 * i);
#endif
}

// rows of a block (lane = column) -> transposed coefficients: r[k2] lane k1 = Z[k1][k2].
GCLN_INLINE void forward_2d(Vec r[8]) {
  block::fdct8<Vec, VA>(r);
  transpose8(r);
  block::fdct8<Vec, VA>(r);
}

// transposed coefficients -> rows of the block.
GCLN_INLINE void inverse_2d(Vec r[8]) {
  block::idct8<Vec, VA>(r);
  transpose8(r);
  block::idct8<Vec, VA>(r);
}

// One (n, c) plane of a strided 4-D tensor.
template <typename T>
struct PlaneView {
  T* data;
  int64_t H, W, sH, sW;
};

// Loads the block whose top-left pixel is (y0, x0) as float rows. Pixels past
// the edge replicate the last row/column (the forward transform) or are zero
// (the gradient, whose adjoint of the crop is zero padding).
template <bool kZeroPad, typename T>
GCLN_INLINE void load_block(const PlaneView<const T>& p, int64_t y0, int64_t x0, Vec r[8]) {
  const int rows = static_cast<int>(std::min<int64_t>(8, p.H - y0));
  const int cols = static_cast<int>(std::min<int64_t>(8, p.W - x0));
  if constexpr (std::is_same_v<T, float>) {
    if (rows == 8 && cols == 8 && p.sW == 1) {  // interior block of a row-contiguous plane
      const T* base = p.data + y0 * p.sH + x0;
#pragma GCC unroll 8
      for (int m = 0; m < 8; ++m) r[m] = Vec::loadu(base + m * p.sH);
      return;
    }
  }
  for (int m = 0; m < rows; ++m) {
    const T* row = p.data + (y0 + m) * p.sH;
    if (cols == 8 && p.sW == 1) {
      if constexpr (std::is_same_v<T, float>) {
        r[m] = Vec::loadu(row + x0);
      } else {
        alignas(32) float tmp[8];
        for (int j = 0; j < 8; ++j) tmp[j] = static_cast<float>(row[x0 + j]);
        r[m] = Vec::loadu(tmp);
      }
      continue;
    }
    alignas(32) float tmp[8];
    for (int j = 0; j < cols; ++j) tmp[j] = static_cast<float>(row[(x0 + j) * p.sW]);
    for (int j = cols; j < 8; ++j) tmp[j] = kZeroPad ? 0.f : tmp[cols - 1];
    r[m] = Vec::loadu(tmp);
  }
  for (int m = rows; m < 8; ++m) r[m] = kZeroPad ? Vec(0.f) : r[rows - 1];
}

// Stores the in-image part of a block; the padded pixels are dropped (the forward's crop).
template <typename T>
GCLN_INLINE void store_block(const PlaneView<T>& p, int64_t y0, int64_t x0, const Vec r[8]) {
  const int rows = static_cast<int>(std::min<int64_t>(8, p.H - y0));
  const int cols = static_cast<int>(std::min<int64_t>(8, p.W - x0));
  if constexpr (std::is_same_v<T, float>) {
    if (rows == 8 && cols == 8 && p.sW == 1) {
      T* base = p.data + y0 * p.sH + x0;
#pragma GCC unroll 8
      for (int m = 0; m < 8; ++m) r[m].store(base + m * p.sH);
      return;
    }
  }
  for (int m = 0; m < rows; ++m) {
    T* row = p.data + (y0 + m) * p.sH;
    if constexpr (std::is_same_v<T, float>) {
      if (cols == 8 && p.sW == 1) {
        r[m].store(row + x0);
        continue;
      }
    }
    alignas(32) float tmp[8];
    r[m].store(tmp);
    for (int j = 0; j < cols; ++j) row[(x0 + j) * p.sW] = static_cast<T>(tmp[j]);
  }
}

// The adjoint of the replicate padding, then the store: rows and columns of
// the block that fall outside the image are added onto the last in-image row
// and column (the corner onto both), and the in-image part is stored.
template <typename T>
GCLN_INLINE void store_block_adjoint(const PlaneView<T>& p, int64_t y0, int64_t x0, Vec r[8]) {
  const int rows = static_cast<int>(std::min<int64_t>(8, p.H - y0));
  const int cols = static_cast<int>(std::min<int64_t>(8, p.W - x0));
  for (int m = rows; m < 8; ++m) r[rows - 1] = r[rows - 1] + r[m];
  if (cols < 8) {
    alignas(32) float tmp[8];
    for (int m = 0; m < rows; ++m) {
      r[m].store(tmp);
      for (int j = cols; j < 8; ++j) tmp[cols - 1] += tmp[j];
      r[m] = Vec::loadu(tmp);
    }
  }
  store_block(p, y0, x0, r);
}

// Per canonical table t = (Nq, Cq) index: [inv512 (64), step (64)], each
// transposed to match the coefficient layout, with `scale` folded in (the
// kernels transform x, not x * scale) and R's 512 in inv512 = 512 scale / q.
struct StepTables {
  std::vector<float> data;
  int64_t nq = 1, cq = 1;
  int64_t count() const { return nq * cq; }
  int64_t index(int64_t n, int64_t c) const { return (nq > 1 ? n * cq : 0) + (cq > 1 ? c : 0); }
  const float* at(int64_t t) const { return data.data() + t * 128; }
};

StepTables step_tables(const at::Tensor& q, double scale) {
  const at::Tensor qc = q.contiguous();
  const float* qp = qc.const_data_ptr<float>();
  StepTables t;
  t.nq = qc.size(0);
  t.cq = qc.size(1);
  t.data.resize(t.count() * 128);
  for (int64_t i = 0; i < t.count(); ++i) {
    for (int k1 = 0; k1 < 8; ++k1) {
      for (int k2 = 0; k2 < 8; ++k2) {
        const float v = qp[i * 64 + k1 * 8 + k2];
        check_qnt_q_value(v, scale);
        t.data[i * 128 + k2 * 8 + k1] = static_cast<float>(block::kTieGrid * scale / v);
        t.data[i * 128 + 64 + k2 * 8 + k1] = static_cast<float>(v / scale);
      }
    }
  }
  return t;
}

GCLN_INLINE void load_tables(const float* t, Vec inv[8], Vec step[8]) {
  for (int k = 0; k < 8; ++k) {
    inv[k] = Vec::loadu(t + 8 * k);
    step[k] = Vec::loadu(t + 64 + 8 * k);
  }
}

// Sizes and strides read once, outside the parallel loop.
template <typename T>
struct Layout {
  T* data;
  int64_t sN, sC, H, W, sH, sW;
  Layout(T* d, const at::Tensor& t)
      : data(d), sN(t.stride(0)), sC(t.stride(1)), H(t.size(2)), W(t.size(3)), sH(t.stride(2)), sW(t.stride(3)) {}
  PlaneView<T> plane(int64_t n, int64_t c) const { return {data + n * sN + c * sC, H, W, sH, sW}; }
};

template <typename scalar_t, Surrogate S, bool kSoft>
void qnt_forward_kernel(const at::Tensor& x, const StepTables& tables, at::Tensor& y) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t nby = (H + 7) / 8, nbx = (W + 7) / 8;
  const Layout<const scalar_t> xl(x.const_data_ptr<scalar_t>(), x);
  const Layout<scalar_t> yl(y.mutable_data_ptr<scalar_t>(), y);
  // A task is a strip of blocks (one block row of one plane); aim for ~32 blocks per task.
  const int64_t grain = std::max<int64_t>(1, 32 / nbx);
  at::parallel_for(0, N * C * nby, grain, [&](int64_t begin, int64_t end) {
    Vec inv[8], step[8], r[8];
    int64_t table_loaded = -1;
    for (int64_t s = begin; s < end; ++s) {
      const int64_t by = s % nby, c = (s / nby) % C, n = s / (nby * C);
      const int64_t table = tables.index(n, c);
      if (table != table_loaded) {
        load_tables(tables.at(table), inv, step);
        table_loaded = table;
      }
      const PlaneView<const scalar_t> src = xl.plane(n, c);
      const PlaneView<scalar_t> dst = yl.plane(n, c);
      for (int64_t bx = 0; bx < nbx; ++bx) {
        load_block<false>(src, by * 8, bx * 8, r);
        forward_2d(r);
        for (int k = 0; k < 8; ++k) r[k] = block::quantize_prescaled<S, kSoft, Vec, VA>(r[k], inv[k], step[k]);
        inverse_2d(r);
        store_block(dst, by * 8, bx * 8, r);
      }
    }
  });
}

// The planes (n, c) whose blocks use table t, in a fixed order (i < planes()).
struct TableWalk {
  int64_t nq, cq, pn, pc;
  TableWalk(int64_t N, int64_t C, const StepTables& t)
      : nq(t.nq), cq(t.cq), pn(t.nq > 1 ? 1 : N), pc(t.cq > 1 ? 1 : C) {}
  int64_t planes() const { return pn * pc; }
  void plane(int64_t t, int64_t i, int64_t& n, int64_t& c) const {
    n = nq > 1 ? t / cq : i / pc;
    c = cq > 1 ? t % cq : i % pc;
  }
};

// One block of the backward: G = D g D^T; grad_q's terms G (s(u) - u s'(u))
// into acc, and (kGradX) g <- s'(u) G, ready for the inverse transform.
template <Surrogate S, bool kGradX, bool kGradQ>
GCLN_INLINE void backward_block(const Vec z[8], Vec g[8], const Vec inv[8], Vec acc[8]) {
  for (int k = 0; k < 8; ++k) {
    const Vec u512 = z[k] * inv[k];
    const Vec r = block::round_tie_scaled<Vec, VA>(u512);
    const Vec u = u512 * Vec(block::kInvTieGrid);
    const Vec slope = block::surrogate_slope<S, Vec, VA>(u, r);
    if constexpr (kGradQ) {
      Vec factor;
      if constexpr (S == Surrogate::kIdentity) {
        factor = r - u;
      } else {
        factor = block::surrogate_value<S, Vec, VA>(u, r) - u * slope;
      }
      acc[k] = VA::madd(g[k], factor, acc[k]);
    }
    if constexpr (kGradX) g[k] = g[k] * slope;
  }
}

// The fused backward: one pass over x and grad_y. Deterministic grad_q: the
// partition into chunks depends on the shape only (never on the thread
// count), each chunk sums in a fixed order into float lanes, and the chunk
// partials are added in chunk order in double. Chunks never straddle tables.
template <typename scalar_t, Surrogate S, bool kGradX, bool kGradQ>
void qnt_backward_kernel(const at::Tensor& g, const at::Tensor& x, const StepTables& tables, double scale,
                         at::Tensor& grad_x, at::Tensor& grad_q) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t nby = (H + 7) / 8, nbx = (W + 7) / 8;
  const Layout<const scalar_t> xl(x.const_data_ptr<scalar_t>(), x);
  const Layout<const scalar_t> gl(g.const_data_ptr<scalar_t>(), g);
  const Layout<scalar_t> gxl(kGradX ? grad_x.mutable_data_ptr<scalar_t>() : nullptr, kGradX ? grad_x : x);
  const TableWalk walk(N, C, tables);
  const int64_t strips = walk.planes() * nby;  // per table
  const int64_t chunk_strips = std::max<int64_t>(1, 256 / nbx);
  const int64_t chunks_per_table = (strips + chunk_strips - 1) / chunk_strips;
  std::vector<double> partial(kGradQ ? tables.count() * chunks_per_table * 64 : 0);
  at::parallel_for(0, tables.count() * chunks_per_table, 1, [&](int64_t begin, int64_t end) {
    Vec inv[8], step[8], z[8], gz[8], acc[8];
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t t = chunk / chunks_per_table;
      const int64_t j0 = (chunk % chunks_per_table) * chunk_strips;
      const int64_t j1 = std::min(j0 + chunk_strips, strips);
      load_tables(tables.at(t), inv, step);
      for (int k = 0; k < 8; ++k) acc[k] = Vec(0.f);
      for (int64_t j = j0; j < j1; ++j) {
        int64_t n, c;
        walk.plane(t, j / nby, n, c);
        const int64_t y0 = (j % nby) * 8;
        const PlaneView<const scalar_t> xs = xl.plane(n, c), gs = gl.plane(n, c);
        for (int64_t bx = 0; bx < nbx; ++bx) {
          load_block<false>(xs, y0, bx * 8, z);
          forward_2d(z);
          load_block<true>(gs, y0, bx * 8, gz);
          forward_2d(gz);
          backward_block<S, kGradX, kGradQ>(z, gz, inv, acc);
          if constexpr (kGradX) {
            inverse_2d(gz);
            store_block_adjoint(gxl.plane(n, c), y0, bx * 8, gz);
          }
        }
      }
      if constexpr (kGradQ) {
        alignas(32) float a[64];
        for (int k = 0; k < 8; ++k) acc[k].store(a + 8 * k);
        std::copy(a, a + 64, partial.data() + chunk * 64);
      }
    }
  });
  if constexpr (kGradQ) {
    // G is the transform of grad_y (y = V / scale) and the factor is taken on
    // u = x * scale / q, so the sum carries exactly the contract's 1/scale.
    float* out = grad_q.mutable_data_ptr<float>();
    for (int64_t t = 0; t < tables.count(); ++t) {
      double sum[64] = {};
      for (int64_t chunk = t * chunks_per_table; chunk < (t + 1) * chunks_per_table; ++chunk)
        for (int i = 0; i < 64; ++i) sum[i] += partial[chunk * 64 + i];
      for (int k1 = 0; k1 < 8; ++k1)
        for (int k2 = 0; k2 < 8; ++k2) out[t * 64 + k1 * 8 + k2] = static_cast<float>(sum[k2 * 8 + k1] / scale);
    }
  }
}

void check_common(const at::Tensor& x, const at::Tensor& q, double scale) {
  check_qnt_x(x, "x");
  check_qnt_q(x, q);
  check_qnt_scale(scale);
}

at::Tensor qnt_cpu(const at::Tensor& x, const at::Tensor& q, double scale, c10::string_view surrogate,
                   bool soft_forward) {
  check_common(x, q, scale);
  const Surrogate s = parse_surrogate(surrogate);
  at::Tensor y = at::empty_like(x);
  if (x.numel() == 0) return y;
  const StepTables tables = step_tables(q, scale);
  GCLN_DISPATCH_QNT_FLOAT_TYPES(x.scalar_type(), "qnt_cpu", [&] {
    with_surrogate(s, [&](auto sc) {
      if (soft_forward && sc.value != Surrogate::kIdentity) {
        qnt_forward_kernel<scalar_t, decltype(sc)::value, true>(x, tables, y);
      } else {
        qnt_forward_kernel<scalar_t, Surrogate::kIdentity, false>(x, tables, y);
      }
    });
  });
  return y;
}

template <typename scalar_t, Surrogate S>
void dispatch_backward(bool need_x, bool need_q, const at::Tensor& g, const at::Tensor& x, const StepTables& t,
                       double scale, at::Tensor& gx, at::Tensor& gq) {
  if (need_x && need_q) {
    qnt_backward_kernel<scalar_t, S, true, true>(g, x, t, scale, gx, gq);
  } else if (need_x) {
    qnt_backward_kernel<scalar_t, S, true, false>(g, x, t, scale, gx, gq);
  } else if (need_q) {
    qnt_backward_kernel<scalar_t, S, false, true>(g, x, t, scale, gx, gq);
  }
}

std::tuple<at::Tensor, at::Tensor> qnt_backward_cpu(const at::Tensor& grad_y, const at::Tensor& x,
                                                    const at::Tensor& q, double scale, c10::string_view surrogate,
                                                    bool soft_forward, bool need_grad_x, bool need_grad_q) {
  (void)soft_forward;  // the backward is the same for the hard and the soft forward
  check_common(x, q, scale);
  check_qnt_x(grad_y, "grad_y");
  TORCH_CHECK_VALUE(grad_y.sizes() == x.sizes(), "grad_y must have x's shape ", x.sizes(), ", got ", grad_y.sizes());
  TORCH_CHECK_VALUE(grad_y.device() == x.device(), "grad_y is on ", grad_y.device(), " but x is on ", x.device());
  const Surrogate s = parse_surrogate(surrogate);
  at::Tensor gx = need_grad_x ? at::empty_like(x) : at::empty({0}, x.options());
  at::Tensor gq = need_grad_q ? at::zeros(q.sizes(), q.options()) : at::empty({0}, q.options());
  if (x.numel() == 0 || !(need_grad_x || need_grad_q)) return {gx, gq};
  const StepTables tables = step_tables(q, scale);
  // The gradient arrives in the output's dtype, which is x's; anything else is cast once.
  const at::Tensor g = grad_y.scalar_type() == x.scalar_type() ? grad_y : grad_y.to(x.scalar_type());
  GCLN_DISPATCH_QNT_FLOAT_TYPES(x.scalar_type(), "qnt_backward_cpu", [&] {
    with_surrogate(s, [&](auto sc) {
      dispatch_backward<scalar_t, decltype(sc)::value>(need_grad_x, need_grad_q, g, x, tables, scale, gx, gq);
    });
  });
  return {gx, gq};
}

// R(u), s(u), s'(u) elementwise through the vector code the kernels run.
std::tuple<at::Tensor, at::Tensor, at::Tensor> qnt_rounding_cpu(const at::Tensor& u_in, c10::string_view surrogate) {
  TORCH_CHECK_TYPE(u_in.scalar_type() == at::kFloat, "u must be float32, got ", u_in.scalar_type());
  const Surrogate s = parse_surrogate(surrogate);
  const at::Tensor u = u_in.contiguous();
  at::Tensor r = at::empty_like(u), v = at::empty_like(u), d = at::empty_like(u);
  const float* up = u.const_data_ptr<float>();
  float *rp = r.mutable_data_ptr<float>(), *vp = v.mutable_data_ptr<float>(), *dp = d.mutable_data_ptr<float>();
  with_surrogate(s, [&](auto sc) {
    constexpr Surrogate S = decltype(sc)::value;
    at::parallel_for(0, (u.numel() + 7) / 8, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t off = i * 8, count = std::min<int64_t>(8, u.numel() - off);
        const Vec uv = Vec::loadu(up + off, count);
        const Vec rv = block::round_tie<Vec, VA>(uv);
        rv.store(rp + off, count);
        block::surrogate_value<S, Vec, VA>(uv, rv).store(vp + off, count);
        block::surrogate_slope<S, Vec, VA>(uv, rv).store(dp + off, count);
      }
    });
  });
  return {r, v, d};
}

}  // namespace

TORCH_LIBRARY_IMPL(gcln_fast, CPU, m) {
  m.impl("qnt", &qnt_cpu);
  m.impl("qnt_backward", &qnt_backward_cpu);
  m.impl("qnt_rounding", &qnt_rounding_cpu);
}

}  // namespace gcln_fast
