// The second launch of a split-K GEMM: one thread per output adds the splits' partials in split
// order (so the result does not depend on which block finished first) and writes the output:
// int32 partials sum to U, whose epilogue follows (one K-window); fp32 partials sum to the
// output itself (several windows, each already scaled).
#pragma once

#include "bitplane_gemm.h"
#include "epilogue.cuh"

namespace apq::cuda {

__global__ void split_k_reduce_kernel(const BitplaneGemmParams p, int splits) {
  const int64_t outputs = p.a.rows * p.b.rows;
  const int64_t at = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (at >= outputs) return;
  const int64_t ra = at / p.b.rows, rb = at % p.b.rows;
  const KWindows windows = KWindows::of(p);
  if (windows.single()) {
    int32_t U = 0;
    for (int z = 0; z < splits; ++z) U += static_cast<const int32_t*>(p.partials)[z * outputs + at];
    if (p.exact) {
      static_cast<int32_t*>(p.out)[ra * p.out_stride_a + rb * p.out_stride_b] = U;
    } else {
      epilogue::store_float(p, ra, rb, epilogue::window_term(p, ra, rb, U, 0, true, windows.group_len(0)));
    }
  } else {
    float y = 0.f;
    for (int z = 0; z < splits; ++z) y += static_cast<const float*>(p.partials)[z * outputs + at];
    epilogue::store_float(p, ra, rb, y);
  }
}

}  // namespace apq::cuda
