// CUDA implementations of the apq ops.
#include "../ops.h"

#include <torch/library.h>

TORCH_LIBRARY_IMPL(apq, CUDA, m) {
  m.impl("pack", &apq::pack_cuda);
  m.impl("unpack", &apq::unpack_cuda);
  m.impl("quantize_pack", &apq::quantize_pack_cuda);
  m.impl("gemm", &apq::gemm_cuda);
  m.impl("qmatmul", &apq::qmatmul_cuda);
  m.impl("linear", &apq::linear_cuda);
  m.impl("hadamard", &apq::hadamard_cuda);
}
