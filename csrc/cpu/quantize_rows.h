// Per-token dynamic quantization on the CPU (format.h), written once for every layout that
// receives the codes: canonical planes (quantize_pack), the kernels' own layouts (linear).
#pragma once

#include "../checks.h"
#include "../format.h"
#include "hadamard_kernels.h"
#include "kernel_select.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <optional>
#include <type_traits>
#include <vector>

namespace apq::cpu {

// sums[g] = the sum of codes[k] over group g of `span` codes (the whole row when span == K).
inline void group_sums(const uint8_t* codes, int64_t K, int64_t span, int64_t G, int32_t* sums) {
  for (int64_t g = 0; g < G; ++g) {
    int32_t s = 0;
    for (int64_t k = g * span; k < std::min(K, (g + 1) * span); ++k) s += codes[k];
    sums[g] = s;
  }
}

// The online Hadamard rotation fused into quantization (apq::hadamard of each fp32 row before
// its statistics); none without a mix.
struct RowRotation {
  HadamardRowFn transform = nullptr;
  const float* mix = nullptr;
  int64_t m = 1;
  float scale = 1.f;

  RowRotation(const std::optional<at::Tensor>& hadamard, int64_t K) {
    if (!hadamard) return;
    transform = active_hadamard_row();
    mix = hadamard->data_ptr<float>();
    m = hadamard->size(0);
    scale = hadamard_scale(K / m);
  }
};

// Quantizes the rows of x [M, K] (contiguous, floating) in parallel, rotated first when
// `rotation` has a mix, each range scaled by `clip` (choose_params): writes scale[m],
// offset[m] and rowsum[m, :] (groups of group_size, 0: one), then calls emit(m, codes)
// with the row's K codes.
template <class Emit>
void quantize_rows(const at::Tensor& x, int64_t bits, Format fmt, int64_t group_size, const RowRotation& rotation,
                   double clip, float* scale, float* offset, int32_t* rowsum, const Emit& emit) {
  const int64_t M = x.size(0), K = x.size(1), G = num_groups(K, group_size);
  const Kernels& kernels = pack_kernels();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "quantize_rows", [&] {
    const scalar_t* xs = x.data_ptr<scalar_t>();
    at::parallel_for(0, M, 16, [&](int64_t m0, int64_t m1) {
      std::vector<float> row(static_cast<size_t>(K)), scratch(rotation.transform ? static_cast<size_t>(K) : 0);
      std::vector<uint8_t> codes(static_cast<size_t>(K));
      for (int64_t m = m0; m < m1; ++m) {
        const float* xf = reinterpret_cast<const float*>(xs + m * K);
        if (!std::is_same_v<scalar_t, float> || rotation.transform) {
          for (int64_t k = 0; k < K; ++k) row[k] = static_cast<float>(xs[m * K + k]);
          if (rotation.transform) rotation.transform(row.data(), K, rotation.mix, rotation.m, rotation.scale, scratch.data());
          xf = row.data();
        }
        const QuantParams p = choose_params(kernels.row_stats(xf, K), static_cast<int>(bits), fmt, static_cast<float>(clip));
        scale[m] = p.scale;
        offset[m] = p.offset;
        kernels.quantize_row(xf, K, p, static_cast<int>(bits), codes.data());
        group_sums(codes.data(), K, group_size == 0 ? K : group_size, G, rowsum + m * G);
        emit(m, codes.data());
      }
    });
  });
}

}  // namespace apq::cpu
