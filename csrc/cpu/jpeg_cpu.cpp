// Fused pixel stages of gcln_fast.jpeg for the CPU. gcln_fast/diffjpeg/stages.py holds the same
// computation in PyTorch (its fallback on other devices), which these must equal: bit for bit
// with `exact`, to float32 round-off without. docs/jpeg.md says which libjpeg step each is.
//
//   jpeg_encode: RGB in [0, 1] -> level-shifted Y (N, 1, H, W) and chroma (N, 2, hc, wc):
//                libjpeg's fixed-point colour conversion and box downsampling.
//   jpeg_decode: Y and chroma -> RGB in [0, 1]: fancy upsampling and colour conversion, with
//                libjpeg's integer rounding of every step (`exact`) and the clip (`clip`).
//
// In PyTorch each stage is 8-12 memory passes over the image (one per elementwise op and
// resampling step); here it reads its inputs once and writes its outputs once, a band of
// rows at a time (long contiguous loops that the compiler vectorises). Only the forward is
// here: the backward is the adjoint of the rounding-free linear map, in PyTorch.
// With `exact`, every product and partial sum is an integer multiple of 2**-16 below 2**24
// for 8-bit inputs (k / 255), so float32 arithmetic in any order, FMA or not, is exact.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace gcln_fast {
namespace {

constexpr float kFix = 1.0f / 65536.0f;
// jccolor.c's FIX() constants over 65536; Cb and Cr level-shifted (their +128 offset and the
// DCT's -128 shift cancel), Y shifted by -128.
constexpr float kYr = 19595 * kFix, kYg = 38470 * kFix, kYb = 7471 * kFix;
constexpr float kCbr = -11059 * kFix, kCbg = -21709 * kFix, kCbb = 32768 * kFix;
constexpr float kCrr = 32768 * kFix, kCrg = -27439 * kFix, kCrb = -5329 * kFix;
// jdcolor.c's tables: R = Y + 1.40200 Cr, G = Y - 0.34414 Cb - 0.71414 Cr, B = Y + 1.77200 Cb.
constexpr float kRcr = 91881 * kFix, kGcb = -22554 * kFix, kGcr = -46802 * kFix, kBcb = 116130 * kFix;
constexpr int64_t kBandPixels = 4096;  // rows per task: about this many pixels (scratch fits in L2)

// floor of an array in place. GCC turns std::floor into vroundps only under
// -fno-trapping-math (not this build's flag to set); its scalar floor made the exact paths 4x
// slower (interleaved single-thread timing of the encoder on 256x3x32x32).
inline void floor_inplace(float* p, int64_t n) {
  int64_t j = 0;
#if defined(__AVX__)
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(p + j, _mm256_floor_ps(_mm256_loadu_ps(p + j)));
#endif
  for (; j < n; ++j) p[j] = std::floor(p[j]);
}

// libjpeg's decoded samples: the inverse DCT rounded half up and range-limited (level-shifted).
inline void sample_levels(const float* in, int64_t n, float* out) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j] = std::min(std::max(in[j], -128.f), 127.f) + 0.5f;
  floor_inplace(out, n);
}

void check_float_contiguous(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 4 && t.size(2) > 0 && t.size(3) > 0, name, " must have 4 dimensions, H, W >= 1, got ",
              t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kFloat, name, " must be float32, got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

void check_factors(int64_t fv, int64_t fh) {
  TORCH_CHECK((fv == 1 || fv == 2) && (fh == 1 || fh == 2) && fv <= fh, "unsupported subsampling ", fv, "x", fh);
}

// Rows per task: a multiple of the vertical factor, about kBandPixels pixels.
int64_t band_rows(int64_t h, int64_t w, int64_t fv) {
  const int64_t rows = std::max<int64_t>(fv, (kBandPixels / std::max<int64_t>(w, 1)) / fv * fv);
  return std::min(rows, (h + fv - 1) / fv * fv);
}

// ------------------------------------------------------------------------------ encoder

// n pixels of contiguous R, G, B rows -> Y (when y is non-null), Cb, Cr (level-shifted).
template <bool kExact>
void convert(const float* r, const float* g, const float* b, int64_t n, float* y, float* cb, float* cr) {
  constexpr float ybias = kExact ? 0.5f - 128.f : -128.f;  // jccolor.c's ONE_HALF, and ONE_HALF - 1
  constexpr float cbias = kExact ? 0.5f - kFix : 0.f;
  // 255 r first: exact integers for 8-bit images, so the exact sums below are exact too.
  if (y) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] = kYr * (255.f * r[j]) + kYg * (255.f * g[j]) + kYb * (255.f * b[j]) + ybias;
    if (kExact) floor_inplace(y, n);
  }
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const float R = 255.f * r[j], G = 255.f * g[j], B = 255.f * b[j];
    cb[j] = kCbr * R + kCbg * G + kCbb * B + cbias;
    cr[j] = kCrr * R + kCrg * G + kCrb * B + cbias;
  }
  if (kExact) {
    floor_inplace(cb, n);
    floor_inplace(cr, n);
  }
}

// Box average of one chroma row from one (row1 null) or two full-resolution rows, two columns
// per output; columns past w are the last column replicated (libjpeg's expand_right_edge).
template <bool kExact>
void downsample_row(const float* row0, const float* row1, int64_t w, int64_t wc, float* out) {
  const float scale = row1 ? 0.25f : 0.5f;
  // libjpeg's bias: (sum + 1, 2, 1, 2, ...) >> 2 and (sum + 0, 1, 0, 1, ...) >> 1.
  const float bias0 = kExact ? (row1 ? 1.f : 0.f) : 0.f, bias1 = kExact ? (row1 ? 2.f : 1.f) : 0.f;
  const int64_t inside = w / 2;  // outputs whose two columns are both in the image
  if (row1) {
#pragma omp simd
    for (int64_t j = 0; j < inside; ++j) {
      out[j] = (row0[2 * j] + row0[2 * j + 1] + row1[2 * j] + row1[2 * j + 1] + ((j & 1) ? bias1 : bias0)) * scale;
    }
  } else {
#pragma omp simd
    for (int64_t j = 0; j < inside; ++j) out[j] = (row0[2 * j] + row0[2 * j + 1] + ((j & 1) ? bias1 : bias0)) * scale;
  }
  for (int64_t j = inside; j < wc; ++j) {
    const int64_t c0 = std::min(2 * j, w - 1), c1 = std::min(2 * j + 1, w - 1);
    out[j] = (row0[c0] + row0[c1] + (row1 ? row1[c0] + row1[c1] : 0.f) + ((j & 1) ? bias1 : bias0)) * scale;
  }
  if (kExact) floor_inplace(out, wc);
}

std::tuple<at::Tensor, at::Tensor> jpeg_encode_cpu(const at::Tensor& x, int64_t fv, int64_t fh, bool exact) {
  check_float_contiguous(x, "x");
  check_factors(fv, fh);
  TORCH_CHECK(x.size(1) == 3, "x must have 3 channels, got ", x.size(1));
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  const int64_t hc = (h + fv - 1) / fv, wc = fh == 2 ? 8 * ((w + 15) / 16) : w;
  at::Tensor y = at::empty({n, 1, h, w}, x.options());
  at::Tensor c = at::empty({n, 2, hc, wc}, x.options());
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  float* cp = c.data_ptr<float>();
  const int64_t band = band_rows(h, w, fv), bands = (h + band - 1) / band;
  auto conv = exact ? convert<true> : convert<false>;
  auto down = exact ? downsample_row<true> : downsample_row<false>;
  at::parallel_for(0, n * bands, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> buf(fh == 2 ? 2 * static_cast<size_t>(band * w) : 0);  // full-resolution Cb, Cr
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t img = task / bands, r0 = (task % bands) * band, rows = std::min(band, h - r0);
      const float* r = xp + (img * 3 * h + r0) * w;
      float* cb_out = cp + (img * 2 * hc + r0 / fv) * wc;
      float* cr_out = cb_out + hc * wc;
      if (fh == 1) {  // 4:4:4: full-resolution chroma, straight into the output
        conv(r, r + h * w, r + 2 * h * w, rows * w, yp + (img * h + r0) * w, cb_out, cr_out);
        continue;
      }
      float* cb = buf.data();
      float* cr = cb + band * w;
      conv(r, r + h * w, r + 2 * h * w, rows * w, yp + (img * h + r0) * w, cb, cr);
      for (int64_t k = 0; k < rows; k += fv) {  // an odd height's last row pairs with itself
        const int64_t k1 = fv == 2 ? std::min(k + 1, rows - 1) : -1;
        const int64_t i = k / fv;
        down(cb + k * w, k1 >= 0 ? cb + k1 * w : nullptr, w, wc, cb_out + i * wc);
        down(cr + k * w, k1 >= 0 ? cr + k1 * w : nullptr, w, wc, cr_out + i * wc);
      }
    }
  });
  return {y, c};
}

// ------------------------------------------------------------------------------ decoder

// One output row of one chroma plane from its nearer and further chroma rows (levels when
// kExact): vertical taps 3 near + far, then horizontal 3 this + neighbour (libjpeg's fancy
// filter); `box` is libjpeg's box upsampler (replication). `col`: scratch of cw + 2 floats.
// `out` must have room for 2 cw floats (one past w when w is odd: the caller's slack).
template <bool kExact>
void upsample_row(const float* near, const float* far, int64_t fv, int64_t fh, int64_t cw, int64_t w, bool box,
                  float* col, float* out) {
  float* src = col + 1;  // the taps with their replicated edge neighbours at src[-1], src[cw]
  if (fv == 2 && !box) {
#pragma omp simd
    for (int64_t k = 0; k < cw; ++k) src[k] = 3.f * near[k] + far[k];
  } else {
    std::copy(near, near + cw, src);
  }
  if (fh == 1 || box) {
    for (int64_t j = 0; j < w; ++j) out[j] = src[j / fh];
    return;
  }
  src[-1] = src[0];
  src[cw] = src[cw - 1];
  const float scale = fv == 2 ? 1.f / 16.f : 1.f / 4.f;
  // libjpeg's bias: + 8, 7, 8, 7, ... >> 4 (4:2:0) and + 1, 2, 1, 2, ... >> 2 (4:2:2).
  const float bias_even = kExact ? (fv == 2 ? 8.f : 1.f) : 0.f, bias_odd = kExact ? (fv == 2 ? 7.f : 2.f) : 0.f;
  // Output 2k leans on chroma column k-1, output 2k+1 on k+1: one loop without edge cases
  // (short rows of 32x32 images otherwise ran mostly in the scalar remainder).
#pragma omp simd
  for (int64_t k = 0; k < cw; ++k) {
    out[2 * k] = (3.f * src[k] + src[k - 1] + bias_even) * scale;
    out[2 * k + 1] = (3.f * src[k] + src[k + 1] + bias_odd) * scale;
  }
}

// n pixels: Y (levels when kExact) and upsampled chroma -> R, G, B (jdcolor.c). `t`: scratch
// of 3 n floats for jdcolor.c's rounded table terms.
template <bool kExact, bool kClip>
void color(const float* y, const float* cb, const float* cr, int64_t n, float* t, float* ro, float* go, float* bo) {
  auto clip = [](float v) { return kClip ? std::min(std::max(v, 0.f), 1.f) : v; };
  if (kExact) {  // Y + ((FIX(a) Cb + FIX(b) Cr + ONE_HALF) >> 16), then k / 255 as images are read
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      t[j] = kRcr * cr[j] + 0.5f;
      t[n + j] = kGcb * cb[j] + kGcr * cr[j] + 0.5f;
      t[2 * n + j] = kBcb * cb[j] + 0.5f;
    }
    floor_inplace(t, 3 * n);
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      const float yv = y[j] + 128.f;
      ro[j] = clip((yv + t[j]) / 255.f);
      go[j] = clip((yv + t[n + j]) / 255.f);
      bo[j] = clip((yv + t[2 * n + j]) / 255.f);
    }
    return;
  }
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const float yv = y[j] + 128.f;
    ro[j] = clip((yv + kRcr * cr[j]) * (1.f / 255.f));
    go[j] = clip((yv + kGcb * cb[j] + kGcr * cr[j]) * (1.f / 255.f));
    bo[j] = clip((yv + kBcb * cb[j]) * (1.f / 255.f));
  }
}

template <bool kExact, bool kClip>
void decode_band(const float* y, const float* cb_plane, const float* cr_plane, int64_t fv, int64_t fh, int64_t h,
                 int64_t w, int64_t ch, int64_t cw, int64_t cwp, int64_t r0, int64_t rows, float* scratch, float* out) {
  const bool box = fh == 2 && cw <= 2;
  const int64_t n = rows * w;
  float* cb = scratch;  // upsampled band: rows x w each, and one float of slack (upsample_row)
  float* cr = cb + n + 1;
  float* terms = cr + n + 1;  // 3 n
  float* ylev = terms + 3 * n;  // n
  float* lev = ylev + n;  // chroma levels of the band's rows and their neighbours: 2 planes x (rows + 2) x cw
  float* col = lev + 2 * (rows + 2) * cw;  // cw + 2
  const int64_t i0 = std::max<int64_t>(r0 / fv - 1, 0), i1 = std::min((r0 + rows - 1) / fv + 1, ch - 1);
  const float* planes[2] = {cb_plane, cr_plane};
  const float* base[2];  // chroma row i of plane p is base[p] + (i - i0) * stride
  int64_t stride = cwp;
  for (int p = 0; p < 2; ++p) {
    base[p] = planes[p] + i0 * cwp;
    if (kExact) {
      float* dst = lev + p * (rows + 2) * cw;
      for (int64_t i = i0; i <= i1; ++i) sample_levels(planes[p] + i * cwp, cw, dst + (i - i0) * cw);
      base[p] = dst;
    }
  }
  if (kExact) stride = cw;
  for (int64_t r = r0; r < r0 + rows; ++r) {
    const int64_t i = r / fv;  // the nearer chroma row; the further one is above (even r) or below
    const int64_t far = fv == 1 || box ? i : ((r & 1) ? std::min(i + 1, ch - 1) : std::max<int64_t>(i - 1, 0));
    float* dst[2] = {cb + (r - r0) * w, cr + (r - r0) * w};
    for (int p = 0; p < 2; ++p) {
      upsample_row<kExact>(base[p] + (i - i0) * stride, base[p] + (far - i0) * stride, fv, fh, cw, w, box, col, dst[p]);
    }
  }
  if (fh == 2 && kExact && !box) {
    floor_inplace(cb, n);
    floor_inplace(cr, n);
  }
  if (kExact) {
    sample_levels(y, n, ylev);
    y = ylev;
  }
  color<kExact, kClip>(y, cb, cr, n, terms, out, out + h * w, out + 2 * h * w);
}

at::Tensor jpeg_decode_cpu(const at::Tensor& y, const at::Tensor& c, int64_t fv, int64_t fh, int64_t h, int64_t w,
                           bool exact, bool clip) {
  check_float_contiguous(y, "y");
  check_float_contiguous(c, "c");
  check_factors(fv, fh);
  const int64_t n = y.size(0), ch = (h + fv - 1) / fv, cw = (w + fh - 1) / fh;
  TORCH_CHECK(y.size(1) == 1 && y.size(2) == h && y.size(3) == w, "y must have shape (N, 1, ", h, ", ", w, ")");
  TORCH_CHECK(c.size(0) == n && c.size(1) == 2 && c.size(2) >= ch && c.size(3) >= cw, "c is too small: ", c.sizes());
  at::Tensor out = at::empty({n, 3, h, w}, y.options());
  const float* yp = y.data_ptr<float>();
  const float* cp = c.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t chp = c.size(2), cwp = c.size(3);
  const int64_t band = band_rows(h, w, fv), bands = (h + band - 1) / band;
  auto run = exact ? (clip ? decode_band<true, true> : decode_band<true, false>)
                   : (clip ? decode_band<false, true> : decode_band<false, false>);
  at::parallel_for(0, n * bands, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> scratch(6 * static_cast<size_t>(band * w) + 2 * static_cast<size_t>((band + 2) * cw) + cw + 4);
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t img = task / bands, r0 = (task % bands) * band, rows = std::min(band, h - r0);
      const float* cb_plane = cp + img * 2 * chp * cwp;
      run(yp + (img * h + r0) * w, cb_plane, cb_plane + chp * cwp, fv, fh, h, w, ch, cw, cwp, r0, rows,
          scratch.data(), op + (img * 3 * h + r0) * w);
    }
  });
  return out;
}

// ------------------------------------------------------------------------------ adjoints
// The backward of both stages is the adjoint of the rounding-free linear map (the 8-bit
// roundings and intermediate clamps are straight-through), as stages.py computes it in PyTorch.

// The transposed encoder for one chroma row i (fv full-resolution rows): the box average's
// adjoint, with the replicated columns (past w, out to fh * wc) and the replicated last row of
// an odd height folded back onto the last real column / row, then 255 M^T.
void encode_adjoint_rows(const float* gy, const float* gcb, const float* gcr, int64_t i, int64_t fv, int64_t fh,
                         int64_t h, int64_t w, int64_t hc, int64_t wc, float* scratch, float* gx) {
  float* full[2] = {scratch, scratch + w};  // full-resolution chroma gradient of one row
  const float* rows[2] = {gcb, gcr};
  const float s = 1.f / static_cast<float>(fv * fh);
  for (int p = 0; p < 2; ++p) {
#pragma omp simd
    for (int64_t j = 0; j < w - 1; ++j) full[p][j] = s * rows[p][j / fh];
    float last = 0.f;
    for (int64_t cc = w - 1; cc < fh * wc; ++cc) last += rows[p][cc / fh];
    full[p][w - 1] = s * last;
  }
  for (int64_t t = 0; t < fv; ++t) {
    const int64_t r = fv * i + t;
    if (r >= h) break;
    // the last row of an odd height also stands for its replica below it
    const float k = (fv == 2 && r == h - 1 && fv * hc > h) ? 2.f : 1.f;
    const float* y = gy + r * w;
    float* gr = gx + r * w;
    float* gg = gr + h * w;
    float* gb = gg + h * w;
#pragma omp simd
    for (int64_t j = 0; j < w; ++j) {
      const float cb = k * full[0][j], cr = k * full[1][j];
      gr[j] = 255.f * (kYr * y[j] + kCbr * cb + kCrr * cr);
      gg[j] = 255.f * (kYg * y[j] + kCbg * cb + kCrg * cr);
      gb[j] = 255.f * (kYb * y[j] + kCbb * cb + kCrb * cr);
    }
  }
}

at::Tensor jpeg_encode_backward_cpu(const at::Tensor& grad_y, const at::Tensor& grad_c, int64_t fv, int64_t fh) {
  check_float_contiguous(grad_y, "grad_y");
  check_float_contiguous(grad_c, "grad_c");
  check_factors(fv, fh);
  const int64_t n = grad_y.size(0), h = grad_y.size(2), w = grad_y.size(3);
  const int64_t hc = grad_c.size(2), wc = grad_c.size(3);
  TORCH_CHECK(hc == (h + fv - 1) / fv && wc == (fh == 2 ? 8 * ((w + 15) / 16) : w), "grad_c has the wrong shape");
  at::Tensor gx = at::empty({n, 3, h, w}, grad_y.options());
  const float* gyp = grad_y.data_ptr<float>();
  const float* gcp = grad_c.data_ptr<float>();
  float* gxp = gx.data_ptr<float>();
  const int64_t band = band_rows(h, w, fv) / fv, bands = (hc + band - 1) / band;  // in chroma rows
  at::parallel_for(0, n * bands, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> scratch(2 * static_cast<size_t>(w));
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t img = task / bands, i0 = (task % bands) * band, i1 = std::min(i0 + band, hc);
      const float* gcb = gcp + img * 2 * hc * wc;
      for (int64_t i = i0; i < i1; ++i) {
        encode_adjoint_rows(gyp + img * h * w, gcb + i * wc, gcb + (hc + i) * wc, i, fv, fh, h, w, hc, wc,
                            scratch.data(), gxp + img * 3 * h * w);
      }
    }
  });
  return gx;
}

// 1-D adjoint of the fancy (or, `box`, replicating) 2x upsampling of n samples to m <= 2 n
// outputs: out[k] = 3/4 (g[2k] + g[2k+1]) + 1/4 (g[2k-1] + g[2k+2]), outputs past m and before 0
// zero, and each edge's replicated neighbour folded back onto it. `gp`: g with one zero before
// and enough zeros after (2 n + 2 floats).
void upsample_adjoint_1d(const float* gp, int64_t n, int64_t m, bool box, float* out) {
  const float* g = gp + 1;
  if (box) {
    for (int64_t k = 0; k < n; ++k) out[k] = g[2 * k] + g[2 * k + 1];
    return;
  }
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) out[k] = 0.75f * (g[2 * k] + g[2 * k + 1]) + 0.25f * (g[2 * k - 1] + g[2 * k + 2]);
  out[0] += 0.25f * g[0];
  if (2 * n - 1 < m) out[n - 1] += 0.25f * g[2 * n - 1];
}

// The colour adjoint of output rows [r0, r1): M^T g / 255 for the upsampled chroma, written to
// `gcp` (per row: Cb then Cr, each w floats inside a zero-padded row of `stride` floats, as
// upsample_adjoint_1d takes it), and grad_y = (R + G + B) / 255 for the rows in [y0, y1).
void decode_adjoint_color(const float* g, int64_t h, int64_t w, int64_t r0, int64_t r1, int64_t y0, int64_t y1,
                          int64_t stride, float* gy, float* gcp) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* gr = g + r * w;
    const float* gg = gr + h * w;
    const float* gb = gg + h * w;
    float* cb = gcp + (r - r0) * 2 * stride + 1;
    float* cr = cb + stride;
#pragma omp simd
    for (int64_t j = 0; j < w; ++j) {
      cb[j] = (kGcb * gg[j] + kBcb * gb[j]) * (1.f / 255.f);
      cr[j] = (kRcr * gr[j] + kGcr * gg[j]) * (1.f / 255.f);
    }
    if (r >= y0 && r < y1) {
      float* out = gy + (r - y0) * w;
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) out[j] = (gr[j] + gg[j] + gb[j]) * (1.f / 255.f);
    }
  }
}

std::tuple<at::Tensor, at::Tensor> jpeg_decode_backward_cpu(const at::Tensor& grad, int64_t fv, int64_t fh,
                                                             int64_t c_height, int64_t c_width) {
  check_float_contiguous(grad, "grad");
  check_factors(fv, fh);
  const int64_t n = grad.size(0), h = grad.size(2), w = grad.size(3);
  const int64_t ch = (h + fv - 1) / fv, cw = (w + fh - 1) / fh;
  TORCH_CHECK(grad.size(1) == 3 && c_height >= ch && c_width >= cw, "bad shapes for the decoder's adjoint");
  at::Tensor gy = at::empty({n, 1, h, w}, grad.options());
  at::Tensor gc = at::zeros({n, 2, c_height, c_width}, grad.options());
  const float* gp = grad.data_ptr<float>();
  float* gyp = gy.data_ptr<float>();
  float* gcp = gc.data_ptr<float>();
  const bool box = fh == 2 && cw <= 2;
  const int64_t stride = 2 * cw + 2;  // one zero-padded full-resolution chroma row
  const int64_t band = std::max<int64_t>(1, band_rows(h, w, fv) / fv), bands = (ch + band - 1) / band;
  at::parallel_for(0, n * bands, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> rows(2 * static_cast<size_t>((fv * band + 2) * stride));
    std::vector<float> vert(2 * static_cast<size_t>(stride));
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t img = task / bands, i0 = (task % bands) * band, i1 = std::min(i0 + band, ch);
      const float* g = gp + img * 3 * h * w;
      // Output rows this band's chroma rows feed: fv i0 - 1 .. fv i1 (within the image).
      const int64_t r0 = std::max<int64_t>(fv * i0 - (fv == 2 ? 1 : 0), 0);
      const int64_t r1 = std::min(fv * i1 + (fv == 2 ? 1 : 0), h);
      std::fill(rows.begin(), rows.end(), 0.f);
      const int64_t y0 = fv * i0, y1 = std::min(fv * i1, h);  // the rows of grad_y this task owns
      decode_adjoint_color(g, h, w, r0, r1, y0, y1, stride, gyp + (img * h + y0) * w, rows.data());
      auto row = [&](int64_t r, int p) { return rows.data() + ((r - r0) * 2 + p) * stride; };
      for (int64_t i = i0; i < i1; ++i) {
        for (int p = 0; p < 2; ++p) {
          float* v = vert.data() + p * stride;
          const float* near0 = row(fv * i, p);
          if (fv == 1) {
            std::copy(near0, near0 + stride, v);
          } else {
            const bool has1 = 2 * i + 1 < h;
            const float* near1 = has1 ? row(2 * i + 1, p) : nullptr;
            const float* above = i > 0 ? row(2 * i - 1, p) : nullptr;  // its far row is i
            const float* below = 2 * i + 2 < h ? row(2 * i + 2, p) : nullptr;
            const float wn = box ? 1.f : 0.75f, wf = box ? 0.f : 0.25f;
            for (int64_t j = 0; j < stride; ++j) {
              float s = wn * (near0[j] + (has1 ? near1[j] : 0.f));
              s += wf * ((above ? above[j] : 0.f) + (below ? below[j] : 0.f));
              if (i == 0) s += wf * near0[j];  // output row 0 leans on itself
              if (i == ch - 1 && has1) s += wf * near1[j];  // and so does the last odd output row
              v[j] = s;
            }
          }
          float* out = gcp + ((img * 2 + p) * c_height + i) * c_width;
          if (fh == 1) {
            std::copy(v + 1, v + 1 + w, out);
          } else {
            upsample_adjoint_1d(v, cw, w, box, out);
          }
        }
      }
    }
  });
  return {gy, gc};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(gcln_fast, m) {
  m.def("jpeg_encode(Tensor x, int fv, int fh, bool exact) -> (Tensor, Tensor)");
  m.def("jpeg_decode(Tensor y, Tensor c, int fv, int fh, int height, int width, bool exact, bool clip) -> Tensor");
  m.def("jpeg_encode_backward(Tensor grad_y, Tensor grad_c, int fv, int fh) -> Tensor");
  m.def("jpeg_decode_backward(Tensor grad, int fv, int fh, int c_height, int c_width) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(gcln_fast, CPU, m) {
  m.impl("jpeg_encode", &jpeg_encode_cpu);
  m.impl("jpeg_decode", &jpeg_decode_cpu);
  m.impl("jpeg_encode_backward", &jpeg_encode_backward_cpu);
  m.impl("jpeg_decode_backward", &jpeg_decode_backward_cpu);
}

}  // namespace gcln_fast
