// The integer-MMA bit-plane GEMM with wgmma (one instantiation). Its body exists in the sm_90a
// code only: gemm_plan.cpp's plan_launch refuses other GPUs before a launch.
#include "imma_gemm_kernel.cuh"
#include "kernel_launch.cuh"

namespace apq::cuda {

void launch_igmma(const LaunchPlan& plan, void* stream) {
  launch_planned<&imma_gemm_kernel<ImmaWarpgroup>>(plan, stream);
}

}  // namespace apq::cuda
