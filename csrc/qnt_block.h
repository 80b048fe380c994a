// The block math of the QNT op, written once for every C++ and CUDA backend.
//
// An 8-point orthonormal DCT-II (and its inverse, the DCT-III) as an even/odd
// partial butterfly: 8 add/sub, then a 2x2 and a 4x4 rotation with the
// normalisation folded into the constants (36 flops with FMA, and exactly
// orthonormal so the step-size gradient sees true coefficients), plus the
// quantizer. Everything is templated on the lane type T: `float` for scalar
// code (CUDA threads, tests), `at::vec::Vectorized<float>` for the CPU kernel
// (one lane per column or row, eight blocks' worth of points at once).
// A lane type other than float specialises BlockArith before instantiating.
#pragma once

#include <cmath>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define GCLN_HD __host__ __device__ __forceinline__
#else
#define GCLN_HD inline
#endif

namespace gcln_fast {
namespace block {

constexpr int kBlock = 8;

// 0.5 * cos(k * pi / 16): the DCT matrix D[k][n] = c_k / 2 * cos(pi k (2n + 1) / 16).
constexpr float kC4 = 0.3535533905932738f;  // also D[0][n] = 1 / sqrt(8)
constexpr float kC1 = 0.4903926402016152f;
constexpr float kC2 = 0.46193976625564337f;
constexpr float kC3 = 0.4157348061512726f;
constexpr float kC5 = 0.27778511650980114f;
constexpr float kC6 = 0.19134171618254492f;
constexpr float kC7 = 0.09754516100806417f;

template <typename T>
struct BlockArith {
  static GCLN_HD T splat(float c) { return T(c); }
  static GCLN_HD T madd(T a, T b, T c) { return a * b + c; }
  static GCLN_HD T msub(T a, T b, T c) { return a * b - c; }
  // Round half to even, as torch.round: rintf under the default rounding mode.
  static GCLN_HD T round(T x) { return ::rintf(x); }
};

// v <- D v (forward 8-point DCT-II along the array index, lane-wise).
template <typename T, typename A = BlockArith<T>>
GCLN_HD void fdct8(T v[8]) {
  const T s0 = v[0] + v[7], d0 = v[0] - v[7];
  const T s1 = v[1] + v[6], d1 = v[1] - v[6];
  const T s2 = v[2] + v[5], d2 = v[2] - v[5];
  const T s3 = v[3] + v[4], d3 = v[3] - v[4];
  const T e0 = s0 + s3, e2 = s0 - s3;
  const T e1 = s1 + s2, e3 = s1 - s2;
  const T c1 = A::splat(kC1), c2 = A::splat(kC2), c3 = A::splat(kC3), c4 = A::splat(kC4);
  const T c5 = A::splat(kC5), c6 = A::splat(kC6), c7 = A::splat(kC7);
  v[0] = (e0 + e1) * c4;
  v[4] = (e0 - e1) * c4;
  v[2] = A::madd(e2, c2, e3 * c6);
  v[6] = A::msub(e2, c6, e3 * c2);
  v[1] = A::madd(d0, c1, A::madd(d1, c3, A::madd(d2, c5, d3 * c7)));
  v[3] = A::msub(d0, c3, A::madd(d1, c7, A::madd(d2, c1, d3 * c5)));
  v[5] = A::madd(d0, c5, A::madd(d2, c7, A::msub(d3, c3, d1 * c1)));
  v[7] = A::madd(d0, c7, A::msub(d2, c3, A::madd(d1, c5, d3 * c1)));
}

// v <- D^T v (inverse: 8-point DCT-III). The odd 4x4 block of D is symmetric,
// so the odd half uses the same rows as fdct8.
template <typename T, typename A = BlockArith<T>>
GCLN_HD void idct8(T v[8]) {
  const T c1 = A::splat(kC1), c2 = A::splat(kC2), c3 = A::splat(kC3), c4 = A::splat(kC4);
  const T c5 = A::splat(kC5), c6 = A::splat(kC6), c7 = A::splat(kC7);
  const T t0 = (v[0] + v[4]) * c4;
  const T t1 = (v[0] - v[4]) * c4;
  const T t2 = A::madd(v[2], c2, v[6] * c6);
  const T t3 = A::msub(v[2], c6, v[6] * c2);
  const T e0 = t0 + t2, e3 = t0 - t2;
  const T e1 = t1 + t3, e2 = t1 - t3;
  const T o0 = A::madd(v[1], c1, A::madd(v[3], c3, A::madd(v[5], c5, v[7] * c7)));
  const T o1 = A::msub(v[1], c3, A::madd(v[3], c7, A::madd(v[5], c1, v[7] * c5)));
  const T o2 = A::madd(v[1], c5, A::madd(v[5], c7, A::msub(v[7], c3, v[3] * c1)));
  const T o3 = A::madd(v[1], c7, A::msub(v[5], c3, A::madd(v[3], c5, v[7] * c1)));
  v[0] = e0 + o0;
  v[7] = e0 - o0;
  v[1] = e1 + o1;
  v[6] = e1 - o1;
  v[2] = e2 + o2;
  v[5] = e2 - o2;
  v[3] = e3 + o3;
  v[4] = e3 - o3;
}

// round(z / q) * q, with 1/q precomputed. The step tables the kernels pass in
// fold the op's `scale` in (z is a coefficient of x, not of x * scale):
// inv_step = scale / q, step = q / scale.
template <typename T, typename A = BlockArith<T>>
GCLN_HD T quantize(T z, T inv_step, T step) {
  return A::round(z * inv_step) * step;
}

// round(t) - t with t = z / q: the factor of the LSQ step-size gradient.
template <typename T, typename A = BlockArith<T>>
GCLN_HD T lsq_residual(T z, T inv_step) {
  const T t = z * inv_step;
  return A::round(t) - t;
}

// A whole 8x8 block in scalar code, b[row][col]: b <- D b D^T (columns, then rows).
template <typename T, typename A = BlockArith<T>>
GCLN_HD void fdct8x8(T b[8][8]) {
  for (int c = 0; c < 8; ++c) {
    T col[8];
    for (int r = 0; r < 8; ++r) col[r] = b[r][c];
    fdct8<T, A>(col);
    for (int r = 0; r < 8; ++r) b[r][c] = col[r];
  }
  for (int r = 0; r < 8; ++r) fdct8<T, A>(b[r]);
}

// b <- D^T b D.
template <typename T, typename A = BlockArith<T>>
GCLN_HD void idct8x8(T b[8][8]) {
  for (int r = 0; r < 8; ++r) idct8<T, A>(b[r]);
  for (int c = 0; c < 8; ++c) {
    T col[8];
    for (int r = 0; r < 8; ++r) col[r] = b[r][c];
    idct8<T, A>(col);
    for (int r = 0; r < 8; ++r) b[r][c] = col[r];
  }
}

}  // namespace block
}  // namespace gcln_fast
