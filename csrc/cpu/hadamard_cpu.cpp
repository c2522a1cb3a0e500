// CPU apq::hadamard: the row transform of hadamard_kernels.h over the rows of x, in fp32,
// parallel over rows; the instantiation follows the selected CPU kernel.
#include "../checks.h"
#include "../format.h"
#include "../ops.h"
#include "hadamard_kernels.h"
#include "kernel_select.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <string_view>
#include <vector>

namespace apq {
namespace cpu {

void hadamard_row_portable(float* row, int64_t n, const float* mix, int64_t m, float scale, float* scratch) {
  const int64_t P = n / m;
  for (int64_t b = 0; b < m; ++b) hadamard_butterflies(row + b * P, P, 1);
  hadamard_mix(row, n, mix, m, scale, scratch);
}

HadamardRowFn active_hadamard_row() {
  if (std::string_view(pack_kernels().name) == "avx512") {
    if (HadamardRowFn f = hadamard_row_avx512()) return f;
  }
  return &hadamard_row_portable;
}

}  // namespace cpu

Tensor hadamard_cpu(const Tensor& x, const Tensor& mix) {
  constexpr const char* op = "apq::hadamard";
  const int64_t n = check_hadamard_args(x, mix, op);
  Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (x.numel() == 0) return out;
  const Tensor src = x.contiguous();
  const int64_t rows = x.numel() / n, m = mix.size(0);
  const float scale = hadamard_scale(n / m);
  const cpu::HadamardRowFn transform = cpu::active_hadamard_row();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "hadamard_cpu", [&] {
    const scalar_t* in = src.data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    const float* mx = mix.data_ptr<float>();
    at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / n), [&](int64_t r0, int64_t r1) {
      std::vector<float> row(static_cast<size_t>(n)), scratch(static_cast<size_t>(n));
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t k = 0; k < n; ++k) row[k] = static_cast<float>(in[r * n + k]);
        transform(row.data(), n, mx, m, scale, scratch.data());
        for (int64_t k = 0; k < n; ++k) dst[r * n + k] = static_cast<scalar_t>(row[k]);
      }
    });
  });
  return out;
}

}  // namespace apq
