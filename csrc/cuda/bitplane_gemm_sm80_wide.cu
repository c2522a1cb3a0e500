// The register-recovery bit-plane GEMM, wide tile: 8 warps of 64 x 64 stacked rows.
#include "bitplane_gemm_launch.cuh"

namespace apq::cuda {

static_assert(geometry_matches<WideTile>(kWideGeometry));

void launch_wide(const LaunchPlan& plan, void* stream) { launch_bitplane_gemm_tile<WideTile>(plan, stream); }

}  // namespace apq::cuda
