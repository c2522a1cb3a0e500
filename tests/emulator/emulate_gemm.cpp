// Runs a CUDA bit-plane GEMM call on the CPU the way gemm_cuda.cpp runs it on a GPU: the
// same torch-free host code (csrc/cuda/gemm_plan.cpp: orientation, parameters, grid) and the
// kernels' unchanged source, every block of the grid in turn, each with one std::thread per
// CUDA thread. Built and called through ctypes by tests/emulated_kernel.py; not part of the
// package.
#include "bitplane_gemm_kernel.cuh"
#include "emulated_call.h"
#include "gemm_plan.h"
#include "imma_gemm_kernel.cuh"
#include "split_k_reduce.cuh"

#include <algorithm>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

thread_local emu::ThreadContext emu::ctx;

namespace apq::cuda {
alignas(1024) uint8_t smem[227 * 1024];  // the kernels' `extern __shared__` buffer (sm_90's opt-in limit)
}

namespace {

using apq::cuda::LaunchPlan;

// Runs every block of the grid, one after another, in the order given by `seed` (0: x, then y,
// then z; otherwise a shuffle: split-K results must not depend on which block ends last).
template <auto Kernel>
void emulate(const LaunchPlan& plan, unsigned seed, emu::GlobalReads& reads) {
  const emu::Dim3 grid{plan.grid[0], plan.grid[1], plan.grid[2]};
  std::vector<emu::Dim3> blocks;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) blocks.push_back({x, y, z});
  if (seed != 0) std::shuffle(blocks.begin(), blocks.end(), std::mt19937(seed));
  const int warps = plan.threads / 32;
  for (const emu::Dim3& b : blocks) {
    std::memset(apq::cuda::smem, 0x5A, sizeof(apq::cuda::smem));  // stale shared memory
    std::barrier<> block(plan.threads);
    std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
    for (int w = 0; w < warps; ++w) warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
    std::vector<emu::WarpExchange> exchange(warps);
    // The sm_90 machinery (wgmma queue) for the IGMMA kernel, over the same shared memory.
    emu90::Machine machine({apq::cuda::smem, sizeof(apq::cuda::smem)}, seed, /*lazy_tma=*/false);
    std::vector<std::unique_ptr<emu90::Warpgroup>> warpgroups;
    for (int g = 0; g < (plan.threads + 127) / 128; ++g) warpgroups.push_back(std::make_unique<emu90::Warpgroup>());
    std::mutex error_mutex;
    std::string error;
    std::vector<std::thread> threads;
    for (int t = 0; t < plan.threads; ++t) {
      threads.emplace_back([&, t] {
        emu::ctx.thread = {static_cast<unsigned>(t), 0, 0};
        emu::ctx.block = b;
        emu::ctx.grid = grid;
        emu::ctx.block_dim = {static_cast<unsigned>(plan.threads), 1, 1};
        emu::ctx.shared = apq::cuda::smem;
        emu::ctx.reads = &reads;
        emu::ctx.block_barrier = &block;
        emu::ctx.warp_barrier = warp_barriers[t / 32].get();
        emu::ctx.warp = &exchange[t / 32];
        emu90::state.machine = &machine;
        emu90::state.warpgroup = warpgroups[t / 128].get();
        try {
          Kernel(plan.params);
        } catch (const std::exception& e) {
          std::lock_guard<std::mutex> lock(error_mutex);
          if (error.empty()) error = e.what();
        }
      });
    }
    for (auto& th : threads) th.join();
    if (!error.empty()) throw std::runtime_error(error);
  }
}

// The split-K reduction: no barriers or collectives, so its threads run one after another.
void emulate_split_k_reduce(const LaunchPlan& plan) {
  for (unsigned b = 0; b < plan.reduce_blocks; ++b) {
    for (int t = 0; t < apq::cuda::kReduceThreads; ++t) {
      emu::ctx.thread = {static_cast<unsigned>(t), 0, 0};
      emu::ctx.block = {b, 0, 0};
      emu::ctx.block_dim = {apq::cuda::kReduceThreads, 1, 1};
      apq::cuda::split_k_reduce_kernel(plan.params, static_cast<int>(plan.grid[2]));
    }
  }
}

}  // namespace

using emu::fail;
using emu::limits_of;
using emu::problem_of;

// The host plan alone (no kernel run): `plan` receives grid x, y, z, threads, shared memory
// bytes, workspace bytes, reduction blocks. Returns 0, or 2 with the refusal in `error`.
extern "C" __attribute__((visibility("default"))) int apq_plan_gemm(const char* variant_name, const int64_t* ints,
                                                                    const int64_t* device, int64_t* plan_out,
                                                                    char* error, int error_len) {
  using namespace apq::cuda;
  const KernelVariant* variant = find_variant(variant_name);
  if (variant == nullptr) return fail(error, error_len, 2, "unknown variant; one of " + variant_names());
  const LaunchPlan plan = plan_launch(problem_of(ints, nullptr), *variant, limits_of(device));
  if (!plan.refusal.empty()) return fail(error, error_len, 2, plan.refusal);
  const int64_t values[] = {plan.grid[0], plan.grid[1], plan.grid[2], plan.threads, plan.smem_bytes,
                            plan.workspace_bytes, plan.reduce_blocks};
  std::copy(std::begin(values), std::end(values), plan_out);
  return 0;
}

// The call run on the CPU. `splits` receives the plan's grid z. Returns 0 when the call ran, 2
// when the plan refused it (the reason in `error`), 3 when the CUTLASS baseline ("baseline")
// would run it (its device code is not emulated), 1 on an exception.
extern "C" __attribute__((visibility("default"))) int apq_emulate_gemm(const char* variant_name, const int64_t* ints,
                                                                       void* const* ptrs, const int64_t* device,
                                                                       unsigned block_order_seed, int64_t* splits,
                                                                       char* error, int error_len) {
  using namespace apq::cuda;
  auto fail = [&](int rc, const std::string& why) { return emu::fail(error, error_len, rc, why); };
  const GemmProblem problem = problem_of(ints, ptrs);
  const DeviceLimits limits = limits_of(device);
  try {
    if (std::string(variant_name) == "baseline") {
      const std::string why = baseline_refusal(problem, limits);
      return why.empty() ? 3 : fail(2, why);
    }
    const KernelVariant* variant = find_variant(variant_name);
    if (variant == nullptr) return fail(2, "unknown variant; one of " + variant_names());
    LaunchPlan plan = plan_launch(problem, *variant, limits);
    if (!plan.refusal.empty()) return fail(2, plan.refusal);
    *splits = plan.grid[2];
    if (plan.empty()) return 0;
    if (plan.smem_bytes > static_cast<int64_t>(sizeof(smem))) return fail(1, "shared memory beyond the emulator's");
    std::vector<uint8_t> workspace(static_cast<size_t>(plan.workspace_bytes), 0xC3);  // poisoned partials
    plan.params.partials = workspace.data();
    emu::GlobalReads reads;  // the planes, as pack() lays them out
    for (const PlaneOperand* op : {&plan.params.a, &plan.params.b}) {
      const auto* begin = reinterpret_cast<const uint8_t*>(op->planes);
      reads.ranges.emplace_back(begin, begin + op->bits * op->rows * plan.params.words * 4);
    }
    switch (plan.kernel) {
      case KernelId::Wide: emulate<&bitplane_gemm_kernel<WideTile>>(plan, block_order_seed, reads); break;
      case KernelId::Narrow: emulate<&bitplane_gemm_kernel<NarrowTile>>(plan, block_order_seed, reads); break;
      case KernelId::Imma: emulate<&imma_gemm_kernel<ImmaSync>>(plan, block_order_seed, reads); break;
      case KernelId::Igmma: emulate<&imma_gemm_kernel<ImmaWarpgroup>>(plan, block_order_seed, reads); break;
      case KernelId::Bgmma: return fail(1, "the BGMMA kernel runs in its own emulator (tests/emulated_bgmma.py)");
    }
    if (!reads.violation.empty()) return fail(1, reads.violation);
    emulate_split_k_reduce(plan);
  } catch (const std::exception& e) {
    return fail(1, e.what());
  }
  return 0;
}

// The emulator's own cp.async contract, for its test: the destination reads as garbage until
// the wait_group that completes the copy's group. Returns 0 when it holds.
extern "C" __attribute__((visibility("default"))) int apq_emulator_cp_async_probe() {
  alignas(16) static const uint32_t source[4] = {1, 2, 3, 4};
  uint8_t* destination = apq::cuda::smem;
  emu::ctx.shared = apq::cuda::smem;
  apq::ext::cp_async_16(apq::ext::shared_address(destination), source, 16, apq::ext::l2_policy(false));
  apq::ext::cp_async_fence();
  const bool early = std::memcmp(destination, source, 16) == 0;  // must not have landed yet
  apq::ext::cp_async_wait<0>();
  const bool landed = std::memcmp(destination, source, 16) == 0;
  return !early && landed ? 0 : 1;
}
