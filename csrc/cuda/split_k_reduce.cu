// Launch of the split-K reduction (split_k_reduce.cuh) after a split GEMM on the same stream.
#include "gemm_plan.h"
#include "split_k_reduce.cuh"

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

namespace apq::cuda {

void launch_split_k_reduce(const LaunchPlan& plan, void* stream) {
  if (plan.reduce_blocks == 0) return;
  split_k_reduce_kernel<<<plan.reduce_blocks, kReduceThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      plan.params, static_cast<int>(plan.grid[2]));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace apq::cuda
