// Kernel mapping: which fused-kernel tile and operand order runs a GEMM shape
// (DESIGN.md §5). One shipped table, optionally overridden by a measured choice
// (APQ_AUTOTUNE=1) that is cached on disk.
#pragma once

#include "bitplane_gemm.h"

#include <functional>
#include <string>

namespace apq::cuda {

struct KernelChoice {
  TileConfig tile;
  bool swap_ab;  // weights on the MMA's A side (skinny M)
};

struct GemmShapeKey {
  int arch;  // compute capability major*10 + minor
  int64_t M, N, K;
  int x_bits, w_bits;
  bool grouped;
};

// The shipped table.
KernelChoice table_choice(const GemmShapeKey& key);

// APQ_GEMM_KERNEL="<large|skinny|bgmma>,<swap|noswap>" forces a choice (tests, benchmarks;
// bgmma only on sm_90);
// otherwise the table, or with APQ_AUTOTUNE=1 the fastest candidate measured by `time_candidate`
// (seconds), cached per (arch, M bucket, N, K, bits, grouped) in memory and on disk
// ($APQ_AUTOTUNE_CACHE, default ~/.cache/apq_torch/autotune.txt). Several processes may
// share the file: each appends whole lines with one write and the last line for a key wins.
// Never measures while `capturing` (a CUDA graph is being recorded).
KernelChoice choose_kernel(const GemmShapeKey& key, bool capturing,
                           const std::function<double(KernelChoice)>& time_candidate);

std::string describe(const KernelChoice& c);

}  // namespace apq::cuda
