// CUDA apq::hadamard: one block per row; the row is staged in shared memory as fp32 and
// transformed by hadamard_smem (hadamard.cuh).
#include "../checks.h"
#include "../format.h"
#include "../ops.h"
#include "hadamard.cuh"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

namespace apq {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t>
__global__ void hadamard_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int64_t n,
                                const float* __restrict__ mix, int m, float scale) {
  extern __shared__ float smem[];
  float* buf = smem;
  float* out = smem + n;
  const int64_t row = blockIdx.x;
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) buf[k] = static_cast<float>(x[row * n + k]);
  __syncthreads();
  hadamard_smem(buf, out, n, mix, m, scale);
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) y[row * n + k] = static_cast<scalar_t>(out[k]);
}

}  // namespace

void reserve_hadamard_smem(const void* kernel, size_t bytes, int64_t n, const char* op) {
  int device = 0, optin = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  TORCH_CHECK(bytes <= static_cast<size_t>(optin), op, ": a Hadamard transform of ", n,
              " values needs ", bytes, " bytes of shared memory per row; this GPU has ", optin);
  if (bytes > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  }
}

Tensor hadamard_cuda(const Tensor& x, const Tensor& mix) {
  constexpr const char* op = "apq::hadamard";
  const int64_t n = check_hadamard_args(x, mix, op);
  const c10::cuda::CUDAGuard guard(x.device());
  Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
  const int64_t rows = x.numel() / n;
  if (rows == 0) return out;
  const Tensor src = x.contiguous();
  const int m = static_cast<int>(mix.size(0));
  const size_t bytes = 2 * static_cast<size_t>(n) * sizeof(float);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "hadamard_cuda", [&] {
    reserve_hadamard_smem(reinterpret_cast<const void*>(&hadamard_kernel<scalar_t>), bytes, n, op);
    hadamard_kernel<scalar_t><<<rows, kThreads, bytes, at::cuda::getCurrentCUDAStream()>>>(
        src.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), n, mix.data_ptr<float>(), m, hadamard_scale(n / m));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace apq
