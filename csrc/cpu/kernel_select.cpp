#include "kernel_select.h"

#include "../ops.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <cstdlib>
#include <string>

namespace apq::cpu {
namespace {

const Kernels* resolve(std::string_view request, const char* source) {
  if (request == "auto") {
    const Kernels* best = avx512_kernels();
    return best ? best : &portable_kernels();
  }
  if (request == "portable") return &portable_kernels();
  if (request == "avx512") {
    const Kernels* k = avx512_kernels();
    TORCH_CHECK(k != nullptr, source,
                ": 'avx512' needs a CPU with AVX-512 VPOPCNTDQ (and an x86-64 build); this one has none");
    return k;
  }
  TORCH_CHECK(false, source, " must be 'auto', 'avx512' or 'portable', got '", request, "'");
}

std::atomic<const Kernels*>& current() {
  static std::atomic<const Kernels*> kernels{[] {
    const char* env = std::getenv("APQ_CPU_KERNEL");
    return resolve(env && *env ? env : "auto", "environment variable APQ_CPU_KERNEL");
  }()};
  return kernels;
}

}  // namespace

const Kernels& active_kernels() { return *current().load(std::memory_order_relaxed); }

}  // namespace apq::cpu

namespace apq {

std::string cpu_kernel(std::string_view request) {
  if (!request.empty()) {
    cpu::current().store(cpu::resolve(request, "apq::_cpu_kernel: argument 'request'"));
  }
  return cpu::active_kernels().name;
}

}  // namespace apq
