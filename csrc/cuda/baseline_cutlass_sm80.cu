// The baseline CUDA path (DESIGN.md §5 stepping stone): CUTLASS's tested b1 GEMM,
// device::Gemm<uint1b_t, RowMajor, uint1b_t, ColumnMajor, int32_t, ..., OpAndPopc>, run on
// the stacked planes (planes.view(bits * R, words)) of one K-window at a time, writing every
// plane pair's popcounts P[j*M + m][i*N + n] to an int32 workspace; then a recovery kernel
// shift-adds them and applies the epilogue. It exists to be beaten by the fused kernel
// (bench/bench_cuda_gemm.py) and is selected with APQ_GEMM_PATH=baseline.
#include "epilogue.cuh"
#include "gemm_plan.h"

#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>

#include <cutlass/gemm/device/gemm.h>

namespace apq::cuda {
namespace {

// The configuration of CUTLASS's own b1 unit test (gemm_b1t_b1n_s32t_tensor_op_s32_sm80).
using BaselineGemm = cutlass::gemm::device::Gemm<
    cutlass::uint1b_t, cutlass::layout::RowMajor, cutlass::uint1b_t, cutlass::layout::ColumnMajor, int32_t,
    cutlass::layout::RowMajor, int32_t, cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80,
    cutlass::gemm::GemmShape<128, 256, 1024>, cutlass::gemm::GemmShape<64, 64, 1024>,
    cutlass::gemm::GemmShape<16, 8, 256>, cutlass::epilogue::thread::LinearCombination<int32_t, 4, int32_t, int32_t>,
    cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<>, 3, 128, 128, false, cutlass::arch::OpAndPopc>;

// One thread per output: U = sum_{j,i} P[j*M + m][i*N + n] << (i + j), then the epilogue.
// P's rows are `ld` int32 apart. K-groups accumulate into `accumulator` (fp32 [M, N]) and
// write on the last window.
__global__ void recover_kernel(const BitplaneGemmParams p, const int32_t* __restrict__ partial, int64_t ld,
                               float* __restrict__ accumulator, int64_t group, bool closes_group, bool first,
                               bool last, int64_t group_len) {
  const int64_t M = p.a.rows, N = p.b.rows;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= M * N) return;
  const int64_t m = idx / N, n = idx % N;
  int32_t U = 0;
  for (int j = 0; j < p.a.bits; ++j)
    for (int i = 0; i < p.b.bits; ++i) U += partial[(j * M + m) * ld + i * N + n] << (i + j);
  if (p.exact) {
    static_cast<int32_t*>(p.out)[m * p.out_stride_a + n * p.out_stride_b] = U;
    return;
  }
  float y = epilogue::window_term(p, m, n, U, group, closes_group, group_len);
  if (!first) y += accumulator[idx];
  if (last) {
    epilogue::store_float(p, m, n, y);
  } else {
    accumulator[idx] = y;
  }
}

}  // namespace

// The caller has checked baseline_refusal: windows start on 128-bit boundaries.
void launch_baseline_gemm(const BitplaneGemmParams& p, int32_t* workspace, float* accumulator, void* stream) {
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  const int64_t M = p.a.rows, N = p.b.rows;
  const int64_t rows_a = p.a.bits * M, rows_b = p.b.bits * N, ld_bits = p.words * 32;
  const int64_t ld_out = baseline_workspace_ld(p);
  const KWindows windows = KWindows::of(p);
  int64_t group = 0, start = 0;
  bool first = true;
  while (true) {
    const int64_t end = windows.window_end(group, start);
    const auto* a = reinterpret_cast<const cutlass::uint1b_t*>(reinterpret_cast<const uint8_t*>(p.a.planes) + start / 8);
    const auto* b = reinterpret_cast<const cutlass::uint1b_t*>(reinterpret_cast<const uint8_t*>(p.b.planes) + start / 8);
    typename BaselineGemm::Arguments args(
        {static_cast<int>(rows_a), static_cast<int>(rows_b), static_cast<int>(end - start)},
        {const_cast<cutlass::uint1b_t*>(a), ld_bits}, {const_cast<cutlass::uint1b_t*>(b), ld_bits},
        {workspace, ld_out}, {workspace, ld_out}, {1, 0});
    BaselineGemm gemm;
    cutlass::Status status = gemm.can_implement(args);
    TORCH_CHECK(status == cutlass::Status::kSuccess, "apq: CUTLASS baseline cannot run this shape: ",
                cutlass::cutlassGetStatusString(status));
    status = gemm(args, nullptr, cuda_stream);
    TORCH_CHECK(status == cutlass::Status::kSuccess, "apq: CUTLASS baseline launch failed: ",
                cutlass::cutlassGetStatusString(status));
    const bool closes_group = end == windows.group_end(group), last = windows.is_last(group, end);
    constexpr int kThreads = 256;
    recover_kernel<<<static_cast<unsigned>((M * N + kThreads - 1) / kThreads), kThreads, 0, cuda_stream>>>(
        p, workspace, ld_out, accumulator, group, closes_group, first, last, windows.group_len(group));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (last) break;
    if (closes_group) ++group;
    start = end;
    first = false;
  }
}

}  // namespace apq::cuda
