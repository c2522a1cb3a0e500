// The fused bit-plane GEMM, large tile (one instantiation per file keeps builds parallel).
#include "bitplane_gemm_launch.cuh"

namespace apq::cuda {

void launch_bitplane_gemm_large(const BitplaneGemmParams& p, void* stream) {
  launch_bitplane_gemm_tile<LargeTile>(p, stream);
}

int bitplane_gemm_smem_bytes_large() { return LargeTile::kSmemBytes; }

}  // namespace apq::cuda
