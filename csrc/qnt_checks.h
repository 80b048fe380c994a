// Input checks shared by the CPU and CUDA implementations of gcln_fast::qnt.
// The Python API checks first with friendlier messages; these guard direct
// torch.ops calls. TORCH_CHECK_VALUE / TORCH_CHECK_TYPE raise Python
// ValueError / TypeError.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace gcln_fast {

inline void check_qnt_x(const at::Tensor& x, const char* name) {
  TORCH_CHECK_VALUE(x.dim() == 4, name, " must have shape (N, C, H, W), got ", x.dim(), " dimensions");
  const auto dt = x.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16, name,
                   " must be float32, float16 or bfloat16, got ", dt);
}

// q: canonical float32 (Cq, 8, 8) table, Cq == 1 or C, on x's device.
inline void check_qnt_q(const at::Tensor& x, const at::Tensor& q) {
  TORCH_CHECK_TYPE(q.scalar_type() == at::kFloat, "q must be a float32 (Cq, 8, 8) table, got ", q.scalar_type());
  TORCH_CHECK_VALUE(q.dim() == 3 && q.size(1) == 8 && q.size(2) == 8 && (q.size(0) == 1 || q.size(0) == x.size(1)),
                    "q must have shape (1, 8, 8) or (C=", x.size(1), ", 8, 8), got ", q.sizes());
  TORCH_CHECK_VALUE(q.device() == x.device(), "q is on ", q.device(), " but x is on ", x.device());
}

inline void check_qnt_scale(double scale) {
  TORCH_CHECK_VALUE(scale > 0 && scale < INFINITY, "scale must be positive and finite, got ", scale);
}

}  // namespace gcln_fast
