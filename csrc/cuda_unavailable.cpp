// CUDA registrations for a build without CUDA (no nvcc or a CPU-only torch at build time),
// so a CUDA call fails with a sentence saying why instead of the dispatcher's generic error.
#ifndef APQ_WITH_CUDA
#include "ops.h"

#include <torch/library.h>

namespace apq {
std::string cuda_kernel_choice(int64_t, int64_t, int64_t, int64_t, int64_t, bool) { return ""; }
}  // namespace apq

namespace {

void unavailable(const c10::OperatorHandle& op, torch::jit::Stack*) {
  TORCH_CHECK_NOT_IMPLEMENTED(false, op.schema().name(),
                              " has no CUDA kernel: apq_torch was built without CUDA (no nvcc or a "
                              "CPU-only torch at build time); reinstall it where nvcc and a CUDA build "
                              "of torch are present");
}

}  // namespace

TORCH_LIBRARY_IMPL(apq, CUDA, m) {
  for (const char* name : {"pack", "unpack", "quantize_pack", "gemm", "qmatmul", "linear", "hadamard"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&unavailable>());
  }
}
#endif
