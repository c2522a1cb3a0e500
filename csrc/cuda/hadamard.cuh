// Device side of the Walsh-Hadamard row transform (the fp32 order of csrc/cpu/hadamard_kernels.h:
// butterflies h = 1, 2, ..., P/2, then the mix with separately rounded products and sums, j
// ascending, then the scale), for one block of threads holding one row in shared memory.
// __fadd_rn / __fmul_rn keep nvcc from contracting into FMAs, so CUDA, CPU and the
// reference agree to the bit.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace apq {

// Transforms buf[0, n) (n = m * P) into out[0, n); buf is overwritten. Every thread of the
// block must call it; it ends with a barrier.
__device__ inline void hadamard_smem(float* buf, float* out, int64_t n, const float* __restrict__ mix, int m,
                                     float scale) {
  const int64_t P = n / m, half = n / 2;
  for (int64_t h = 1; h < P; h *= 2) {
    for (int64_t t = threadIdx.x; t < half; t += blockDim.x) {
      // pair t: block t / (P/2), butterfly (r / h) * 2h + r % h within it
      const int64_t b = t / (P / 2), r = t % (P / 2);
      const int64_t j = b * P + (r / h) * 2 * h + r % h;
      const float a = buf[j], c = buf[j + h];
      buf[j] = __fadd_rn(a, c);
      buf[j + h] = __fsub_rn(a, c);
    }
    __syncthreads();
  }
  for (int64_t e = threadIdx.x; e < n; e += blockDim.x) {
    const int64_t i = e / P, c = e % P;
    float acc = 0.f;
    for (int j = 0; j < m; ++j) acc = __fadd_rn(acc, __fmul_rn(mix[i * m + j], buf[j * P + c]));
    out[e] = __fmul_rn(acc, scale);
  }
  __syncthreads();
}

// Lets `kernel` use `bytes` of dynamic shared memory (raising its limit above 48 KiB where
// needed) for a transform of n values, or fails naming the op and the size.
void reserve_hadamard_smem(const void* kernel, size_t bytes, int64_t n, const char* op);

}  // namespace apq
