// Host launch of one fused-kernel tile (included by bitplane_gemm_sm80_*.cu, one tile each so
// builds run in parallel), and the check that the host's TileGeometry describes the tile.
#pragma once

#include "bitplane_gemm_kernel.cuh"
#include "gemm_plan.h"

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

namespace apq::cuda {

template <class Tile>
constexpr bool geometry_matches(const TileGeometry& g) {
  return g.slots_a == Tile::kSlotsA && g.lanes_a == 8 && g.row_groups_a == Tile::kWarpsA &&
         g.slots_b == Tile::kSlotsB && g.lanes_b == 4 && g.row_groups_b == Tile::kWarpsB &&
         g.threads == Tile::kThreads && g.pipeline_bytes == Tile::kPipelineBytes &&
         g.results_in_registers == Tile::kResultsInRegisters;
}

template <class Tile>
void launch_bitplane_gemm_tile(const LaunchPlan& plan, void* stream) {
  if (plan.empty()) return;
  auto* kernel = &bitplane_gemm_kernel<Tile>;
  // Opt in to more than 48 KiB of shared memory; the attribute grows with the largest call.
  static int configured[64] = {};
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  const int smem = static_cast<int>(plan.smem_bytes);
  if (device >= 64 || configured[device] < smem) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    if (device < 64) configured[device] = smem;
  }
  kernel<<<dim3(plan.grid[0], plan.grid[1], plan.grid[2]), plan.threads, smem, static_cast<cudaStream_t>(stream)>>>(
      plan.params);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace apq::cuda
