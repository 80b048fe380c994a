// Input checks shared by the CPU and CUDA implementations of the gcln_fast ops.
// The Python API checks first with friendlier messages; these guard direct
// torch.ops calls. TORCH_CHECK_VALUE / TORCH_CHECK_TYPE raise Python
// ValueError / TypeError.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <cmath>
#include <limits>
#include <type_traits>

#include "qnt_block.h"

// The op's dtypes only (AT_DISPATCH_FLOATING_TYPES_AND2 would also build double kernels).
#define GCLN_DISPATCH_QNT_FLOAT_TYPES(TYPE, NAME, ...)         \
  AT_DISPATCH_SWITCH(TYPE, NAME, AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) \
                                     AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__) \
                                         AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))

namespace gcln_fast {

inline void check_qnt_x(const at::Tensor& x, const char* name) {
  TORCH_CHECK_VALUE(x.dim() == 4, name, " must have shape (N, C, H, W), got ", x.dim(), " dimensions");
  const auto dt = x.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16, name,
                   " must be float32, float16 or bfloat16, got ", dt);
}

// q: the canonical float32 (Nq, Cq, 8, 8) table, Nq in {1, N}, Cq in {1, C}, on x's device.
inline void check_qnt_q(const at::Tensor& x, const at::Tensor& q) {
  TORCH_CHECK_TYPE(q.scalar_type() == at::kFloat, "q must be a float32 (Nq, Cq, 8, 8) table, got ", q.scalar_type());
  TORCH_CHECK_VALUE(q.dim() == 4 && q.size(2) == 8 && q.size(3) == 8 && (q.size(0) == 1 || q.size(0) == x.size(0)) &&
                        (q.size(1) == 1 || q.size(1) == x.size(1)),
                    "q must have shape (1 or N=", x.size(0), ", 1 or C=", x.size(1), ", 8, 8), got ", q.sizes());
  TORCH_CHECK_VALUE(q.device() == x.device(), "q is on ", q.device(), " but x is on ", x.device());
}

inline void check_qnt_scale(double scale) {
  TORCH_CHECK_VALUE(scale > 0 && scale <= std::numeric_limits<float>::max(),
                    "scale must be positive and finite in float32, got ", scale);
}

// One entry of q within the contract's bounds: [scale * 2^-64, float32 max] (so that scale / q stays finite).
inline void check_qnt_q_value(float v, double scale) {
  TORCH_CHECK_VALUE(v >= scale * 0x1p-64 && v <= std::numeric_limits<float>::max(),
                    "q must be finite and in [scale * 2**-64, float32 max], got ", v);
}

inline block::Surrogate parse_surrogate(c10::string_view name) {
  if (name == "identity") return block::Surrogate::kIdentity;
  if (name == "cubic") return block::Surrogate::kCubic;
  TORCH_CHECK_VALUE(name == "sine", "surrogate must be one of ('identity', 'cubic', 'sine'), got '", name, "'");
  return block::Surrogate::kSine;
}

// Calls f(std::integral_constant<block::Surrogate, S>{}) for the runtime value s.
template <typename F>
decltype(auto) with_surrogate(block::Surrogate s, F&& f) {
  switch (s) {
    case block::Surrogate::kCubic:
      return f(std::integral_constant<block::Surrogate, block::Surrogate::kCubic>{});
    case block::Surrogate::kSine:
      return f(std::integral_constant<block::Surrogate, block::Surrogate::kSine>{});
    default:
      return f(std::integral_constant<block::Surrogate, block::Surrogate::kIdentity>{});
  }
}

}  // namespace gcln_fast
