// Runs a CUDA bit-plane GEMM call on the CPU the way gemm_cuda.cpp runs it on a GPU: the
// same torch-free host code (csrc/cuda/gemm_plan.cpp: orientation, parameters, grid) and the
// kernels' unchanged source, every block of the grid in turn, each with one std::thread per
// CUDA thread. Built and called through ctypes by tests/emulated_kernel.py; not part of the
// package.
#include "bitplane_gemm_kernel.cuh"
#include "gemm_plan.h"

#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

thread_local emu::ThreadContext emu::ctx;

namespace apq::cuda {
alignas(128) uint8_t smem[227 * 1024];  // the kernel's `extern __shared__` buffer (sm_90's opt-in limit)
}

namespace {

using apq::cuda::LaunchPlan;

template <class Tile>
void emulate(const LaunchPlan& plan) {
  static_assert(Tile::kSmemBytes <= sizeof(apq::cuda::smem));
  const int warps = plan.threads / 32;
  for (unsigned bz = 0; bz < plan.grid[2]; ++bz) {
    for (unsigned by = 0; by < plan.grid[1]; ++by) {
      for (unsigned bx = 0; bx < plan.grid[0]; ++bx) {
        std::memset(apq::cuda::smem, 0x5A, sizeof(apq::cuda::smem));  // stale shared memory
        std::barrier<> block(plan.threads);
        std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
        for (int w = 0; w < warps; ++w) warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
        std::vector<emu::WarpExchange> exchange(warps);
        std::vector<std::thread> threads;
        for (int t = 0; t < plan.threads; ++t) {
          threads.emplace_back([&, t] {
            emu::ctx.thread = {static_cast<unsigned>(t), 0, 0};
            emu::ctx.block = {bx, by, bz};
            emu::ctx.block_barrier = &block;
            emu::ctx.warp_barrier = warp_barriers[t / 32].get();
            emu::ctx.warp = &exchange[t / 32];
            apq::cuda::bitplane_gemm_kernel<Tile>(plan.params);
          });
        }
        for (auto& th : threads) th.join();
      }
    }
  }
}

}  // namespace

// What gemm_cuda.cpp receives, flattened:
//   ints:   M N K x_bits w_bits group_size out_type bias_type
//   ptrs:   x_planes w_planes x_rowsum x_scale x_offset w_rowsum w_scale w_offset bias out
//   device: arch sm_count smem_per_block max_grid_x max_grid_y max_grid_z
// Returns 0 when the call ran, 2 when the plan refused it (the reason in `error`), 3 when
// the CUTLASS baseline ("baseline") would run it (its device code is not emulated), 1 on an
// exception.
extern "C" int apq_emulate_gemm(const char* variant_name, const int64_t* ints, void* const* ptrs,
                                const int64_t* device, char* error, int error_len) {
  using namespace apq::cuda;
  auto fail = [&](int rc, const std::string& why) {
    std::snprintf(error, static_cast<size_t>(error_len), "%s", why.c_str());
    return rc;
  };
  GemmProblem problem;
  problem.M = ints[0];
  problem.N = ints[1];
  problem.K = ints[2];
  problem.x_bits = static_cast<int>(ints[3]);
  problem.w_bits = static_cast<int>(ints[4]);
  problem.group_size = ints[5];
  problem.out_type = static_cast<ElemType>(ints[6]);
  problem.bias_type = static_cast<ElemType>(ints[7]);
  problem.x_planes = static_cast<const uint32_t*>(ptrs[0]);
  problem.w_planes = static_cast<const uint32_t*>(ptrs[1]);
  problem.x_rowsum = static_cast<const int32_t*>(ptrs[2]);
  problem.x_scale = static_cast<const float*>(ptrs[3]);
  problem.x_offset = static_cast<const float*>(ptrs[4]);
  problem.w_rowsum = static_cast<const int32_t*>(ptrs[5]);
  problem.w_scale = static_cast<const float*>(ptrs[6]);
  problem.w_offset = static_cast<const float*>(ptrs[7]);
  problem.bias = ptrs[8];
  problem.out = ptrs[9];
  const DeviceLimits limits{static_cast<int>(device[0]), static_cast<int>(device[1]), device[2],
                            device[3], device[4], device[5]};
  try {
    if (std::string(variant_name) == "baseline") {
      const std::string why = baseline_refusal(problem, limits);
      return why.empty() ? 3 : fail(2, why);
    }
    const KernelVariant* variant = find_variant(variant_name);
    if (variant == nullptr) return fail(2, "unknown variant; one of " + variant_names());
    const LaunchPlan plan = plan_launch(problem, *variant, limits);
    if (!plan.refusal.empty()) return fail(2, plan.refusal);
    if (plan.empty()) return 0;
    switch (plan.kernel) {
      case KernelId::Large: emulate<LargeTile>(plan); break;
      case KernelId::Skinny: emulate<SkinnyTile>(plan); break;
    }
  } catch (const std::exception& e) {
    return fail(1, e.what());
  }
  return 0;
}
