// The fused bit-plane GEMM, large tile (one instantiation per file keeps builds parallel).
#include "bitplane_gemm_kernel.cuh"

namespace apq::cuda {

void launch_bitplane_gemm_large(const BitplaneGemmParams& p, void* stream) {
  using Tile = BitplaneTile<kLargeTile.stack_a, kLargeTile.stack_b, 2, 4, 4>;
  launch_bitplane_gemm_tile<Tile>(p, stream);
}

}  // namespace apq::cuda
