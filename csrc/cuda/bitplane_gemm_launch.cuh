// Host launch of one fused-kernel tile configuration (included by bitplane_gemm_sm80_*.cu).
#pragma once

#include "bitplane_gemm_kernel.cuh"
#include "gemm_plan.h"

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

namespace apq::cuda {

template <class Tile>
void launch_bitplane_gemm_tile(const LaunchPlan& plan, void* stream) {
  if (plan.empty()) return;
  auto* kernel = &bitplane_gemm_kernel<Tile>;
  // Opt in to more than 48 KiB of shared memory once per device.
  static bool configured[64] = {};
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  if (device >= 64 || !configured[device]) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tile::kSmemBytes));
    if (device < 64) configured[device] = true;
  }
  kernel<<<dim3(plan.grid[0], plan.grid[1], plan.grid[2]), plan.threads, plan.smem_bytes,
           static_cast<cudaStream_t>(stream)>>>(plan.params);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace apq::cuda
