// CUDA registrations for ops that have no CUDA kernel in this build, so a CUDA call
// fails with a sentence saying why instead of the dispatcher's generic backend error.
#include <torch/library.h>

namespace {

#ifdef APQ_WITH_CUDA
constexpr char kWhy[] =
    "the CUDA bit-plane GEMM is not built yet in this version of apq_torch; "
    "move the operands to the CPU (.cpu()) to run this op";
#else
constexpr char kWhy[] =
    "apq_torch was built without CUDA (no nvcc or a CPU-only torch at build time); "
    "reinstall it where nvcc and a CUDA build of torch are present";
#endif

void unavailable(const c10::OperatorHandle& op, torch::jit::Stack*) {
  TORCH_CHECK_NOT_IMPLEMENTED(false, op.schema().name(), " has no CUDA kernel: ", kWhy);
}

}  // namespace

TORCH_LIBRARY_IMPL(apq, CUDA, m) {
#ifndef APQ_WITH_CUDA
  for (const char* name : {"pack", "unpack", "quantize_pack"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&unavailable>());
  }
#endif
  for (const char* name : {"gemm", "qmatmul", "linear"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&unavailable>());
  }
}
