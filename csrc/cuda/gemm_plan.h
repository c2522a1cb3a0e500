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

// The kernels that can run a call (one instantiation each).
enum class KernelId : int { Large = 0, Skinny = 1 };

// A runnable variant: a kernel and how the operands are put to it. The names are what
// APQ_GEMM_KERNEL takes and the autotune cache stores.
struct KernelVariant {
  const char* name;
  KernelId kernel;
  bool swap_ab;  // weights on the MMA's A side (skinny M)
};
inline constexpr KernelVariant kVariants[] = {
    {"large,noswap", KernelId::Large, false},
    {"large,swap", KernelId::Large, true},
    {"skinny,noswap", KernelId::Skinny, false},
    {"skinny,swap", KernelId::Skinny, true},
};
const KernelVariant* find_variant(std::string_view name);  // nullptr: unknown
std::string variant_names();                                // "a, b, c" for error messages

// Shape of a kernel's block tile, known to the host without compiling the kernel.
// A block covers row_groups * lanes * (slots / bits) real rows of each operand: `slots`
// stacked planes per lane-row, `lanes` lane-rows per group, `row_groups` groups.
struct TileGeometry {
  int slots_a, lanes_a, row_groups_a;
  int slots_b, lanes_b, row_groups_b;
  int threads;
  int smem_bytes;
  int64_t rows_a(int bits) const { return static_cast<int64_t>(row_groups_a) * lanes_a * (slots_a / bits); }
  int64_t rows_b(int bits) const { return static_cast<int64_t>(row_groups_b) * lanes_b * (slots_b / bits); }
};
// The fused kernel's tiles (checked against its Tile types where they are instantiated):
// planes stacked plane-major, 128 x 128 rows in 8 warps and 4 stages, 64 x 32 in 2 warps and 6.
inline constexpr TileGeometry kLargeGeometry{128, 1, 1, 128, 1, 1, 256, 4 * 256 * 64 + 128 * 136 * 4};
inline constexpr TileGeometry kSkinnyGeometry{64, 1, 1, 32, 1, 1, 64, 6 * 96 * 64 + 64 * 40 * 4};
const TileGeometry& tile_geometry(KernelId k);
int min_arch(KernelId k);  // kernels run on min_arch ... 90 (mma.sync b1 is sm_80 ... sm_90)

// The kernel parameters of a problem, x on side a (or w, under swap-AB).
BitplaneGemmParams make_params(const GemmProblem& problem, bool swap_ab);

// Everything a launch needs; `refusal` says why the variant cannot run this call (empty: it can).
struct LaunchPlan {
  BitplaneGemmParams params;
  KernelId kernel = KernelId::Large;
  unsigned grid[3] = {0, 0, 0};
  int threads = 0;
  int smem_bytes = 0;
  std::string refusal;
  bool empty() const { return grid[0] == 0 || grid[1] == 0 || grid[2] == 0; }
};
LaunchPlan plan_launch(const GemmProblem& problem, const KernelVariant& variant, const DeviceLimits& device);

// The CUTLASS baseline (APQ_GEMM_PATH=baseline): why it cannot run a call (empty: it can),
// its int32 workspace (elements) and the leading dimension of that workspace.
std::string baseline_refusal(const GemmProblem& problem, const DeviceLimits& device);
int64_t baseline_workspace_ld(const BitplaneGemmParams& p);
int64_t baseline_workspace_elems(const BitplaneGemmParams& p);

// Launches on `stream` (a cudaStream_t), defined by the .cu files (not in the emulator);
// they throw on a launch error. The baseline needs baseline_workspace_elems int32 and, for
// calls of several K-windows, an fp32 accumulator of a.rows * b.rows.
void launch_large(const LaunchPlan& plan, void* stream);
void launch_skinny(const LaunchPlan& plan, void* stream);
void launch_baseline_gemm(const BitplaneGemmParams& p, int32_t* workspace, float* accumulator, void* stream);

}  // namespace apq::cuda
