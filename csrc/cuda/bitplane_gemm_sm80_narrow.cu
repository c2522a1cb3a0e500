// The register-recovery bit-plane GEMM, narrow tile for decode and split-K: 4 warps of
// 64 x 32 stacked rows.
#include "bitplane_gemm_launch.cuh"

namespace apq::cuda {

static_assert(geometry_matches<NarrowTile>(kNarrowGeometry));

void launch_narrow(const LaunchPlan& plan, void* stream) { launch_bitplane_gemm_tile<NarrowTile>(plan, stream); }

}  // namespace apq::cuda
