// The integer-MMA bit-plane GEMM with mma.sync (one instantiation), for sm_80 ... sm_90.
#include "imma_gemm_kernel.cuh"
#include "kernel_launch.cuh"

namespace apq::cuda {

void launch_imma(const LaunchPlan& plan, void* stream) { launch_planned<&imma_gemm_kernel<ImmaSync>>(plan, stream); }

}  // namespace apq::cuda
