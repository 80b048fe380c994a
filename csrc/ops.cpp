// The schema of the QNT ops (the contract: docs/qnt-op.md). Kernels: csrc/cpu
// (CPU), csrc/cuda (CUDA); fake kernels and autograd are registered from
// Python (gcln_fast/ops.py).
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import gcln_fast._C` loads this library (and so runs the registrations
// below) without pybind11: the ops are reached through torch.ops.gcln_fast.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(gcln_fast, m) {
  // y = IDCT8x8(q * F(DCT8x8(x * scale) / q)) / scale with F = R (the rounding
  // with the tie rule) or, when soft_forward, the surrogate s. q: the canonical
  // float32 (Nq, Cq, 8, 8) table, Nq in {1, N}, Cq in {1, C}.
  m.def("qnt(Tensor x, Tensor q, float scale, str surrogate, bool soft_forward) -> Tensor");
  // One fused pass over the saved input: (grad_x, grad_q); grad_x has x's dtype,
  // shape and layout, grad_q is float32 of q's shape; an output not needed is
  // an empty (0,) tensor.
  m.def(
      "qnt_backward(Tensor grad_y, Tensor x, Tensor q, float scale, str surrogate, bool soft_forward, "
      "bool need_grad_x, bool need_grad_q) -> (Tensor, Tensor)");
  // For tests of the block math: R(u), s(u) and s'(u) elementwise, computed by
  // the same code as the kernels (u: float32).
  m.def("qnt_rounding(Tensor u, str surrogate) -> (Tensor, Tensor, Tensor)");
}
