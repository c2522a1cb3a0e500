// Launch of the sm_90a BGMMA kernel (one instantiation). Its body exists in the sm_90a code
// only: gemm_plan.cpp's plan_launch refuses other GPUs before a launch.
#include "bgmma_gemm_kernel.cuh"
#include "gemm_plan.h"

#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>
#include <cuda_runtime.h>

namespace apq::cuda {

namespace {

// cuTensorMapEncodeTiled from the driver the runtime already loaded: no -lcuda at link time.
TensorMapEncoder driver_tensor_map_encoder() {
  static const TensorMapEncoder encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    C10_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found));
    TORCH_CHECK(found == cudaDriverEntryPointSuccess && fn != nullptr,
                "apq: the CUDA driver has no cuTensorMapEncodeTiled (needed by the sm_90a BGMMA kernel)");
    return reinterpret_cast<TensorMapEncoder>(fn);
  }();
  return encode;
}

}  // namespace

void launch_bgmma(const LaunchPlan& plan, void* stream) {
  if (plan.empty()) return;
  CUtensorMap map_a, map_b;
  const CUresult status = encode_bgmma_maps(driver_tensor_map_encoder(), plan.params, map_a, map_b);
  TORCH_CHECK(status == CUDA_SUCCESS, "apq: cuTensorMapEncodeTiled failed (", static_cast<int>(status),
              ") for the BGMMA kernel's operands");
  auto* kernel = &bgmma_gemm_kernel<BgmmaTile>;
  static bool configured[64] = {};  // opted in to > 48 KiB of shared memory, per device
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  if (device >= 64 || !configured[device]) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, BgmmaTile::kSmemBytes));
    if (device < 64) configured[device] = true;
  }
  kernel<<<dim3(plan.grid[0], plan.grid[1]), plan.threads, plan.smem_bytes, static_cast<cudaStream_t>(stream)>>>(
      map_a, map_b, plan.params);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace apq::cuda
