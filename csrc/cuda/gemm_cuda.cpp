// CUDA gemm / qmatmul / linear: argument checks, the kernel mapping and the launch of the
// fused bit-plane GEMM (or, with APQ_GEMM_PATH=baseline, the CUTLASS baseline).
#include "../checks.h"
#include "../ops.h"
#include "bitplane_gemm.h"
#include "kernel_map.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraphsUtils.cuh>
#include <c10/cuda/CUDAGuard.h>

#include <cstdlib>
#include <limits>
#include <string>

namespace apq {
namespace {

using cuda::BitplaneGemmParams;
using cuda::KernelChoice;
using cuda::PlaneOperand;

// mma.sync b1 AND-popc exists on sm_80 ... sm_90; this build ships sm_80 and sm_90a code.
const cudaDeviceProp& checked_device(const char* op, const Tensor& t) {
  const cudaDeviceProp* prop = at::cuda::getDeviceProperties(t.device().index());
  TORCH_CHECK_NOT_IMPLEMENTED(prop->major == 8 || (prop->major == 9 && prop->minor == 0), op,
                              ": the CUDA bit-plane GEMM needs the b1 AND-popc tensor cores of compute "
                              "capability 8.x or 9.0; this GPU is ", prop->major, ".", prop->minor,
                              ". Move the operands to the CPU (.cpu())");
  return *prop;
}

bool use_baseline() {
  const char* v = std::getenv("APQ_GEMM_PATH");
  if (v == nullptr || std::string(v).empty() || std::string(v) == "fused") return false;
  TORCH_CHECK(std::string(v) == "baseline", "APQ_GEMM_PATH must be 'fused' or 'baseline', got '", v, "'");
  return true;
}

// p describes x (side a) times w (side b) with out[m * N + n]; runs it on the current stream.
void run(const char* op, BitplaneGemmParams p, const Tensor& like) {
  if (p.a.rows == 0 || p.b.rows == 0) return;
  const cudaDeviceProp& device = checked_device(op, like);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  if (use_baseline()) {
    const Tensor workspace = at::empty({cuda::baseline_workspace_elems(p)}, like.options().dtype(at::kInt));
    const bool windows = !cuda::KWindows::of(p).single();
    const Tensor accumulator = at::empty({windows ? p.a.rows * p.b.rows : 0}, like.options().dtype(at::kFloat));
    cuda::launch_baseline_gemm(p, workspace.data_ptr<int32_t>(), accumulator.data_ptr<float>(), stream);
    return;
  }
  const cuda::GemmShapeKey key{device.major * 10 + device.minor, p.a.rows, p.b.rows, p.K, p.a.bits, p.b.bits,
                               p.G > 1};
  // sm_86 / sm_89 give a block 99 KiB of shared memory: the large tile does not fit there.
  auto fits = [&](cuda::TileConfig t) {
    return static_cast<size_t>(cuda::bitplane_gemm_smem_bytes(t)) <= device.sharedMemPerBlockOptin;
  };
  auto oriented = [p](KernelChoice c) {
    BitplaneGemmParams q = p;
    if (c.swap_ab) {
      std::swap(q.a, q.b);
      std::swap(q.out_stride_a, q.out_stride_b);
      q.bias_on_a = true;
    }
    return q;
  };
  auto time_candidate = [&](KernelChoice c) {
    if (!fits(c.tile)) return std::numeric_limits<double>::infinity();
    const BitplaneGemmParams q = oriented(c);
    at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
    cuda::launch_bitplane_gemm(c.tile, q, stream);  // warm-up
    start.record();
    constexpr int kReps = 5;
    for (int i = 0; i < kReps; ++i) cuda::launch_bitplane_gemm(c.tile, q, stream);
    stop.record();
    stop.synchronize();
    return static_cast<double>(start.elapsed_time(stop)) / kReps;
  };
  const bool capturing = at::cuda::currentStreamCaptureStatus() != at::cuda::CaptureStatus::None;
  KernelChoice choice = cuda::choose_kernel(key, capturing, time_candidate);
  if (!fits(choice.tile)) choice.tile = cuda::TileConfig::Skinny;
  cuda::launch_bitplane_gemm(choice.tile, oriented(choice), stream);
}

// cp.async moves 16-byte chunks: a planes view that starts mid-chunk (a slice of a larger
// tensor) cannot be read in place.
PlaneOperand operand(const char* op, const char* name, const Tensor& planes) {
  TORCH_CHECK(reinterpret_cast<uintptr_t>(planes.data_ptr()) % 16 == 0, op, ": argument '", name,
              "' must start on a 16-byte boundary (it is a view at an odd offset); pass ", name, ".clone()");
  PlaneOperand o;
  o.planes = reinterpret_cast<const uint32_t*>(planes.data_ptr<int32_t>());
  o.bits = static_cast<int>(planes.size(0));
  o.rows = planes.size(1);
  return o;
}

// x (side a) times w (side b) into out[m * N + n]; metadata and epilogue are the caller's.
BitplaneGemmParams plain_params(const char* op, const Tensor& x_planes, const Tensor& w_planes, int64_t K,
                                Tensor& out) {
  BitplaneGemmParams p;
  p.a = operand(op, "x_planes", x_planes);
  p.b = operand(op, "w_planes", w_planes);
  p.words = x_planes.size(2);
  p.K = K;
  p.out = out.data_ptr();
  p.out_stride_a = w_planes.size(1);
  p.out_stride_b = 1;
  return p;
}

cuda::ElemType elem_type_of(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return cuda::ElemType::Float16;
    case at::kBFloat16: return cuda::ElemType::BFloat16;
    case at::kInt: return cuda::ElemType::Int32;
    default: return cuda::ElemType::Float32;
  }
}

}  // namespace

namespace cuda {
void launch_bitplane_gemm(TileConfig c, const BitplaneGemmParams& p, void* stream) {
  if (c == TileConfig::Large) {
    launch_bitplane_gemm_large(p, stream);
  } else {
    launch_bitplane_gemm_skinny(p, stream);
  }
}

int bitplane_gemm_smem_bytes(TileConfig c) {
  return c == TileConfig::Large ? bitplane_gemm_smem_bytes_large() : bitplane_gemm_smem_bytes_skinny();
}
}  // namespace cuda

Tensor gemm_cuda(const Tensor& x_planes, const Tensor& w_planes, int64_t K) {
  constexpr const char* op = "apq::gemm";
  check_gemm_args(op, x_planes, w_planes, K);
  const c10::cuda::CUDAGuard guard(x_planes.device());
  const int64_t M = x_planes.size(1), N = w_planes.size(1);
  Tensor out = at::empty({M, N}, x_planes.options());
  BitplaneGemmParams p = plain_params(op, x_planes, w_planes, K, out);
  p.exact = true;
  p.out_type = cuda::ElemType::Int32;
  run(op, p, out);
  return out;
}

namespace {

Tensor qmatmul_impl(const char* op, const Tensor& x_planes, const Tensor& x_rowsum, const Tensor& x_scale,
                    const Tensor& x_offset, const Tensor& w_planes, const Tensor& w_rowsum,
                    const Tensor& w_scale, const Tensor& w_offset, int64_t K, int64_t group_size,
                    const std::optional<Tensor>& bias, at::ScalarType out_dtype) {
  check_qmatmul_args(op, x_planes, x_rowsum, x_scale, x_offset, w_planes, w_rowsum, w_scale, w_offset, K,
                     group_size, bias, out_dtype);
  const c10::cuda::CUDAGuard guard(x_planes.device());
  const int64_t M = x_planes.size(1), N = w_planes.size(1), G = num_groups(K, group_size);
  Tensor out = at::empty({M, N}, x_planes.options().dtype(out_dtype));
  BitplaneGemmParams p = plain_params(op, x_planes, w_planes, K, out);
  p.a.rowsum = x_rowsum.data_ptr<int32_t>();
  p.a.scale = x_scale.data_ptr<float>();
  p.a.offset = x_offset.data_ptr<float>();
  p.a.meta_row_stride = 1;  // per token
  p.a.meta_group_stride = 0;
  p.b.rowsum = w_rowsum.data_ptr<int32_t>();
  p.b.scale = w_scale.data_ptr<float>();
  p.b.offset = w_offset.data_ptr<float>();
  p.b.meta_row_stride = G;  // per output channel and K-group
  p.b.meta_group_stride = 1;
  p.group_size = group_size;
  p.G = G;
  p.out_type = elem_type_of(out_dtype);
  Tensor bias_values;  // keeps a converted bias alive through the launch
  if (bias.has_value()) {
    const at::ScalarType t = bias->scalar_type();
    // fp32/fp16/bf16 are read as they are; float64 is converted (the kernel has no double load)
    bias_values = (t == at::kFloat || t == at::kHalf || t == at::kBFloat16) ? bias->contiguous()
                                                                            : bias->to(at::kFloat).contiguous();
    p.bias = bias_values.data_ptr();
    p.bias_type = elem_type_of(bias_values.scalar_type());
  }
  run(op, p, out);
  return out;
}

}  // namespace

Tensor qmatmul_cuda(const Tensor& x_planes, const Tensor& x_rowsum, const Tensor& x_scale, const Tensor& x_offset,
                    const Tensor& w_planes, const Tensor& w_rowsum, const Tensor& w_scale, const Tensor& w_offset,
                    int64_t K, int64_t group_size, const std::optional<Tensor>& bias, at::ScalarType out_dtype) {
  return qmatmul_impl("apq::qmatmul", x_planes, x_rowsum, x_scale, x_offset, w_planes, w_rowsum, w_scale,
                      w_offset, K, group_size, bias, out_dtype);
}

// Two launches: quantize_pack (one pass over x, with the optional Hadamard transform) and the fused GEMM.
Tensor linear_cuda(const Tensor& x, const Tensor& w_planes, const Tensor& w_rowsum, const Tensor& w_scale,
                   const Tensor& w_offset, int64_t K, int64_t group_size, int64_t a_bits,
                   std::string_view a_format, const std::optional<Tensor>& bias,
                   const std::optional<Tensor>& hadamard) {
  constexpr const char* op = "apq::linear";
  check_linear_args(op, x, w_planes, K, group_size, a_bits, a_format, hadamard);
  const c10::cuda::CUDAGuard guard(x.device());
  const auto [x_planes, x_rowsum, x_scale, x_offset] =
      quantize_pack_cuda(x.reshape({-1, K}).contiguous(), a_bits, a_format, group_size, hadamard);
  const Tensor y = qmatmul_impl(op, x_planes, x_rowsum, x_scale, x_offset, w_planes, w_rowsum, w_scale, w_offset,
                                K, group_size, bias, x.scalar_type());
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = w_planes.size(1);
  return y.view(out_shape);
}

}  // namespace apq
