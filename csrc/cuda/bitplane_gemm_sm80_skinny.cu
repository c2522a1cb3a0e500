// The fused bit-plane GEMM, skinny tile for decode shapes (swap-AB: weights on side a).
#include "bitplane_gemm_kernel.cuh"

namespace apq::cuda {

void launch_bitplane_gemm_skinny(const BitplaneGemmParams& p, void* stream) {
  using Tile = BitplaneTile<kSkinnyTile.stack_a, kSkinnyTile.stack_b, 2, 1, 6>;
  launch_bitplane_gemm_tile<Tile>(p, stream);
}

}  // namespace apq::cuda
