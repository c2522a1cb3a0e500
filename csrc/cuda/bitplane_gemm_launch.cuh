// Host launch of one fused-kernel tile (included by bitplane_gemm_sm80_*.cu, one tile each so
// builds run in parallel), and the check that the host's TileGeometry describes the tile.
#pragma once

#include "bitplane_gemm_kernel.cuh"
#include "gemm_plan.h"
#include "kernel_launch.cuh"

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
  launch_planned<&bitplane_gemm_kernel<Tile>>(plan, stream);
}

}  // namespace apq::cuda
