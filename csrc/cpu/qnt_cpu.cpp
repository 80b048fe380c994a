// Fused QNT kernels for the CPU: forward and the LSQ step-size gradient.
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
static_assert(Vec::size() == 8, "the CPU kernel holds one 8-wide block row per vector");

namespace gcln_fast::block {
template <>
struct BlockArith<Vec> {
  static inline Vec splat(float c) { return Vec(c); }
  static inline Vec madd(Vec a, Vec b, Vec c) { return at::vec::fmadd(a, b, c); }
  static inline Vec msub(Vec a, Vec b, Vec c) { return at::vec::fmsub(a, b, c); }
  static inline Vec round(Vec x) { return x.round(); }  // nearest, ties to even
};
}  // namespace gcln_fast::block

namespace gcln_fast {
namespace {

using VA = block::BlockArith<Vec>;

// In-register 8x8 transpose (unpack, shuffle, 128-bit permute: 24 shuffles).
// at::vec has no register-to-register form, and its memory form costs a
// round trip through the stack on every block.
inline void transpose8(Vec r[8]) {
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
inline void forward_2d(Vec r[8]) {
  block::fdct8<Vec, VA>(r);
  transpose8(r);
  block::fdct8<Vec, VA>(r);
}

// transposed coefficients -> rows of the block.
inline void inverse_2d(Vec r[8]) {
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
inline void load_block(const PlaneView<const T>& p, int64_t y0, int64_t x0, Vec r[8]) {
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

// Stores the in-image part of a block; the padded pixels are dropped.
template <typename T>
inline void store_block(const PlaneView<T>& p, int64_t y0, int64_t x0, const Vec r[8]) {
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

// Per q-table: [inv_step (64), step (64)], each transposed to match the
// coefficient layout, with `scale` folded in (the kernels transform x, not x * scale).
std::vector<float> step_tables(const at::Tensor& q, double scale) {
  const at::Tensor qc = q.contiguous();
  const float* qp = qc.const_data_ptr<float>();
  const int64_t cq = qc.size(0);
  std::vector<float> t(cq * 128);
  for (int64_t c = 0; c < cq; ++c) {
    for (int k1 = 0; k1 < 8; ++k1) {
      for (int k2 = 0; k2 < 8; ++k2) {
        const float v = qp[c * 64 + k1 * 8 + k2];
        TORCH_CHECK_VALUE(v > 0.f && std::isfinite(v), "q must be positive and finite, got ", v);
        t[c * 128 + k2 * 8 + k1] = static_cast<float>(scale / v);
        t[c * 128 + 64 + k2 * 8 + k1] = static_cast<float>(v / scale);
      }
    }
  }
  return t;
}

inline void load_tables(const float* t, Vec inv[8], Vec step[8]) {
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

template <typename scalar_t>
void qnt_forward_kernel(const at::Tensor& x, const std::vector<float>& tables, int64_t cq, at::Tensor& y) {
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
      const int64_t table = cq == 1 ? 0 : c;
      if (table != table_loaded) {
        load_tables(tables.data() + table * 128, inv, step);
        table_loaded = table;
      }
      const PlaneView<const scalar_t> src = xl.plane(n, c);
      const PlaneView<scalar_t> dst = yl.plane(n, c);
      for (int64_t bx = 0; bx < nbx; ++bx) {
        load_block<false>(src, by * 8, bx * 8, r);
        forward_2d(r);
        for (int k = 0; k < 8; ++k) r[k] = block::quantize<Vec, VA>(r[k], inv[k], step[k]);
        inverse_2d(r);
        store_block(dst, by * 8, bx * 8, r);
      }
    }
  });
}

template <typename scalar_t>
void qnt_grad_q_kernel(const at::Tensor& g, const at::Tensor& x, const std::vector<float>& tables, int64_t cq,
                       double scale, at::Tensor& out) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t nby = (H + 7) / 8, nbx = (W + 7) / 8;
  const Layout<const scalar_t> xl(x.const_data_ptr<scalar_t>(), x);
  const Layout<const scalar_t> gl(g.const_data_ptr<scalar_t>(), g);
  // Deterministic reduction: the partition into chunks depends on the shape
  // only (never on the thread count), each chunk sums in a fixed order, and
  // the chunk partials are added in chunk order. Chunks never straddle channels.
  const int64_t strips_per_channel = N * nby;
  const int64_t chunk_strips = std::max<int64_t>(1, 256 / nbx);
  const int64_t chunks_per_channel = (strips_per_channel + chunk_strips - 1) / chunk_strips;
  std::vector<double> partial(C * chunks_per_channel * 64, 0.0);
  at::parallel_for(0, C * chunks_per_channel, 1, [&](int64_t begin, int64_t end) {
    Vec inv[8], step[8], z[8], gz[8], acc[8];
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t c = chunk / chunks_per_channel;
      const int64_t j0 = (chunk % chunks_per_channel) * chunk_strips;
      const int64_t j1 = std::min(j0 + chunk_strips, strips_per_channel);
      load_tables(tables.data() + (cq == 1 ? 0 : c) * 128, inv, step);
      for (int k = 0; k < 8; ++k) acc[k] = Vec(0.f);
      for (int64_t j = j0; j < j1; ++j) {
        const int64_t n = j / nby, by = j % nby;
        const PlaneView<const scalar_t> xs = xl.plane(n, c);
        const PlaneView<const scalar_t> gs = gl.plane(n, c);
        for (int64_t bx = 0; bx < nbx; ++bx) {
          load_block<false>(xs, by * 8, bx * 8, z);
          forward_2d(z);
          load_block<true>(gs, by * 8, bx * 8, gz);
          forward_2d(gz);
          for (int k = 0; k < 8; ++k) acc[k] = VA::madd(gz[k], block::lsq_residual<Vec, VA>(z[k], inv[k]), acc[k]);
        }
      }
      alignas(32) float a[64];
      for (int k = 0; k < 8; ++k) acc[k].store(a + 8 * k);
      double* dst = partial.data() + chunk * 64;
      for (int i = 0; i < 64; ++i) dst[i] = a[i];
    }
  });
  // G is the transform of grad_y (y = V / scale) and the residual is taken on
  // x * scale / q, so the sum carries exactly the contract's 1/scale.
  float* op = out.mutable_data_ptr<float>();
  std::vector<double> sum(cq * 64, 0.0);
  for (int64_t chunk = 0; chunk < C * chunks_per_channel; ++chunk) {
    double* s = sum.data() + (cq == 1 ? 0 : chunk / chunks_per_channel) * 64;
    const double* p = partial.data() + chunk * 64;
    for (int i = 0; i < 64; ++i) s[i] += p[i];
  }
  for (int64_t t = 0; t < cq; ++t)
    for (int k1 = 0; k1 < 8; ++k1)
      for (int k2 = 0; k2 < 8; ++k2) op[t * 64 + k1 * 8 + k2] = static_cast<float>(sum[t * 64 + k2 * 8 + k1] / scale);
}

at::Tensor qnt_cpu(const at::Tensor& x, const at::Tensor& q, double scale) {
  check_qnt_x(x, "x");
  check_qnt_q(x, q);
  check_qnt_scale(scale);
  at::Tensor y = at::empty_like(x);
  if (x.numel() == 0) return y;
  const std::vector<float> tables = step_tables(q, scale);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "qnt_cpu",
                                  [&] { qnt_forward_kernel<scalar_t>(x, tables, q.size(0), y); });
  return y;
}

at::Tensor qnt_grad_q_cpu(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& q, double scale) {
  check_qnt_x(x, "x");
  check_qnt_q(x, q);
  check_qnt_scale(scale);
  TORCH_CHECK_VALUE(grad_y.sizes() == x.sizes(), "grad_y must have x's shape ", x.sizes(), ", got ", grad_y.sizes());
  at::Tensor out = at::zeros({q.size(0), 8, 8}, q.options());
  if (x.numel() == 0) return out;
  const std::vector<float> tables = step_tables(q, scale);
  // The gradient arrives in the output's dtype, which is x's; anything else is cast once.
  const at::Tensor g = grad_y.scalar_type() == x.scalar_type() ? grad_y : grad_y.to(x.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "qnt_grad_q_cpu",
                                  [&] { qnt_grad_q_kernel<scalar_t>(g, x, tables, q.size(0), scale, out); });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(gcln_fast, CPU, m) {
  m.impl("qnt", &qnt_cpu);
  m.impl("qnt_grad_q", &qnt_grad_q_cpu);
}

}  // namespace gcln_fast
