// The schema of the QNT ops. Kernels: csrc/cpu (CPU), csrc/cuda (CUDA);
// fake kernels and autograd are registered from Python (gcln_fast/ops.py).
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
  // y = IDCT8x8(round(DCT8x8(x * scale) / q) * q) / scale; q: float32 (Cq, 8, 8), Cq in {1, C}.
  m.def("qnt(Tensor x, Tensor q, float scale) -> Tensor");
  // LSQ step-size gradient of qnt: float32 (Cq, 8, 8).
  m.def("qnt_grad_q(Tensor grad_y, Tensor x, Tensor q, float scale) -> Tensor");
}
