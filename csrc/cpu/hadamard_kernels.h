// The Walsh-Hadamard row transform of apq::hadamard and of quantize_pack's fused rotation, in
// the fixed fp32 order that every device and apq_torch/reference.py follow:
//   1. butterflies x[j], x[j + h] <- x[j] + x[j + h], x[j] - x[j + h] for h = 1, 2, ..., P/2
//      on each of the m blocks of P values (n = m * P);
//   2. out[i * P + c] = sum_j mix[i, j] * block_j[c], j ascending, products and sums
//      rounded separately (no FMA: the build uses -ffp-contract=off);
//   3. out *= scale, scale = fp32(1 / sqrt(P)).
// Pointer-only, like cpu_kernels.h, so the AVX-512 instantiation compiles on its own.
#pragma once

#include <cstdint>

namespace apq::cpu {

// Transforms one fp32 row of n = m * P values in place; scratch holds n floats.
using HadamardRowFn = void (*)(float* row, int64_t n, const float* mix, int64_t m, float scale,
                               float* scratch);

void hadamard_row_portable(float* row, int64_t n, const float* mix, int64_t m, float scale,
                           float* scratch);
// nullptr when this build or this CPU has no AVX-512F.
HadamardRowFn hadamard_row_avx512();
// The instantiation matching the selected popcount kernels (APQ_CPU_KERNEL / apq::_cpu_kernel),
// so that tests run both on every backend.
HadamardRowFn active_hadamard_row();

// Steps 2 and 3 (shared by both instantiations; the compiler vectorizes the c loop).
inline void hadamard_mix(float* row, int64_t n, const float* mix, int64_t m, float scale, float* scratch) {
  const int64_t P = n / m;
  if (m == 1 && mix[0] == 1.f) {  // 0 + 1 * v == v exactly: only the scale is left
    for (int64_t c = 0; c < P; ++c) row[c] *= scale;
    return;
  }
  for (int64_t i = 0; i < m; ++i) {
    float* out = scratch + i * P;
    for (int64_t c = 0; c < P; ++c) out[c] = 0.f;
    for (int64_t j = 0; j < m; ++j) {
      const float a = mix[i * m + j];
      const float* in = row + j * P;
      for (int64_t c = 0; c < P; ++c) out[c] = out[c] + a * in[c];
    }
  }
  for (int64_t k = 0; k < n; ++k) row[k] = scratch[k] * scale;
}

// Butterflies of one block of P values for the stages h = h0, 2 h0, ..., P/2.
inline void hadamard_butterflies(float* block, int64_t P, int64_t h0) {
  for (int64_t h = h0; h < P; h *= 2) {
    for (int64_t j0 = 0; j0 < P; j0 += 2 * h) {
      for (int64_t j = j0; j < j0 + h; ++j) {
        const float a = block[j], b = block[j + h];
        block[j] = a + b;
        block[j + h] = a - b;
      }
    }
  }
}

}  // namespace apq::cpu
