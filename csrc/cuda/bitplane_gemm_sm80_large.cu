// The fused bit-plane GEMM, large tile (one instantiation per file keeps builds parallel).
#include "bitplane_gemm_launch.cuh"

namespace apq::cuda {

static_assert(LargeTile::kSmemBytes == kLargeGeometry.smem_bytes && LargeTile::kThreads == kLargeGeometry.threads);

void launch_large(const LaunchPlan& plan, void* stream) { launch_bitplane_gemm_tile<LargeTile>(plan, stream); }

}  // namespace apq::cuda
