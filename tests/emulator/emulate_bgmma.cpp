// Runs the sm_90a BGMMA kernel (csrc/cuda/bgmma_gemm_kernel.cuh, unchanged) on the CPU: the
// production host plan (gemm_plan.cpp) and the tensor maps of bgmma_gemm.h with the emulated
// encoder, then every block of the grid in turn with one std::thread per CUDA thread, wgmma /
// TMA / mbarrier from sm90_machine.h. Built and called through ctypes by tests/test_emulated_bgmma.py; not part
// of the package.
#include "bgmma_gemm_kernel.cuh"
#include "emulated_call.h"
#include "gemm_plan.h"

#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

thread_local emu::ThreadContext emu::ctx;

namespace apq::cuda {
alignas(1024) uint8_t smem_raw[BgmmaTile::kSmemBytes];  // the kernel's `extern __shared__` buffer
}

namespace {

std::string last_error;

void run_block(const CUtensorMap& map_a, const CUtensorMap& map_b, const apq::cuda::BitplaneGemmParams& p,
               unsigned bx, unsigned by, uint64_t seed, bool lazy) {
  using apq::cuda::BgmmaTile;
  constexpr int kThreads = BgmmaTile::kThreads, kWarps = kThreads / 32;
  std::memset(apq::cuda::smem_raw, 0x5A, sizeof(apq::cuda::smem_raw));  // stale shared memory
  emu90::Machine machine({apq::cuda::smem_raw, sizeof(apq::cuda::smem_raw)}, seed, lazy);
  std::barrier<> block(kThreads);
  std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
  for (int w = 0; w < kWarps; ++w) warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
  std::vector<emu::WarpExchange> exchange(kWarps);
  std::vector<std::unique_ptr<emu90::Warpgroup>> warpgroups;
  for (int g = 0; g < kThreads / 128; ++g) warpgroups.push_back(std::make_unique<emu90::Warpgroup>());
  std::mutex error_mutex;
  std::string error;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      emu::ctx.thread = {static_cast<unsigned>(t), 0, 0};
      emu::ctx.block = {bx, by, 0};
      emu::ctx.block_barrier = &block;
      emu::ctx.warp_barrier = warp_barriers[t / 32].get();
      emu::ctx.warp = &exchange[t / 32];
      emu90::state.machine = &machine;
      emu90::state.warpgroup = warpgroups[t / 128].get();
      try {
        apq::cuda::bgmma_gemm_kernel<BgmmaTile>(map_a, map_b, p);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (error.empty()) error = e.what();
      }
    });
  }
  for (auto& th : threads) th.join();
  if (!error.empty()) throw std::runtime_error(error);
}

}  // namespace

// A call (arguments: emulated_call.h) with `variant` ("bgmma,noswap" or "bgmma,swap") on the
// GPU `device`; `seed` drives which TMA copies land late (`lazy`). Returns 0 when it ran, 2
// when the plan refused it, 1 on an error; the reason in apq_emulator_error().
extern "C" __attribute__((visibility("default"))) int apq_emulate_bgmma_gemm(const char* variant_name,
                                                                             const int64_t* ints, void* const* ptrs,
                                                                             const int64_t* device, uint64_t seed,
                                                                             int lazy) {
  using namespace apq::cuda;
  try {
    const KernelVariant* variant = find_variant(variant_name);
    if (variant == nullptr || variant->kernel != KernelId::Bgmma) throw std::runtime_error("not a BGMMA variant");
    const LaunchPlan plan = plan_launch(emu::problem_of(ints, ptrs), *variant, emu::limits_of(device));
    if (!plan.refusal.empty()) {
      last_error = plan.refusal;
      return 2;
    }
    CUtensorMap map_a, map_b;
    if (encode_bgmma_maps(emu90::encode_tensor_map, plan.params, map_a, map_b) != CUDA_SUCCESS) {
      throw std::runtime_error("tensor map encoding failed");
    }
    for (unsigned bx = 0; bx < plan.grid[0]; ++bx)
      for (unsigned by = 0; by < plan.grid[1]; ++by)
        run_block(map_a, map_b, plan.params, bx, by, seed + 7919 * (bx * uint64_t{plan.grid[1]} + by), lazy != 0);
  } catch (const std::exception& e) {
    last_error = e.what();
    return 1;
  }
  return 0;
}

extern "C" __attribute__((visibility("default"))) const char* apq_emulator_error() { return last_error.c_str(); }
