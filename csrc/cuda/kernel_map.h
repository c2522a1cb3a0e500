// Kernel mapping: which kernel variant (gemm_plan.h's kVariants) runs a GEMM shape
// (DESIGN.md §5). One shipped table, optionally overridden by a measured choice
// (APQ_AUTOTUNE=1) that is cached on disk.
#pragma once

#include "gemm_plan.h"

#include <cuda_runtime_api.h>

#include <functional>
#include <string>

namespace apq::cuda {

struct GemmShapeKey {
  int arch;  // compute capability major*10 + minor
  int64_t M, N, K;
  int x_bits, w_bits;
  bool grouped;
};

DeviceLimits device_limits(const cudaDeviceProp& prop);

// Why a variant cannot run the call at hand (empty: it can), and its time in any unit.
using RefusalFn = std::function<std::string(const KernelVariant&)>;
using TimeFn = std::function<double(const KernelVariant&)>;

// APQ_GEMM_KERNEL=<variant name> forces a variant: it runs, or the call fails saying why it
// cannot. Otherwise the table's first variant that can run, or with APQ_AUTOTUNE=1 the fastest
// variant that can run, measured by `time_candidate` and cached per (arch, M bucket, N, K,
// bits, grouped) in memory and on disk ($APQ_AUTOTUNE_CACHE, default
// ~/.cache/apq_torch/autotune.txt, re-read when the variable names another file). Several
// processes may share the file: each appends whole lines with one write and the last line for
// a key wins. Never measures while `capturing` (a CUDA graph is being recorded).
const KernelVariant& choose_kernel(const GemmShapeKey& key, bool capturing, const RefusalFn& refusal,
                                   const TimeFn& time_candidate);

}  // namespace apq::cuda
