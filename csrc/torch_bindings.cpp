// The apq op library: every schema in one TORCH_LIBRARY block (the contract: docs/ops.md),
// the CPU implementations, and the empty Python module whose import loads this library.
// Typed wrappers and fake functions: apq_torch/ops/library.py; CUDA: csrc/cuda/torch_bindings_cuda.cpp.
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
  // unsigned codes [R, K] -> bit planes int32 [bits, R, ceil(K/256)*8] and per-group row sums [R, G]
  m.def("pack(Tensor codes, int bits, int group_size=0) -> (Tensor planes, Tensor rowsum)");
  // bit planes -> int32 codes [R, K]
  m.def("unpack(Tensor planes, int K) -> Tensor");
  // per-token dynamic quantization of float x [M, K] and packing in one pass; scale/offset fp32 [M];
  // with `hadamard` (a mix [m, m]), each row is first rotated as by apq::hadamard(x, hadamard);
  // `clip` in (0, 1] scales each row's range before its scale is chosen (values beyond saturate)
  m.def(
      "quantize_pack(Tensor x, int bits, str format, int group_size=0, Tensor? hadamard=None, float clip=1.0)"
      " -> (Tensor planes, Tensor rowsum, Tensor scale, Tensor offset)");
  // exact int32 [M, N] = sum_k u_x * u_w; refuses a K that could overflow int32
  m.def("gemm(Tensor x_planes, Tensor w_planes, int K) -> Tensor");
  // bit-plane GEMM + shift-add recovery + affine/dequant epilogue -> fp32/fp16/bf16 [M, N]
  m.def(
      "qmatmul(Tensor x_planes, Tensor x_rowsum, Tensor x_scale, Tensor x_offset,"
      " Tensor w_planes, Tensor w_rowsum, Tensor w_scale, Tensor w_offset,"
      " int K, int group_size, Tensor? bias, ScalarType out_dtype) -> Tensor");
  // quantize_pack (with its optional fused Hadamard transform and clip a_clip) + qmatmul of x [..., K];
  // output [..., N] in x.dtype
  m.def(
      "linear(Tensor x, Tensor w_planes, Tensor w_rowsum, Tensor w_scale, Tensor w_offset,"
      " int K, int group_size, int a_bits, str a_format, Tensor? bias, Tensor? hadamard=None,"
      " float a_clip=1.0) -> Tensor");
  // rows of x [..., n] times (mix (x) H_P / sqrt(P))^T, n = m * P, P a power of two (fast Walsh-Hadamard, fp32)
  m.def("hadamard(Tensor x, Tensor mix) -> Tensor");
  // Selects the CPU kernel, and names the kernel map's choice for a shape (tests, benchmarks);
  // not part of the op contract.
  m.def("_cpu_kernel(str request=\"\") -> str", &apq::cpu_kernel);
  m.def("_cpu_kernel_choice(int M, int x_bits, int w_bits, int group_size) -> str", &apq::cpu_kernel_choice);
  // The CUDA kernel the mapping picks for a shape (tests, benchmarks); never measures.
  m.def("_cuda_kernel_choice(int M, int N, int K, int x_bits, int w_bits, bool grouped) -> str",
        &apq::cuda_kernel_choice);
  // Whether this build compiled the CUDA kernels.
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
  m.impl("hadamard", &apq::hadamard_cpu);
}
