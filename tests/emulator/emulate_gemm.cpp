// Runs the fused bit-plane GEMM kernel (csrc/cuda/bitplane_gemm_kernel.cuh, unchanged) on
// the CPU: every block of the grid in turn, each with one std::thread per CUDA thread.
// Built and called through ctypes by tests/test_emulated_kernel.py; not part of the package.
#include "bitplane_gemm_kernel.cuh"
#include "emulated_params.h"

#include <exception>
#include <memory>
#include <thread>
#include <vector>

thread_local emu::ThreadContext emu::ctx;

namespace apq::cuda {
alignas(128) uint8_t smem[200 * 1024];  // the kernel's `extern __shared__` buffer
}

namespace {

using apq::cuda::BitplaneGemmParams;

template <class Tile>
void emulate(const BitplaneGemmParams& p) {
  const int64_t rows_a = Tile::kStackA / p.a.bits, rows_b = Tile::kStackB / p.b.bits;
  const int64_t grid_a = (p.a.rows + rows_a - 1) / rows_a, grid_b = (p.b.rows + rows_b - 1) / rows_b;
  static_assert(Tile::kSmemBytes <= sizeof(apq::cuda::smem));
  constexpr int kWarps = Tile::kThreads / 32;
  for (int64_t bx = 0; bx < grid_a; ++bx) {
    for (int64_t by = 0; by < grid_b; ++by) {
      std::memset(apq::cuda::smem, 0x5A, sizeof(apq::cuda::smem));  // stale shared memory
      std::barrier<> block(Tile::kThreads);
      std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
      for (int w = 0; w < kWarps; ++w) warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
      std::vector<emu::WarpExchange> exchange(kWarps);
      std::vector<std::thread> threads;
      for (int t = 0; t < Tile::kThreads; ++t) {
        threads.emplace_back([&, t] {
          emu::ctx.thread = {static_cast<unsigned>(t), 0, 0};
          emu::ctx.block = {static_cast<unsigned>(bx), static_cast<unsigned>(by), 0};
          emu::ctx.block_barrier = &block;
          emu::ctx.warp_barrier = warp_barriers[t / 32].get();
          emu::ctx.warp = &exchange[t / 32];
          apq::cuda::bitplane_gemm_kernel<Tile>(p);
        });
      }
      for (auto& th : threads) th.join();
    }
  }
}

}  // namespace

// Arguments: see emulated_params.h.
extern "C" int apq_emulate_bitplane_gemm(int tile, const int64_t* ints, void* const* ptrs) {
  using namespace apq::cuda;
  const BitplaneGemmParams p = emu::params_from_args(ints, ptrs);
  try {
    if (tile == static_cast<int>(TileConfig::Large)) {
      emulate<LargeTile>(p);
    } else {
      emulate<SkinnyTile>(p);
    }
  } catch (const std::exception&) {
    return 1;
  }
  return 0;
}
