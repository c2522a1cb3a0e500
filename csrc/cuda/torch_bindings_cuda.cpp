// CUDA implementations of the apq ops that have CUDA kernels in this build.
#include "../ops.h"

#include <torch/library.h>

TORCH_LIBRARY_IMPL(apq, CUDA, m) {
  m.impl("pack", &apq::pack_cuda);
  m.impl("unpack", &apq::unpack_cuda);
  m.impl("quantize_pack", &apq::quantize_pack_cuda);
}
