// The integer-MMA bit-plane GEMM (one instantiation), for sm_80 ... sm_90.
#include "imma_gemm_kernel.cuh"
#include "kernel_launch.cuh"

namespace apq::cuda {

void launch_imma(const LaunchPlan& plan, void* stream) { launch_planned<&imma_gemm_kernel>(plan, stream); }

}  // namespace apq::cuda
