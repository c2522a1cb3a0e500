// The host logic of one CUDA bit-plane GEMM call, torch-free (raw pointers and sizes), so
// that csrc/cuda/gemm_cuda.cpp and the CPU emulator (tests/emulator) run the same code:
// the operand orientation (swap-AB), the kernel parameters built from the op's arguments,
// the launch geometry (grid, threads, shared memory, split-K workspace) and the reasons a
// kernel variant cannot run a call.
#pragma once

#include "bitplane_gemm.h"

#include <cstdint>
#include <string>
#include <string_view>

namespace apq::cuda {

// The arguments of apq::gemm / apq::qmatmul: x (M rows) times w (N rows), out[m * N + n].
struct GemmProblem {
  const uint32_t* x_planes = nullptr;  // [x_bits, M, words]
  int x_bits = 0;
  int64_t M = 0;
  const uint32_t* w_planes = nullptr;  // [w_bits, N, words]
  int w_bits = 0;
  int64_t N = 0;
  int64_t K = 0;
  int64_t group_size = 0;
  // qmatmul only (nullptr for gemm): x_rowsum [M, G], x_scale/x_offset [M]; w_* [N, G].
  const int32_t* x_rowsum = nullptr;
  const float* x_scale = nullptr;
  const float* x_offset = nullptr;
  const int32_t* w_rowsum = nullptr;
  const float* w_scale = nullptr;
  const float* w_offset = nullptr;
  const void* bias = nullptr;  // [N]; nullptr: none
  ElemType bias_type = ElemType::Float32;
  void* out = nullptr;  // [M, N]
  ElemType out_type = ElemType::Int32;  // Int32: apq::gemm, the exact sum
};

// What the launch may use of the device (cudaDeviceProp's numbers).
struct DeviceLimits {
  int arch = 80;                     // major * 10 + minor
  int sm_count = 108;
  int64_t smem_per_block = 166912;   // sharedMemPerBlockOptin
  int64_t max_grid_x = 2147483647, max_grid_y = 65535, max_grid_z = 65535;
};

// The kernels that can run a call (one instantiation each, bitplane_gemm_sm80_*.cu).
// Wide and Narrow: the register-recovery mma.sync kernel (bitplane_gemm_sm80_*.cu); Bgmma: the
// sm_90a wgmma kernel (bgmma_gemm_sm90a.cu, bgmma_gemm.h); Imma: the planes expanded to 8-bit
// codes for the mma.sync u8 MMA (imma_gemm_sm80.cu, imma_gemm.h); Igmma: the same with the
// sm_90a wgmma u8 MMA (igmma_gemm_sm90a.cu).
enum class KernelId : int { Wide = 0, Narrow = 1, Bgmma = 2, Imma = 3, Igmma = 4 };

// A runnable variant: a kernel and how the operands are put to it. The names are what
// APQ_GEMM_KERNEL takes and the autotune cache stores; a new kernel is a KernelId, its
// TileGeometry and its rows here.
struct KernelVariant {
  const char* name;
  KernelId kernel;
  bool swap_ab;  // weights on the MMA's A side (skinny M)
  bool split_k;  // K split over blocks when the output tiles alone leave SMs idle
};
inline constexpr KernelVariant kVariants[] = {
    {"wide,noswap", KernelId::Wide, false, false},
    {"wide,swap", KernelId::Wide, true, false},
    {"wide,noswap,splitk", KernelId::Wide, false, true},
    {"wide,swap,splitk", KernelId::Wide, true, true},
    {"narrow,noswap", KernelId::Narrow, false, false},
    {"narrow,swap", KernelId::Narrow, true, false},
    {"narrow,noswap,splitk", KernelId::Narrow, false, true},
    {"narrow,swap,splitk", KernelId::Narrow, true, true},
    {"bgmma,noswap", KernelId::Bgmma, false, false},
    {"bgmma,swap", KernelId::Bgmma, true, false},
    {"imma,noswap", KernelId::Imma, false, false},
    {"imma,swap", KernelId::Imma, true, false},
    {"imma,noswap,splitk", KernelId::Imma, false, true},
    {"imma,swap,splitk", KernelId::Imma, true, true},
    {"igmma,noswap", KernelId::Igmma, false, false},
    {"igmma,swap", KernelId::Igmma, true, false},
    {"igmma,noswap,splitk", KernelId::Igmma, false, true},
    {"igmma,swap,splitk", KernelId::Igmma, true, true},
};
const KernelVariant* find_variant(std::string_view name);  // nullptr: unknown
std::string variant_names();                                // "a, b, c" for error messages

// Shape of a kernel's block tile, known to the host without compiling the kernel.
// A block covers row_groups * lanes * (slots / bits) real rows of each operand: `slots`
// stacked planes per lane-row, `lanes` lane-rows per group, `row_groups` groups (warps).
struct TileGeometry {
  int slots_a, lanes_a, row_groups_a;
  int slots_b, lanes_b, row_groups_b;
  int threads;
  int pipeline_bytes;         // shared memory of the cp.async stages
  bool results_in_registers;  // fp32 results of several K-windows; else 4 bytes per thread and output after the stages
  int64_t rows_a(int bits) const { return static_cast<int64_t>(row_groups_a) * lanes_a * (slots_a / bits); }
  int64_t rows_b(int bits) const { return static_cast<int64_t>(row_groups_b) * lanes_b * (slots_b / bits); }
  int64_t smem_bytes(int a_bits, int b_bits, bool several_windows) const {
    const int64_t outputs = static_cast<int64_t>(slots_a / a_bits) * (slots_b / b_bits);
    return pipeline_bytes + (several_windows && !results_in_registers ? threads * outputs * 4 : 0);
  }
};
// The register-recovery kernel's tiles (bitplane_gemm_kernel.cuh; checked where instantiated):
// wide = 2 x 4 warps of 64 x 64 stacked rows, narrow = 4 x 1 warps of 64 x 32; 4 stages each.
inline constexpr TileGeometry kWideGeometry{8, 8, 2, 16, 4, 4, 256, 4 * (128 + 256) * 64, false};
inline constexpr TileGeometry kNarrowGeometry{8, 8, 4, 8, 4, 1, 128, 4 * (256 + 32) * 64, true};
const TileGeometry& tile_geometry(KernelId k);  // Wide or Narrow

// The GPUs a kernel runs on: sm_min_arch ... sm_max_arch, which have `instructions`.
struct ArchRange {
  int min_arch, max_arch;
  const char* instructions;
};
ArchRange arch_range(KernelId k);

// The kernel parameters of a problem, x on side a (or w, under swap-AB).
BitplaneGemmParams make_params(const GemmProblem& problem, bool swap_ab);

// Everything a launch needs; `refusal` says why the variant cannot run this call (empty: it can).
// Split-K needs a workspace of workspace_bytes for the partials and a second launch, the
// reduction (reduce_blocks of kReduceThreads threads).
struct LaunchPlan {
  BitplaneGemmParams params;
  KernelId kernel = KernelId::Wide;
  unsigned grid[3] = {0, 0, 0};
  int threads = 0;
  int64_t smem_bytes = 0;
  int64_t workspace_bytes = 0;
  unsigned reduce_blocks = 0;
  std::string refusal;
  bool empty() const { return grid[0] == 0 || grid[1] == 0 || grid[2] == 0; }
};
constexpr int kReduceThreads = 256;
LaunchPlan plan_launch(const GemmProblem& problem, const KernelVariant& variant, const DeviceLimits& device);

// The CUTLASS baseline (APQ_GEMM_PATH=baseline): why it cannot run a call (empty: it can),
// its int32 workspace (elements) and the leading dimension of that workspace.
std::string baseline_refusal(const GemmProblem& problem, const DeviceLimits& device);
int64_t baseline_workspace_ld(const BitplaneGemmParams& p);
int64_t baseline_workspace_elems(const BitplaneGemmParams& p);

// Launches on `stream` (a cudaStream_t), defined by the .cu files (not in the emulator);
// they throw on a launch error. The baseline needs baseline_workspace_elems int32 and, for
// calls of several K-windows, an fp32 accumulator of a.rows * b.rows.
void launch_wide(const LaunchPlan& plan, void* stream);
void launch_narrow(const LaunchPlan& plan, void* stream);
void launch_bgmma(const LaunchPlan& plan, void* stream);
void launch_imma(const LaunchPlan& plan, void* stream);
void launch_igmma(const LaunchPlan& plan, void* stream);
void launch_split_k_reduce(const LaunchPlan& plan, void* stream);  // no-op without split-K
void launch_baseline_gemm(const BitplaneGemmParams& p, int32_t* workspace, float* accumulator, void* stream);

}  // namespace apq::cuda
