// CUDA pack, unpack and quantize_pack. One block per row: warps walk the row 32 codes at
// a time, ballot one word per plane, and add their code sums into per-group counters in
// shared memory. quantize_pack first reduces the row's min/max in the same block (after
// rotating the row in shared memory when a Hadamard mix is given).
#include "../checks.h"
#include "../format.h"
#include "../ops.h"
#include "hadamard.cuh"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraphsUtils.cuh>
#include <c10/cuda/CUDAGuard.h>

namespace apq {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// Packs one row: code_of(k) gives the unsigned code of column k < K. Writes every word of
// the row in each plane (zero past K) and the row's per-group sums (needs G ints of smem).
template <typename CodeOf>
__device__ void pack_row(CodeOf code_of, int64_t r, int64_t R, int64_t K, int64_t words, int bits,
                         int64_t group_size, int64_t G, uint32_t* planes, int32_t* rowsum,
                         int32_t* group_sums) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int64_t g = threadIdx.x; g < G; g += blockDim.x) group_sums[g] = 0;
  __syncthreads();
  for (int64_t w = warp; w < words; w += kWarps) {
    const int64_t k = w * 32 + lane;
    const uint32_t u = k < K ? code_of(k) : 0u;
    for (int i = 0; i < bits; ++i) {
      const uint32_t word = __ballot_sync(0xffffffffu, (u >> i) & 1u);
      if (lane == i) planes[(static_cast<int64_t>(i) * R + r) * words + w] = word;
    }
    const uint32_t sum = __reduce_add_sync(0xffffffffu, u);
    // A word never straddles two groups: group_size is a multiple of 64.
    if (lane == 0 && w * 32 < K) atomicAdd(&group_sums[group_size == 0 ? 0 : w * 32 / group_size], static_cast<int32_t>(sum));
  }
  __syncthreads();
  for (int64_t g = threadIdx.x; g < G; g += blockDim.x) rowsum[r * G + g] = group_sums[g];
}

template <typename code_t>
__global__ void pack_kernel(const code_t* __restrict__ codes, int64_t R, int64_t K, int64_t words,
                            int bits, int64_t group_size, int64_t G, uint32_t* __restrict__ planes,
                            int32_t* __restrict__ rowsum) {
  extern __shared__ int32_t group_sums[];
  const int64_t r = blockIdx.x;
  const code_t* row = codes + r * K;
  pack_row([&](int64_t k) { return static_cast<uint32_t>(row[k]); }, r, R, K, words, bits,
           group_size, G, planes, rowsum, group_sums);
}

__device__ RowStats warp_merge(RowStats s) {
  for (int delta = 16; delta > 0; delta /= 2) {
    RowStats o = RowStats::empty();
    o.lo = __shfl_xor_sync(0xffffffffu, s.lo, delta);
    o.hi = __shfl_xor_sync(0xffffffffu, s.hi, delta);
    o.finite = __shfl_xor_sync(0xffffffffu, s.finite, delta);
    s.merge(o);
  }
  return s;
}

// With a Hadamard mix (nullptr: none), the row is first staged in shared memory after the
// group sums and rotated there (hadamard.cuh); codes are then read from the rotated copy.
template <typename scalar_t>
__global__ void quantize_pack_kernel(const scalar_t* __restrict__ x, int64_t M, int64_t K,
                                     int64_t words, int bits, Format format, int64_t group_size,
                                     int64_t G, uint32_t* __restrict__ planes,
                                     int32_t* __restrict__ rowsum, float* __restrict__ scale,
                                     float* __restrict__ offset, const float* __restrict__ mix, int mix_size,
                                     float hadamard_scale, float clip) {
  extern __shared__ int32_t group_sums[];
  __shared__ RowStats warp_stats[kWarps];
  __shared__ QuantParams params;
  const int64_t m = blockIdx.x;
  const scalar_t* row = x + m * K;
  float* rotated = nullptr;
  if (mix != nullptr) {
    float* buf = reinterpret_cast<float*>(group_sums + G);
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) buf[k] = static_cast<float>(row[k]);
    __syncthreads();
    rotated = buf + K;
    hadamard_smem(buf, rotated, K, mix, mix_size, hadamard_scale);
  }
  auto value = [&](int64_t k) { return rotated != nullptr ? rotated[k] : static_cast<float>(row[k]); };

  RowStats s = RowStats::empty();
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) s.add(value(k));
  s = warp_merge(s);
  if (threadIdx.x % 32 == 0) warp_stats[threadIdx.x / 32] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    RowStats all = warp_stats[0];
    for (int i = 1; i < kWarps; ++i) all.merge(warp_stats[i]);
    params = choose_params(all, bits, format, clip);
    scale[m] = params.scale;
    offset[m] = params.offset;
  }
  __syncthreads();
  const QuantParams p = params;
  pack_row([&](int64_t k) { return quantize_value(value(k), p, bits); }, m, M, K,
           words, bits, group_size, G, planes, rowsum, group_sums);
}

__global__ void unpack_kernel(const uint32_t* __restrict__ planes, int64_t R, int64_t K,
                              int64_t words, int bits, int32_t* __restrict__ codes) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= R * K) return;
  const int64_t r = idx / K, k = idx % K;
  int32_t u = 0;
  for (int i = 0; i < bits; ++i) {
    u |= static_cast<int32_t>((planes[(static_cast<int64_t>(i) * R + r) * words + k / 32] >> (k % 32)) & 1u) << i;
  }
  codes[idx] = u;
}

// Shared memory for the per-group sums of one row.
size_t group_smem(int64_t G, const char* op) {
  constexpr int64_t kMaxGroups = 48 * 1024 / sizeof(int32_t);
  TORCH_CHECK(G <= kMaxGroups, op, ": ", G, " groups per row exceed the ", kMaxGroups,
              " the CUDA kernel keeps in shared memory; use a larger 'group_size'");
  return static_cast<size_t>(G) * sizeof(int32_t);
}

}  // namespace

std::tuple<Tensor, Tensor> pack_cuda(const Tensor& codes, int64_t bits, int64_t group_size) {
  constexpr const char* op = "apq::pack";
  check_pack_args(codes, bits, group_size);
  const int64_t R = codes.size(0), K = codes.size(1);
  const c10::cuda::CUDAGuard guard(codes.device());
  // pack runs once per weight, offline: validating the range is worth a host sync, but
  // not inside a CUDA graph capture, where a sync is illegal.
  if (at::cuda::currentStreamCaptureStatus() == at::cuda::CaptureStatus::None) check_codes_range(codes, bits);
  const Tensor src = codes.contiguous();
  const int64_t words = padded_words(K), G = num_groups(K, group_size);
  Tensor planes = at::empty({bits, R, words}, codes.options().dtype(at::kInt));
  Tensor rowsum = at::empty({R, G}, codes.options().dtype(at::kInt));
  if (R == 0) return {planes, rowsum};
  AT_DISPATCH_INTEGRAL_TYPES(src.scalar_type(), "pack_cuda", [&] {
    pack_kernel<scalar_t><<<R, kThreads, group_smem(G, op), at::cuda::getCurrentCUDAStream()>>>(
        src.data_ptr<scalar_t>(), R, K, words, static_cast<int>(bits), group_size, G,
        reinterpret_cast<uint32_t*>(planes.data_ptr<int32_t>()), rowsum.data_ptr<int32_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {planes, rowsum};
}

Tensor unpack_cuda(const Tensor& planes, int64_t K) {
  constexpr const char* op = "apq::unpack";
  check_K(K, op);
  check_planes(planes, K, op, "planes");
  const c10::cuda::CUDAGuard guard(planes.device());
  const int64_t R = planes.size(1);
  Tensor codes = at::empty({R, K}, planes.options());
  if (R == 0) return codes;
  const int64_t total = R * K;
  const int threads = 256;
  unpack_kernel<<<(total + threads - 1) / threads, threads, 0, at::cuda::getCurrentCUDAStream()>>>(
      reinterpret_cast<const uint32_t*>(planes.data_ptr<int32_t>()), R, K, planes.size(2),
      static_cast<int>(planes.size(0)), codes.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return codes;
}

std::tuple<Tensor, Tensor, Tensor, Tensor> quantize_pack_cuda(
    const Tensor& x, int64_t bits, std::string_view format, int64_t group_size,
    const std::optional<Tensor>& hadamard, double clip) {
  constexpr const char* op = "apq::quantize_pack";
  const Format fmt = check_quantize_pack_args(x, bits, format, group_size, hadamard, clip);
  const int64_t M = x.size(0), K = x.size(1);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t words = padded_words(K), G = num_groups(K, group_size);
  const auto opts = x.options();
  Tensor planes = at::empty({bits, M, words}, opts.dtype(at::kInt));
  Tensor rowsum = at::empty({M, G}, opts.dtype(at::kInt));
  Tensor scale = at::empty({M}, opts.dtype(at::kFloat));
  Tensor offset = at::empty({M}, opts.dtype(at::kFloat));
  if (M == 0) return {planes, rowsum, scale, offset};
  const int mix_size = hadamard ? static_cast<int>(hadamard->size(0)) : 1;
  // the rotated row and its staging copy follow the group sums in shared memory
  const size_t bytes = group_smem(G, op) + (hadamard ? 2 * static_cast<size_t>(K) * sizeof(float) : 0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "quantize_pack_cuda", [&] {
    if (hadamard) reserve_hadamard_smem(reinterpret_cast<const void*>(&quantize_pack_kernel<scalar_t>), bytes, K, op);
    quantize_pack_kernel<scalar_t><<<M, kThreads, bytes, at::cuda::getCurrentCUDAStream()>>>(
        x.data_ptr<scalar_t>(), M, K, words, static_cast<int>(bits), fmt, group_size, G,
        reinterpret_cast<uint32_t*>(planes.data_ptr<int32_t>()), rowsum.data_ptr<int32_t>(),
        scale.data_ptr<float>(), offset.data_ptr<float>(), hadamard ? hadamard->data_ptr<float>() : nullptr,
        mix_size, hadamard_scale(K / mix_size), static_cast<float>(clip));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {planes, rowsum, scale, offset};
}

}  // namespace apq
