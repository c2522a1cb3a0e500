// Runs the sm_90a BGMMA kernel (csrc/cuda/bgmma_gemm_kernel.cuh, unchanged) on the CPU: the
// launch plan and tensor maps of bgmma_gemm.h with the emulated encoder, then every block of
// the grid in turn with one std::thread per CUDA thread, wgmma / TMA / mbarrier from
// sm90_machine.h. Built and called through ctypes by tests/test_emulated_bgmma.py; not part
// of the package.
#include "bgmma_gemm_kernel.cuh"
#include "emulated_params.h"

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

void run_block(const apq::cuda::BgmmaLaunch& l, const apq::cuda::BitplaneGemmParams& p, unsigned bx, unsigned by,
               uint64_t seed, bool lazy) {
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
        apq::cuda::bgmma_gemm_kernel<BgmmaTile>(l.map_a, l.map_b, p);
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

// Arguments: see emulated_params.h. `seed` drives which TMA copies land late (`lazy`).
// Returns 0, or 1 with the reason in apq_emulator_error().
extern "C" int apq_emulate_bgmma_gemm(const int64_t* ints, void* const* ptrs, uint64_t seed, int lazy) {
  const apq::cuda::BitplaneGemmParams p = emu::params_from_args(ints, ptrs);
  try {
    const apq::cuda::BgmmaLaunch l = apq::cuda::plan_bgmma_launch(emu90::encode_tensor_map, p);
    if (l.status != CUDA_SUCCESS) throw std::runtime_error("tensor map encoding failed");
    for (int64_t bx = 0; bx < l.grid_a; ++bx)
      for (int64_t by = 0; by < l.grid_b; ++by)
        run_block(l, p, static_cast<unsigned>(bx), static_cast<unsigned>(by), seed + 7919 * (bx * l.grid_b + by),
                  lazy != 0);
  } catch (const std::exception& e) {
    last_error = e.what();
    return 1;
  }
  return 0;
}

extern "C" const char* apq_emulator_error() { return last_error.c_str(); }
