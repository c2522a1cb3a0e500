// Which CPU kernel runs a product: the kernel map, and APQ_CPU_KERNEL / apq::_cpu_kernel
// (auto | avx512 | vnni | vnni-decode | portable) that force one.
#include "kernel_select.h"

#include "../ops.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <cstdlib>
#include <limits>
#include <string>

namespace apq::cpu {
namespace {

// The kernel map, measured with qmatmul at N = K = 1536 on one thread of an AMD EPYC (Zen 5,
// bench/bench_cpu_gemm.py has the ratios at the reported shapes). The popcount kernel's work
// grows with the plane pairs x_bits * w_bits, the int8 kernels' does not: per bucket of M
// and per grouping, an int8 kernel runs from `from_pairs` pairs on. The popcount kernels'
// grouped epilogue is scalar, so with groups the int8 kernels win early.
struct Int8From {
  bool decode;         // vnni-decode, else vnni
  int64_t from_pairs;  // x_bits * w_bits at which the int8 kernel starts to win
};
struct MapRow {
  int64_t max_rows;
  Int8From per_channel, grouped;
};
constexpr MapRow kCpuKernelMap[] = {
    {1, {true, 32}, {true, 16}},
    {4, {true, 8}, {false, 1}},
    {16, {false, 4}, {false, 1}},
    {std::numeric_limits<int64_t>::max(), {false, 2}, {false, 1}},
};

enum class Mode : int { Auto, Avx512, Vnni, VnniDecode, Portable };

Mode parse(std::string_view request, const char* source) {
  if (request == "auto") return Mode::Auto;
  if (request == "portable") return Mode::Portable;
  if (request == "avx512") {
    TORCH_CHECK(avx512_kernels() != nullptr, source,
                ": 'avx512' needs a CPU with AVX-512 VPOPCNTDQ (and an x86-64 build); this one has none");
    return Mode::Avx512;
  }
  if (request == "vnni" || request == "vnni-decode") {
    TORCH_CHECK(vnni_kernels() != nullptr, source, ": '", request,
                "' needs a CPU with AVX-512 VNNI, VBMI and GFNI (and an x86-64 build); this one has none");
    return request == "vnni" ? Mode::Vnni : Mode::VnniDecode;
  }
  TORCH_CHECK(false, source, " must be 'auto', 'avx512', 'vnni', 'vnni-decode' or 'portable', got '", request, "'");
}

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::Avx512: return "avx512";
    case Mode::Vnni: return "vnni";
    case Mode::VnniDecode: return "vnni-decode";
    case Mode::Portable: return "portable";
    default: return "auto";
  }
}

std::atomic<Mode>& current() {
  static std::atomic<Mode> mode{[] {
    const char* env = std::getenv("APQ_CPU_KERNEL");
    return parse(env && *env ? env : "auto", "environment variable APQ_CPU_KERNEL");
  }()};
  return mode;
}

const Kernels& best_popcount() {
  const Kernels* k = avx512_kernels();
  return k ? *k : portable_kernels();
}

}  // namespace

KernelChoice choose_kernel(int64_t M, int64_t x_bits, int64_t w_bits, int64_t group_size) {
  switch (current().load(std::memory_order_relaxed)) {
    case Mode::Avx512: return {avx512_kernels(), nullptr};
    case Mode::Vnni: return {nullptr, vnni_kernels()};
    case Mode::VnniDecode: return {nullptr, vnni_decode_kernels()};
    case Mode::Portable: return {&portable_kernels(), nullptr};
    case Mode::Auto: break;
  }
  if (vnni_kernels() == nullptr) return {&best_popcount(), nullptr};
  for (const MapRow& row : kCpuKernelMap) {
    if (M <= row.max_rows) {
      const Int8From& int8 = group_size > 0 ? row.grouped : row.per_channel;
      if (x_bits * w_bits < int8.from_pairs) break;
      return {nullptr, int8.decode ? vnni_decode_kernels() : vnni_kernels()};
    }
  }
  return {&best_popcount(), nullptr};
}

const Kernels& pack_kernels() {
  return current().load(std::memory_order_relaxed) == Mode::Portable ? portable_kernels() : best_popcount();
}

}  // namespace apq::cpu

namespace apq {

std::string cpu_kernel(std::string_view request) {
  if (!request.empty()) cpu::current().store(cpu::parse(request, "apq::_cpu_kernel: argument 'request'"));
  return cpu::mode_name(cpu::current().load());
}

std::string cpu_kernel_choice(int64_t M, int64_t x_bits, int64_t w_bits, int64_t group_size) {
  return cpu::choose_kernel(M, x_bits, w_bits, group_size).name();
}

}  // namespace apq
