// Launch of the sm_90a BGMMA kernel (one instantiation). Its body exists in the sm_90a code
// only: other GPUs are refused here (and before, with the op's name, in gemm_cuda.cpp).
#include "bgmma_gemm_kernel.cuh"

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

void launch_bgmma_gemm(const BitplaneGemmParams& p, void* stream) {
  const BgmmaLaunch l = plan_bgmma_launch(driver_tensor_map_encoder(), p);
  TORCH_CHECK(l.status == CUDA_SUCCESS, "apq: cuTensorMapEncodeTiled failed (", static_cast<int>(l.status),
              ") for the BGMMA kernel's operands");
  TORCH_CHECK(l.grid_b <= 65535 && l.grid_a <= INT32_MAX, "apq: ", p.b.rows, " x ", p.a.rows,
              " rows exceed the launch grid of the BGMMA kernel");
  if (l.grid_a == 0 || l.grid_b == 0) return;
  auto* kernel = &bgmma_gemm_kernel<BgmmaTile>;
  static bool configured[64] = {};  // checked and opted in to > 48 KiB of shared memory, per device
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  if (device >= 64 || !configured[device]) {
    int major = 0, minor = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    TORCH_CHECK_NOT_IMPLEMENTED(major == 9 && minor == 0, "apq: the BGMMA kernel needs an sm_90 GPU (its body ",
                                "exists only in the sm_90a code); this GPU is sm_", major, minor);
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, BgmmaTile::kSmemBytes));
    if (device < 64) configured[device] = true;
  }
  kernel<<<dim3(static_cast<unsigned>(l.grid_a), static_cast<unsigned>(l.grid_b)), BgmmaTile::kThreads,
           BgmmaTile::kSmemBytes, static_cast<cudaStream_t>(stream)>>>(l.map_a, l.map_b, p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace apq::cuda
