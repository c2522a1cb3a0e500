// The apq op library: every schema (DESIGN.md §4) in one TORCH_LIBRARY block, the CPU
// implementations, and the empty Python module whose import loads this library.
#include "ops.h"

#include <Python.h>
#include <torch/library.h>

extern "C" {
PyObject* PyInit__C(void) {
  static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(apq, m) {
  m.def("pack(Tensor codes, int bits, int group_size=0) -> (Tensor planes, Tensor rowsum)");
  m.def("unpack(Tensor planes, int K) -> Tensor");
  m.def(
      "quantize_pack(Tensor x, int bits, str format, int group_size=0)"
      " -> (Tensor planes, Tensor rowsum, Tensor scale, Tensor offset)");
  m.def("gemm(Tensor x_planes, Tensor w_planes, int K) -> Tensor");
  m.def(
      "qmatmul(Tensor x_planes, Tensor x_rowsum, Tensor x_scale, Tensor x_offset,"
      " Tensor w_planes, Tensor w_rowsum, Tensor w_scale, Tensor w_offset,"
      " int K, int group_size, Tensor? bias, ScalarType out_dtype) -> Tensor");
  m.def(
      "linear(Tensor x, Tensor w_planes, Tensor w_rowsum, Tensor w_scale, Tensor w_offset,"
      " int K, int group_size, int a_bits, str a_format, Tensor? bias) -> Tensor");
  // Selects the CPU popcount kernel (tests, benchmarks); not part of the op contract.
  m.def("_cpu_kernel(str request=\"\") -> str", &apq::cpu_kernel);
  m.def("_cpu_kernel_choice(int M, int x_bits, int w_bits, int group_size) -> str", &apq::cpu_kernel_choice);
  m.def("_cuda_kernel_choice(int M, int N, int K, int x_bits, int w_bits, bool grouped) -> str",
        &apq::cuda_kernel_choice);
  m.def("_built_with_cuda() -> bool", [] {
#ifdef APQ_WITH_CUDA
    return true;
#else
    return false;
#endif
  });
}

TORCH_LIBRARY_IMPL(apq, CPU, m) {
  m.impl("pack", &apq::pack_cpu);
  m.impl("unpack", &apq::unpack_cpu);
  m.impl("quantize_pack", &apq::quantize_pack_cpu);
  m.impl("gemm", &apq::gemm_cpu);
  m.impl("qmatmul", &apq::qmatmul_cpu);
  m.impl("linear", &apq::linear_cpu);
}
