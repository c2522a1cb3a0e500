// Host launch of one fused-kernel tile configuration (included by bitplane_gemm_sm80_*.cu).
#pragma once

#include "bitplane_gemm_kernel.cuh"

#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>
#include <cuda_runtime.h>

namespace apq::cuda {

template <class Tile>
void launch_bitplane_gemm_tile(const BitplaneGemmParams& p, void* stream) {
  const int64_t rows_a = Tile::kStackA / p.a.bits, rows_b = Tile::kStackB / p.b.bits;
  const int64_t grid_a = (p.a.rows + rows_a - 1) / rows_a, grid_b = (p.b.rows + rows_b - 1) / rows_b;
  TORCH_CHECK(grid_b <= 65535 && grid_a <= INT32_MAX, "apq: ", p.b.rows, " x ", p.a.rows,
              " rows exceed the launch grid of the CUDA bit-plane GEMM");
  if (grid_a == 0 || grid_b == 0) return;
  auto* kernel = &bitplane_gemm_kernel<Tile>;
  // Opt in to more than 48 KiB of shared memory once per device.
  static bool configured[64] = {};
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  if (device >= 64 || !configured[device]) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tile::kSmemBytes));
    if (device < 64) configured[device] = true;
  }
  kernel<<<dim3(static_cast<unsigned>(grid_a), static_cast<unsigned>(grid_b)), Tile::kThreads, Tile::kSmemBytes,
           static_cast<cudaStream_t>(stream)>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace apq::cuda
