// The fused bit-plane GEMM, skinny tile for decode shapes (swap-AB: weights on side a).
#include "bitplane_gemm_launch.cuh"

namespace apq::cuda {

void launch_bitplane_gemm_skinny(const BitplaneGemmParams& p, void* stream) {
  launch_bitplane_gemm_tile<SkinnyTile>(p, stream);
}

}  // namespace apq::cuda
