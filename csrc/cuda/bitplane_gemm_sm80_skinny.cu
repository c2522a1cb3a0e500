// The fused bit-plane GEMM, skinny tile for decode shapes (swap-AB: weights on side a).
#include "bitplane_gemm_launch.cuh"

namespace apq::cuda {

void launch_bitplane_gemm_skinny(const BitplaneGemmParams& p, void* stream) {
  launch_bitplane_gemm_tile<SkinnyTile>(p, stream);
}

int bitplane_gemm_smem_bytes_skinny() { return SkinnyTile::kSmemBytes; }

}  // namespace apq::cuda
