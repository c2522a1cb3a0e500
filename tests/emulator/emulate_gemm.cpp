// Runs the fused bit-plane GEMM kernel (csrc/cuda/bitplane_gemm_kernel.cuh, unchanged) on
// the CPU: every block of the grid in turn, each with one std::thread per CUDA thread.
// Built and called through ctypes by tests/test_emulated_kernel.py; not part of the package.
#include "bitplane_gemm_kernel.cuh"

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

// ints: a_rows a_bits a_row_stride a_group_stride  b_rows b_bits b_row_stride b_group_stride
//       words K group_size G exact out_type out_stride_a out_stride_b bias_type bias_on_a
// ptrs: a_planes a_rowsum a_scale a_offset  b_planes b_rowsum b_scale b_offset  out bias
extern "C" int apq_emulate_bitplane_gemm(int tile, const int64_t* ints, void* const* ptrs) {
  using namespace apq::cuda;
  BitplaneGemmParams p;
  auto side = [&](PlaneOperand& o, const int64_t* i, void* const* q) {
    o.rows = i[0];
    o.bits = static_cast<int>(i[1]);
    o.meta_row_stride = i[2];
    o.meta_group_stride = i[3];
    o.planes = static_cast<const uint32_t*>(q[0]);
    o.rowsum = static_cast<const int32_t*>(q[1]);
    o.scale = static_cast<const float*>(q[2]);
    o.offset = static_cast<const float*>(q[3]);
  };
  side(p.a, ints, ptrs);
  side(p.b, ints + 4, ptrs + 4);
  p.words = ints[8];
  p.K = ints[9];
  p.group_size = ints[10];
  p.G = ints[11];
  p.exact = ints[12] != 0;
  p.out_type = static_cast<ElemType>(ints[13]);
  p.out_stride_a = ints[14];
  p.out_stride_b = ints[15];
  p.bias_type = static_cast<ElemType>(ints[16]);
  p.bias_on_a = ints[17] != 0;
  p.out = ptrs[8];
  p.bias = ptrs[9];
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
