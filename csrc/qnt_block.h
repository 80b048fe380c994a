// The block math of the QNT op, written once for every C++ and CUDA backend
// (the contract: docs/qnt-op.md).
//
// An 8-point orthonormal DCT-II (and its inverse, the DCT-III) as an even/odd
// partial butterfly: 8 add/sub, then a 2x2 and a 4x4 rotation with the
// normalisation folded into the constants (36 flops with FMA, and exactly
// orthonormal so the step-size gradient sees true coefficients), plus the
// quantizer: the rounding R(u) with the contract's tie rule and the rounding
// surrogates' values and slopes. Everything is templated on the lane type T:
// `float` for scalar code (CUDA threads, tests), `at::vec::Vectorized<float>`
// for the CPU kernel (one lane per column or row, eight blocks' worth of points
// at once). A lane type other than float specialises BlockArith before
// instantiating.
#pragma once

#include <cmath>

// Always inlined: the CPU kernel keeps a block in registers only if every
// helper is inlined (an out-of-line call passes the eight vectors through memory).
#if defined(__CUDACC__) || defined(__HIPCC__)
#define GCLN_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define GCLN_HD inline __attribute__((always_inline))
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

// R(u) = rint(rint(kTieGrid * u) / kTieGrid): u first goes to the nearest
// multiple of 1/512, then to the nearest integer (both ties to even), so a u
// within 2^-10 of a half-integer is a tie and goes to the even neighbour. The
// window is above float32 round-off of u (~eps |U|_block / q) for q >= 1 on
// 8-bit images; see docs/qnt-op.md.
constexpr float kTieGrid = 512.f;
constexpr float kInvTieGrid = 0.001953125f;  // 2^-9, exact

// The sine surrogate's polynomials (gcln_fast/qnt_constants.py has the same
// numbers): sin(pi t) ~ t * P(t^2), cos(pi t) ~ Q(t^2) for |t| <= 1/2. Scalars,
// not arrays: CUDA device code may use namespace-scope constexpr scalars only.
constexpr float kSinPi0 = 3.141592594593935f, kSinPi1 = -5.1677076550608385f, kSinPi2 = 2.550042863625808f,
                kSinPi3 = -0.5981084222133332f, kSinPi4 = 0.07733611844825648f;
constexpr float kCosPi0 = 0.9999999998753734f, kCosPi1 = -4.934802150819874f, kCosPi2 = 4.0587095754178275f,
                kCosPi3 = -1.33521663214135f, kCosPi4 = 0.23495867543651583f, kCosPi5 = -0.024431017226697254f;
constexpr float kInvPi = 0.3183098861837907f;

// The rounding surrogates of the backward (and of the soft forward).
enum class Surrogate : int { kIdentity = 0, kCubic = 1, kSine = 2 };

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

// R(u) from u512 = 512 u (kernels fold the 512 into their reciprocal steps;
// scaling by a power of two is exact, so the result is R(u) for every float u
// with |512 u| finite).
template <typename T, typename A = BlockArith<T>>
GCLN_HD T round_tie_scaled(T u512) {
  return A::round(A::round(u512) * A::splat(kInvTieGrid));
}

// R(u): the nearest integer, a u within 2^-10 of a half-integer going to the even neighbour.
template <typename T, typename A = BlockArith<T>>
GCLN_HD T round_tie(T u) {
  return round_tie_scaled<T, A>(u * A::splat(kTieGrid));
}

// sin(pi t) and cos(pi t) for |t| <= 1/2 (Horner on t^2).
template <typename T, typename A = BlockArith<T>>
GCLN_HD T sin_pi(T t) {
  const T t2 = t * t;
  T p = A::madd(t2, A::splat(kSinPi4), A::splat(kSinPi3));
  p = A::madd(p, t2, A::splat(kSinPi2));
  p = A::madd(p, t2, A::splat(kSinPi1));
  p = A::madd(p, t2, A::splat(kSinPi0));
  return p * t;
}

template <typename T, typename A = BlockArith<T>>
GCLN_HD T cos_pi(T t) {
  const T t2 = t * t;
  T p = A::madd(t2, A::splat(kCosPi5), A::splat(kCosPi4));
  p = A::madd(p, t2, A::splat(kCosPi3));
  p = A::madd(p, t2, A::splat(kCosPi2));
  p = A::madd(p, t2, A::splat(kCosPi1));
  return A::madd(p, t2, A::splat(kCosPi0));
}

// s(u) for r = R(u): identity R(u); cubic R(u) + (u - R(u))^3; sine
// u - sin(2 pi u) / (2 pi), periodic, so reduced to t = u - rint(u) exactly.
template <Surrogate S, typename T, typename A = BlockArith<T>>
GCLN_HD T surrogate_value(T u, T r) {
  if constexpr (S == Surrogate::kIdentity) {
    return r;
  } else if constexpr (S == Surrogate::kCubic) {
    const T e = u - r;
    return A::madd(e * e, e, r);
  } else {
    const T t = u - A::round(u);
    return A::madd(sin_pi<T, A>(t) * cos_pi<T, A>(t), A::splat(-kInvPi), u);
  }
}

// s'(u) for r = R(u): identity 1; cubic 3 (u - R(u))^2; sine 1 - cos(2 pi u) = 2 sin(pi u)^2.
template <Surrogate S, typename T, typename A = BlockArith<T>>
GCLN_HD T surrogate_slope(T u, T r) {
  if constexpr (S == Surrogate::kIdentity) {
    return A::splat(1.f);
  } else if constexpr (S == Surrogate::kCubic) {
    const T e = u - r;
    return (e * e) * A::splat(3.f);
  } else {
    const T sp = sin_pi<T, A>(u - A::round(u));
    return (sp * sp) * A::splat(2.f);
  }
}

// q * R(z / q), with 1/q precomputed. The step tables the kernels pass in
// fold the op's `scale` in (z is a coefficient of x, not of x * scale):
// inv_step = scale / q, step = q / scale.
template <typename T, typename A = BlockArith<T>>
GCLN_HD T quantize(T z, T inv_step, T step) {
  return round_tie<T, A>(z * inv_step) * step;
}

// The forward's quantizer, q * F(z / q) with F = R (or F = s when soft), from
// a table that carries the 512 of R: inv512 = 512 / q (times the kernels' scale).
template <Surrogate S, bool kSoft, typename T, typename A = BlockArith<T>>
GCLN_HD T quantize_prescaled(T z, T inv512, T step) {
  const T u512 = z * inv512;
  const T r = round_tie_scaled<T, A>(u512);
  if constexpr (!kSoft || S == Surrogate::kIdentity) {
    return r * step;
  } else {
    return surrogate_value<S, T, A>(u512 * A::splat(kInvTieGrid), r) * step;
  }
}

// R(t) - t with t = z / q: the factor of the LSQ step-size gradient (identity surrogate).
template <typename T, typename A = BlockArith<T>>
GCLN_HD T lsq_residual(T z, T inv_step) {
  const T t = z * inv_step;
  return round_tie<T, A>(t) - t;
}

}  // namespace block
}  // namespace gcln_fast
