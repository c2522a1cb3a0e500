// The fused bit-plane GEMM, skinny tile for decode shapes (swap-AB: weights on side a).
#include "bitplane_gemm_launch.cuh"

namespace apq::cuda {

static_assert(SkinnyTile::kSmemBytes == kSkinnyGeometry.smem_bytes && SkinnyTile::kThreads == kSkinnyGeometry.threads);

void launch_skinny(const LaunchPlan& plan, void* stream) { launch_bitplane_gemm_tile<SkinnyTile>(plan, stream); }

}  // namespace apq::cuda
