// Host launch of a planned GEMM kernel that takes BitplaneGemmParams (the register-tile
// kernels: bitplane_gemm_kernel.cuh, imma_gemm_kernel.cuh) with gemm_plan.cpp's LaunchPlan.
#pragma once

#include "gemm_plan.h"

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

namespace apq::cuda {

template <auto Kernel>
void launch_planned(const LaunchPlan& plan, void* stream) {
  if (plan.empty()) return;
  // Opt in to more than 48 KiB of shared memory; the attribute grows with the largest call.
  static int configured[64] = {};
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  const int smem = static_cast<int>(plan.smem_bytes);
  if (device >= 64 || configured[device] < smem) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    if (device < 64) configured[device] = smem;
  }
  Kernel<<<dim3(plan.grid[0], plan.grid[1], plan.grid[2]), plan.threads, smem, static_cast<cudaStream_t>(stream)>>>(
      plan.params);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace apq::cuda
