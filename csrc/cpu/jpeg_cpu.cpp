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
constexpr int64_t kBandPixels = 4096;  // rows per task: about this many pixels (L1-sized scratch)

// floor of an array in place. GCC turns std::floor into vroundps only under
// -fno-trapping-math (not this build's flag to set); its scalar floor made the exact paths 4x slower.
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
  TORCH_CHECK(t.dim() == 4, name, " must have 4 dimensions, got ", t.sizes());
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
// filter); `box` is libjpeg's box upsampler (replication). `col`: scratch of cw floats.
template <bool kExact>
void upsample_row(const float* near, const float* far, int64_t fv, int64_t fh, int64_t cw, int64_t w, bool box,
                  float* col, float* out) {
  const float* src = near;
  if (fv == 2 && !box) {
#pragma omp simd
    for (int64_t k = 0; k < cw; ++k) col[k] = 3.f * near[k] + far[k];
    src = col;
  }
  if (fh == 1 || box) {
    for (int64_t j = 0; j < w; ++j) out[j] = src[j / fh];
    return;
  }
  const float scale = fv == 2 ? 1.f / 16.f : 1.f / 4.f;
  // libjpeg's bias: + 8, 7, 8, 7, ... >> 4 (4:2:0) and + 1, 2, 1, 2, ... >> 2 (4:2:2).
  const float bias_even = kExact ? (fv == 2 ? 8.f : 1.f) : 0.f, bias_odd = kExact ? (fv == 2 ? 7.f : 2.f) : 0.f;
  // Output 2k leans on chroma column k-1, output 2k+1 on k+1; the edges replicate (cw > 2 here).
  out[0] = (4.f * src[0] + bias_even) * scale;
  out[1] = (3.f * src[0] + src[1] + bias_odd) * scale;
#pragma omp simd
  for (int64_t k = 1; k < cw - 1; ++k) {
    out[2 * k] = (3.f * src[k] + src[k - 1] + bias_even) * scale;
    out[2 * k + 1] = (3.f * src[k] + src[k + 1] + bias_odd) * scale;
  }
  out[2 * cw - 2] = (3.f * src[cw - 1] + src[cw - 2] + bias_even) * scale;
  if (2 * cw - 1 < w) out[2 * cw - 1] = (4.f * src[cw - 1] + bias_odd) * scale;
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
  float* cb = scratch;  // upsampled band: rows x w each
  float* cr = cb + n;
  float* terms = cr + n;  // 3 n
  float* ylev = terms + 3 * n;  // n
  float* lev = ylev + n;  // chroma levels of the band's rows and their neighbours: 2 planes x (rows + 2) x cw
  float* col = lev + 2 * (rows + 2) * cw;  // cw
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
    std::vector<float> scratch(6 * static_cast<size_t>(band * w) + 2 * static_cast<size_t>((band + 2) * cw) + cw);
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t img = task / bands, r0 = (task % bands) * band, rows = std::min(band, h - r0);
      const float* cb_plane = cp + img * 2 * chp * cwp;
      run(yp + (img * h + r0) * w, cb_plane, cb_plane + chp * cwp, fv, fh, h, w, ch, cw, cwp, r0, rows,
          scratch.data(), op + (img * 3 * h + r0) * w);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(gcln_fast, m) {
  m.def("jpeg_encode(Tensor x, int fv, int fh, bool exact) -> (Tensor, Tensor)");
  m.def("jpeg_decode(Tensor y, Tensor c, int fv, int fh, int height, int width, bool exact, bool clip) -> Tensor");
}

TORCH_LIBRARY_IMPL(gcln_fast, CPU, m) {
  m.impl("jpeg_encode", &jpeg_encode_cpu);
  m.impl("jpeg_decode", &jpeg_decode_cpu);
}

}  // namespace gcln_fast
