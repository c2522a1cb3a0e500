// CUDA gemm / qmatmul / linear: argument checks, the kernel mapping and the launch of the
// fused bit-plane GEMM (or, with APQ_GEMM_PATH=baseline, the CUTLASS baseline).
#include "../checks.h"
#include "../ops.h"
#include "kernel_map.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraphsUtils.cuh>
#include <c10/cuda/CUDAGuard.h>

#include <cstdlib>
#include <string>

namespace apq {
namespace {

using cuda::GemmProblem;
using cuda::KernelVariant;

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

void run_baseline(const char* op, const GemmProblem& problem, const cuda::DeviceLimits& device, const Tensor& like,
                  cudaStream_t stream) {
  const std::string why = cuda::baseline_refusal(problem, device);
  TORCH_CHECK(why.empty(), op, ": ", why);
  const cuda::BitplaneGemmParams p = cuda::make_params(problem, /*swap_ab=*/false);
  const Tensor workspace = at::empty({cuda::baseline_workspace_elems(p)}, like.options().dtype(at::kInt));
  const bool windows = !cuda::KWindows::of(p).single();
  const Tensor accumulator = at::empty({windows ? p.a.rows * p.b.rows : 0}, like.options().dtype(at::kFloat));
  cuda::launch_baseline_gemm(p, workspace.data_ptr<int32_t>(), accumulator.data_ptr<float>(), stream);
}

// Allocates the split-K workspace (the caching allocator orders its reuse on `stream`), launches
// the GEMM and, for split-K, the reduction of its partials.
void launch(cuda::LaunchPlan plan, const Tensor& like, cudaStream_t stream) {
  Tensor workspace;
  if (plan.workspace_bytes > 0) {
    workspace = at::empty({plan.workspace_bytes}, like.options().dtype(at::kByte));
    plan.params.partials = workspace.data_ptr();
  }
  switch (plan.kernel) {
    case cuda::KernelId::Wide: cuda::launch_wide(plan, stream); break;
    case cuda::KernelId::Narrow: cuda::launch_narrow(plan, stream); break;
    case cuda::KernelId::Bgmma: cuda::launch_bgmma(plan, stream); break;
    case cuda::KernelId::Imma: cuda::launch_imma(plan, stream); break;
    case cuda::KernelId::Igmma: cuda::launch_igmma(plan, stream); break;
  }
  cuda::launch_split_k_reduce(plan, stream);
}

// Runs the problem on the current stream with the variant the kernel map chooses.
void run(const char* op, const GemmProblem& problem, const Tensor& like) {
  if (problem.M == 0 || problem.N == 0) return;
  const cuda::DeviceLimits device = cuda::device_limits(checked_device(op, like));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  if (use_baseline()) return run_baseline(op, problem, device, like, stream);
  auto plan = [&](const KernelVariant& v) { return cuda::plan_launch(problem, v, device); };
  auto refusal = [&](const KernelVariant& v) { return plan(v).refusal; };
  auto time_candidate = [&](const KernelVariant& v) {
    const cuda::LaunchPlan candidate = plan(v);
    at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
    launch(candidate, like, stream);  // warm-up
    start.record();
    constexpr int kReps = 5;
    for (int i = 0; i < kReps; ++i) launch(candidate, like, stream);
    stop.record();
    stop.synchronize();
    return static_cast<double>(start.elapsed_time(stop)) / kReps;
  };
  const cuda::GemmShapeKey key{device.arch, problem.M, problem.N, problem.K, problem.x_bits, problem.w_bits,
                               problem.group_size > 0 && problem.group_size < problem.K};
  const bool capturing = at::cuda::currentStreamCaptureStatus() != at::cuda::CaptureStatus::None;
  launch(plan(cuda::choose_kernel(key, capturing, refusal, time_candidate)), like, stream);
}

// cp.async moves 16-byte chunks: a planes view that starts mid-chunk (a slice of a larger
// tensor) cannot be read in place.
const uint32_t* planes_ptr(const char* op, const char* name, const Tensor& planes) {
  TORCH_CHECK(reinterpret_cast<uintptr_t>(planes.data_ptr()) % 16 == 0, op, ": argument '", name,
              "' must start on a 16-byte boundary (it is a view at an odd offset); pass ", name, ".clone()");
  return reinterpret_cast<const uint32_t*>(planes.data_ptr<int32_t>());
}

// x times w into out[m * N + n]; metadata and epilogue are the caller's.
GemmProblem plain_problem(const char* op, const Tensor& x_planes, const Tensor& w_planes, int64_t K, Tensor& out) {
  GemmProblem problem;
  problem.x_planes = planes_ptr(op, "x_planes", x_planes);
  problem.x_bits = static_cast<int>(x_planes.size(0));
  problem.M = x_planes.size(1);
  problem.w_planes = planes_ptr(op, "w_planes", w_planes);
  problem.w_bits = static_cast<int>(w_planes.size(0));
  problem.N = w_planes.size(1);
  problem.K = K;
  problem.out = out.data_ptr();
  return problem;
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

Tensor gemm_cuda(const Tensor& x_planes, const Tensor& w_planes, int64_t K) {
  constexpr const char* op = "apq::gemm";
  check_gemm_args(op, x_planes, w_planes, K);
  const c10::cuda::CUDAGuard guard(x_planes.device());
  const int64_t M = x_planes.size(1), N = w_planes.size(1);
  Tensor out = at::empty({M, N}, x_planes.options());
  GemmProblem problem = plain_problem(op, x_planes, w_planes, K, out);
  problem.out_type = cuda::ElemType::Int32;
  run(op, problem, out);
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
  const int64_t M = x_planes.size(1), N = w_planes.size(1);
  Tensor out = at::empty({M, N}, x_planes.options().dtype(out_dtype));
  GemmProblem problem = plain_problem(op, x_planes, w_planes, K, out);
  problem.x_rowsum = x_rowsum.data_ptr<int32_t>();
  problem.x_scale = x_scale.data_ptr<float>();
  problem.x_offset = x_offset.data_ptr<float>();
  problem.w_rowsum = w_rowsum.data_ptr<int32_t>();
  problem.w_scale = w_scale.data_ptr<float>();
  problem.w_offset = w_offset.data_ptr<float>();
  problem.group_size = group_size;
  problem.out_type = elem_type_of(out_dtype);
  Tensor bias_values;  // keeps a converted bias alive through the launch
  if (bias.has_value()) {
    const at::ScalarType t = bias->scalar_type();
    // fp32/fp16/bf16 are read as they are; float64 is converted (the kernel has no double load)
    bias_values = (t == at::kFloat || t == at::kHalf || t == at::kBFloat16) ? bias->contiguous()
                                                                            : bias->to(at::kFloat).contiguous();
    problem.bias = bias_values.data_ptr();
    problem.bias_type = elem_type_of(bias_values.scalar_type());
  }
  run(op, problem, out);
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
                   const std::optional<Tensor>& hadamard, double a_clip) {
  constexpr const char* op = "apq::linear";
  check_linear_args(op, x, w_planes, K, group_size, a_bits, a_format, hadamard, a_clip);
  const c10::cuda::CUDAGuard guard(x.device());
  const auto [x_planes, x_rowsum, x_scale, x_offset] =
      quantize_pack_cuda(x.reshape({-1, K}).contiguous(), a_bits, a_format, group_size, hadamard, a_clip);
  const Tensor y = qmatmul_impl(op, x_planes, x_rowsum, x_scale, x_offset, w_planes, w_rowsum, w_scale, w_offset,
                                K, group_size, bias, x.scalar_type());
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = w_planes.size(1);
  return y.view(out_shape);
}

}  // namespace apq
