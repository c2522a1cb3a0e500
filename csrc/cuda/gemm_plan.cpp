// Torch-free host logic of a CUDA bit-plane GEMM call (see gemm_plan.h). Compiled into the
// extension and, unchanged, into the CPU emulator (tests/emulator).
#include "gemm_plan.h"

#include "bgmma_gemm.h"
#include "imma_gemm.h"

#include <algorithm>
#include <sstream>
#include <utility>

namespace apq::cuda {

const KernelVariant* find_variant(std::string_view name) {
  for (const KernelVariant& v : kVariants) {
    if (name == v.name) return &v;
  }
  return nullptr;
}

std::string variant_names() {
  std::string names;
  for (const KernelVariant& v : kVariants) names += (names.empty() ? "" : ", ") + std::string(v.name);
  return names;
}

const TileGeometry& tile_geometry(KernelId k) { return k == KernelId::Wide ? kWideGeometry : kNarrowGeometry; }

ArchRange arch_range(KernelId k) {
  if (k == KernelId::Bgmma) return {90, 90, "the wgmma b1 tensor cores of sm_90a (H100, H200)"};
  if (k == KernelId::Imma) return {80, 90, "the mma.sync u8 tensor cores of sm_80 ... sm_90 (the build's archs)"};
  if (k == KernelId::Igmma) return {90, 90, "the wgmma u8 tensor cores of sm_90a (H100, H200)"};
  return {80, 90, "the mma.sync b1 tensor cores of sm_80 ... sm_90"};
}

BitplaneGemmParams make_params(const GemmProblem& problem, bool swap_ab) {
  BitplaneGemmParams p;
  const int64_t G = problem.group_size > 0 ? (problem.K + problem.group_size - 1) / problem.group_size : 1;
  p.a = {problem.x_planes, problem.M, problem.x_bits, problem.x_rowsum, problem.x_scale, problem.x_offset,
         /*meta_row_stride=*/1, /*meta_group_stride=*/0};  // per token
  p.b = {problem.w_planes, problem.N, problem.w_bits, problem.w_rowsum, problem.w_scale, problem.w_offset,
         /*meta_row_stride=*/G, /*meta_group_stride=*/1};  // per output channel and K-group
  p.words = (problem.K + 255) / 256 * 8;
  p.K = problem.K;
  p.group_size = problem.group_size;
  p.G = G;
  p.window_bits = exact_window_bits(problem.x_bits, problem.w_bits);
  p.exact = problem.out_type == ElemType::Int32;
  p.out = problem.out;
  p.out_type = problem.out_type;
  p.out_stride_a = problem.N;
  p.out_stride_b = 1;
  p.bias = problem.bias;
  p.bias_type = problem.bias_type;
  p.split_bits = KWindows::of(p).end_bits();  // one split
  if (swap_ab) {
    std::swap(p.a, p.b);
    std::swap(p.out_stride_a, p.out_stride_b);
    p.bias_on_a = true;
  }
  return p;
}

namespace {

// Split-K: at least this much K per split (the pipeline's prologue is paid per block), at most
// this much workspace for the partials, and about this many blocks per SM in all.
constexpr int64_t kMinSplitBits = 2 * kKTileBits;
constexpr int64_t kMaxPartialBytes = int64_t{64} << 20;
constexpr int64_t kBlocksPerSm = 2;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t gcd(int64_t a, int64_t b) { return b == 0 ? a : gcd(b, a % b); }

// K per split: whole k-tiles, and whole K-windows when there are several (each split then
// sums complete windows in fp32; with one window, splits sum int32 U exactly).
int64_t split_bits(const BitplaneGemmParams& p, int64_t tiles, const DeviceLimits& device) {
  const KWindows windows = KWindows::of(p);
  const int64_t end = windows.end_bits();
  int64_t granule = kKTileBits;
  if (!windows.single()) {
    granule = p.G > 1 ? kKTileBits / gcd(kKTileBits, windows.group_bits) * windows.group_bits : p.window_bits;
  }
  const int64_t units = ceil_div(end, granule);
  int64_t splits = ceil_div(kBlocksPerSm * device.sm_count, tiles);
  splits = std::min({splits, units / std::max<int64_t>(1, ceil_div(kMinSplitBits, granule)), device.max_grid_z,
                     kMaxPartialBytes / std::max<int64_t>(1, p.a.rows * p.b.rows * 4)});
  if (splits <= 1) return end;
  return ceil_div(units, splits) * granule;
}

}  // namespace

namespace {

// The shape of a call's launch before the device limits are checked.
struct LaunchShape {
  int64_t grid_a, grid_b, splits;
};

// A kernel of BitplaneGemmParams (register tiles, IMMA) whose block covers `rows_a` x `rows_b`
// real rows: the grid, and split-K where the variant has it.
LaunchShape shape_blocks(LaunchPlan& plan, const KernelVariant& variant, const DeviceLimits& device, int64_t rows_a,
                         int64_t rows_b) {
  BitplaneGemmParams& p = plan.params;
  const KWindows windows = KWindows::of(p);
  const int64_t grid_a = ceil_div(p.a.rows, rows_a);
  const int64_t grid_b = ceil_div(p.b.rows, rows_b);
  if (variant.split_k) p.split_bits = split_bits(p, grid_a * grid_b, device);
  const int64_t splits = ceil_div(windows.end_bits(), p.split_bits);
  // Weights that only one block column reads (decode) may leave L2 first.
  PlaneOperand& weights = variant.swap_ab ? p.a : p.b;
  weights.read_once = (variant.swap_ab ? grid_b : grid_a) == 1;
  if (splits > 1) {
    plan.workspace_bytes = splits * p.a.rows * p.b.rows * 4;
    plan.reduce_blocks = static_cast<unsigned>(ceil_div(p.a.rows * p.b.rows, kReduceThreads));
  }
  return {grid_a, grid_b, splits};
}

LaunchShape shape_register_tile(LaunchPlan& plan, const KernelVariant& variant, const DeviceLimits& device) {
  const BitplaneGemmParams& p = plan.params;
  const TileGeometry& tile = tile_geometry(variant.kernel);
  plan.threads = tile.threads;
  plan.smem_bytes = tile.smem_bytes(p.a.bits, p.b.bits, !KWindows::of(p).single());
  return shape_blocks(plan, variant, device, tile.rows_a(p.a.bits), tile.rows_b(p.b.bits));
}

LaunchShape shape_imma(LaunchPlan& plan, const KernelVariant& variant, const DeviceLimits& device) {
  plan.threads = ImmaTile::kThreads;
  plan.smem_bytes = variant.kernel == KernelId::Igmma ? ImmaTile::kWarpgroupSmemBytes : ImmaTile::kSmemBytes;
  return shape_blocks(plan, variant, device, ImmaTile::kRowsA, ImmaTile::kRowsB);
}

LaunchShape shape_bgmma(LaunchPlan& plan) {
  plan.params.window_bits = BgmmaTile::kWindowBits;  // what the kernel uses, fixed at compile time
  const BgmmaGeometry geo = BgmmaGeometry::of(plan.params);
  plan.threads = BgmmaTile::kThreads;
  plan.smem_bytes = BgmmaTile::kSmemBytes;
  return {ceil_div(plan.params.a.rows, geo.rows_a), ceil_div(plan.params.b.rows, geo.rows_b), 1};
}

}  // namespace

LaunchPlan plan_launch(const GemmProblem& problem, const KernelVariant& variant, const DeviceLimits& device) {
  LaunchPlan plan;
  plan.kernel = variant.kernel;
  plan.params = make_params(problem, variant.swap_ab);
  const LaunchShape shape = variant.kernel == KernelId::Bgmma  ? shape_bgmma(plan)
                            : variant.kernel == KernelId::Imma || variant.kernel == KernelId::Igmma
                                ? shape_imma(plan, variant, device)
                                                               : shape_register_tile(plan, variant, device);
  const ArchRange archs = arch_range(variant.kernel);
  std::ostringstream why;
  if (device.arch < archs.min_arch || device.arch > archs.max_arch) {
    why << "it needs " << archs.instructions << ", this GPU is sm_" << device.arch;
  } else if (plan.smem_bytes > device.smem_per_block) {
    why << "its block needs " << plan.smem_bytes << " bytes of shared memory, this GPU gives a block "
        << device.smem_per_block;
  } else if (shape.grid_a > device.max_grid_x || shape.grid_b > device.max_grid_y || shape.splits > device.max_grid_z) {
    why << "its launch grid (" << shape.grid_a << " x " << shape.grid_b << " x " << shape.splits
        << " blocks) exceeds the GPU's limit (" << device.max_grid_x << " x " << device.max_grid_y << " x "
        << device.max_grid_z << ")";
  }
  plan.refusal = why.str();
  if (plan.refusal.empty()) {
    plan.grid[0] = static_cast<unsigned>(shape.grid_a);
    plan.grid[1] = static_cast<unsigned>(shape.grid_b);
    plan.grid[2] = static_cast<unsigned>(shape.splits);
  }
  return plan;
}

// CUTLASS's b1 GEMM reads 128-bit (16-byte) accesses: each K-window of the planes must start
// on a 128-bit boundary (its ld, words * 32 bits, always does), and the int32 output's leading
// dimension must be a multiple of 4 (the workspace pads it).
constexpr int64_t kBaselineAlignmentBits = 128;
constexpr int64_t kBaselineOutputAlignment = 4;

std::string baseline_refusal(const GemmProblem& problem, const DeviceLimits& device) {
  std::ostringstream why;
  const int64_t rows_a = problem.x_bits * problem.M, rows_b = problem.w_bits * problem.N;
  if (device.arch < 80 || device.arch > 90) {
    why << "the CUTLASS baseline needs the mma.sync b1 tensor cores of sm_80 ... sm_90, this GPU is sm_" << device.arch;
  } else if (problem.group_size % kBaselineAlignmentBits != 0) {
    why << "the CUTLASS baseline reads each K-group of the planes in place with 128-bit loads, so 'group_size' "
        << "must be 0 or a multiple of " << kBaselineAlignmentBits << ", got " << problem.group_size
        << "; use the fused path (unset APQ_GEMM_PATH)";
  } else if (rows_a > 2147483647 || rows_b > 2147483647 || (rows_b + 255) / 256 > device.max_grid_y) {
    why << "the CUTLASS baseline's stacked operands (" << rows_a << " x " << rows_b
        << " rows) exceed its int32 extents or launch grid";
  }
  return why.str();
}

int64_t baseline_workspace_ld(const BitplaneGemmParams& p) {
  const int64_t rows_b = p.b.bits * p.b.rows;
  return (rows_b + kBaselineOutputAlignment - 1) / kBaselineOutputAlignment * kBaselineOutputAlignment;
}

int64_t baseline_workspace_elems(const BitplaneGemmParams& p) {
  return p.a.bits * p.a.rows * baseline_workspace_ld(p);
}

}  // namespace apq::cuda
