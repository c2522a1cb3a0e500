// The fused bit-plane GEMM for sm_80 ... sm_90 (mma.sync m16n8k256 b1 AND-popc).
//
// Plane stacking: a thread block owns TA rows of operand a and TB rows of operand b, and
// stacks their bit planes into one binary tile of kStackA x kStackB rows (plane p of real
// row r is stacked row p * TA + r, so TA = kStackA / a.bits at run time). The main loop is
// then a plain binary GEMM of the stacked tiles: every plane pair of the tile is computed
// from one shared-memory copy of its planes, with register accumulators whose count does
// not depend on the bit widths (bits stay runtime arguments).
//
// Recovery happens in the kernel when a K-window closes (the end of K, of a K-group, or of
// kMaxExactWindowBits): the stacked int32 tile is parked in shared memory and each output
// is rebuilt by shift-add, U = sum_{p,q} C[p*TA + a][q*TB + b] << (p + q), in place. Exact
// calls (apq::gemm) and single-window calls write U or the affine epilogue straight from
// there; multi-window calls (K-groups) accumulate sigma_a*sigma_b*(U + affine terms) in
// fp32 registers of the threads that hold the plane-(0,0) fragment and write at the end.
// No partial product matrix ever reaches global memory.
#pragma once

#include "bitplane_gemm.h"
#include "epilogue.cuh"
#include "gemm_plan.h"

#include <apq/plane_tile.hpp>

#include <cstdint>

namespace apq::cuda {

template <int StackA, int StackB, int WarpsA, int WarpsB, int Stages>
struct BitplaneTile {
  static constexpr int kStackA = StackA, kStackB = StackB;
  static constexpr int kWarpsA = WarpsA, kWarpsB = WarpsB;
  static constexpr int kStages = Stages;
  static constexpr int kThreads = 32 * WarpsA * WarpsB;
  static constexpr int kWarpRowsA = StackA / WarpsA;  // rows of a per warp
  static constexpr int kWarpRowsB = StackB / WarpsB;
  static constexpr int kMmaA = kWarpRowsA / 16;       // m16 tiles per warp
  static constexpr int kMmaB = kWarpRowsB / 8;        // n8 tiles per warp
  static constexpr int kLoadsA = StackA * ext::kChunksPerRow / kThreads;
  static constexpr int kLoadsB = StackB * ext::kChunksPerRow / kThreads;
  static constexpr int kStageBytes = (StackA + StackB) * ext::kTileRowBytes;
  static constexpr int kParkStride = StackB + 8;      // int32 per parked row (+8: fewer bank conflicts)
  static constexpr int kSmemBytes = Stages * kStageBytes + StackA * kParkStride * 4;

  static_assert(kWarpRowsA % 16 == 0 && kWarpRowsB % 16 == 0, "warp tile: m16 rows, pairs of n8 rows");
  static_assert(StackA * ext::kChunksPerRow % kThreads == 0 && StackB * ext::kChunksPerRow % kThreads == 0,
                "every thread issues the same number of 16-byte copies");
  static_assert(Stages >= 2, "cp.async pipeline needs two stages at least");
};

// The two shipped shapes (TileConfig): 8 warps x 4 stages, and 2 warps x 6 stages for decode.
using LargeTile = BitplaneTile<kLargeGeometry.slots_a, kLargeGeometry.slots_b, 2, 4, 4>;
using SkinnyTile = BitplaneTile<kSkinnyGeometry.slots_a, kSkinnyGeometry.slots_b, 2, 1, 6>;


template <class Tile>
__global__ void __launch_bounds__(Tile::kThreads, 1) bitplane_gemm_kernel(const BitplaneGemmParams p) {
  extern __shared__ __align__(128) uint8_t smem[];
  int32_t* parked = reinterpret_cast<int32_t*>(smem + Tile::kStages * Tile::kStageBytes);  // (kStackA, kParkStride)

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_a = warp / Tile::kWarpsB, warp_b = warp % Tile::kWarpsB;
  const int bits_a = p.a.bits, bits_b = p.b.bits;
  const int TA = Tile::kStackA / bits_a, TB = Tile::kStackB / bits_b;  // real rows per block
  const int64_t a_first = static_cast<int64_t>(blockIdx.x) * TA;
  const int64_t b_first = static_cast<int64_t>(blockIdx.y) * TB;
  const int64_t words = p.words;
  const int64_t k_tiles = (words + 15) / 16;  // 512-bit pipeline stages
  const int64_t padded_bits = words * 32;

  // ---- gmem -> smem copy plan: each thread moves kLoads 16-byte chunks of stacked rows ----
  // A stacked row beyond the bit count or the matrix is zero-filled: it adds nothing.
  const uint32_t* src_a[Tile::kLoadsA];
  uint32_t dst_a[Tile::kLoadsA];
  int word_a[Tile::kLoadsA];
  const uint32_t* src_b[Tile::kLoadsB];
  uint32_t dst_b[Tile::kLoadsB];
  int word_b[Tile::kLoadsB];
  auto plan = [&](const PlaneOperand& op, int rows_per_plane, int64_t first, int chunk_id, const uint32_t*& src,
                  uint32_t& dst, int& word) {
    const int row = chunk_id / ext::kChunksPerRow, chunk = chunk_id % ext::kChunksPerRow;
    const int plane = row / rows_per_plane;
    const int64_t r = first + row % rows_per_plane;
    const bool valid = plane < op.bits && r < op.rows;
    src = valid ? op.planes + (static_cast<int64_t>(plane) * op.rows + r) * words + chunk * 4 : nullptr;
    dst = ext::plane_tile_offset(row, chunk);
    word = chunk * 4;
  };
#pragma unroll
  for (int i = 0; i < Tile::kLoadsA; ++i) plan(p.a, TA, a_first, tid + i * Tile::kThreads, src_a[i], dst_a[i], word_a[i]);
#pragma unroll
  for (int i = 0; i < Tile::kLoadsB; ++i) plan(p.b, TB, b_first, tid + i * Tile::kThreads, src_b[i], dst_b[i], word_b[i]);

  auto load_stage = [&](int64_t k_tile) {
    uint8_t* tile_a = smem + (k_tile % Tile::kStages) * Tile::kStageBytes;
    uint8_t* tile_b = tile_a + Tile::kStackA * ext::kTileRowBytes;
    const int64_t w0 = k_tile * 16;
#pragma unroll
    for (int i = 0; i < Tile::kLoadsA; ++i) {
      const bool v = src_a[i] != nullptr && w0 + word_a[i] < words;
      ext::cp_async_16(tile_a + dst_a[i], v ? src_a[i] + w0 : p.a.planes, v);
    }
#pragma unroll
    for (int i = 0; i < Tile::kLoadsB; ++i) {
      const bool v = src_b[i] != nullptr && w0 + word_b[i] < words;
      ext::cp_async_16(tile_b + dst_b[i], v ? src_b[i] + w0 : p.b.planes, v);
    }
  };

  // ---- accumulators: stacked popcounts (int32) and, for K-groups, the fp32 result ----
  int32_t acc[Tile::kMmaA][Tile::kMmaB][4];
  float result[Tile::kMmaA][Tile::kMmaB][4];
  // f(i, j, q, row, col) for every accumulator element of this thread, with its stacked
  // coordinates (C fragment: rows g and g + 8, columns 2t and 2t + 1 of each 16 x 8 tile).
  auto for_each_element = [&](auto&& f) {
#pragma unroll
    for (int i = 0; i < Tile::kMmaA; ++i)
#pragma unroll
      for (int j = 0; j < Tile::kMmaB; ++j)
#pragma unroll
        for (int q = 0; q < 4; ++q)
          f(i, j, q, warp_a * Tile::kWarpRowsA + i * 16 + (lane >> 2) + 8 * (q >> 1),
            warp_b * Tile::kWarpRowsB + j * 8 + 2 * (lane & 3) + (q & 1));
  };
  for_each_element([&](int i, int j, int q, int, int) { acc[i][j][q] = 0, result[i][j][q] = 0.f; });

  // One k-step (256 bits) of every plane pair, restricted to the words [lo, hi).
  auto mma_step = [&](const uint8_t* tile_a, const uint8_t* tile_b, int step, int lo, int hi) {
    uint32_t b_frag[Tile::kMmaB / 2][4];
#pragma unroll
    for (int j = 0; j < Tile::kMmaB / 2; ++j)
      ext::load_b_fragments(tile_b, warp_b * Tile::kWarpRowsB + j * 16, step, lane, b_frag[j]);
#pragma unroll
    for (int i = 0; i < Tile::kMmaA; ++i) {
      uint32_t a_frag[4];
      ext::load_a_fragment(tile_a, warp_a * Tile::kWarpRowsA + i * 16, step, lane, a_frag);
      if (lo > 0 || hi < ext::kStepWords) ext::mask_a_fragment(a_frag, lane, lo, hi);
#pragma unroll
      for (int j = 0; j < Tile::kMmaB; ++j)
        ext::mma_and_popc(acc[i][j], a_frag, b_frag[j / 2][2 * (j % 2)], b_frag[j / 2][2 * (j % 2) + 1]);
    }
  };

  // ---- K-windows: exact int32 runs of K that end at group ends (or every kMaxExactWindowBits) ----
  const KWindows windows = KWindows::of(p);
  const bool direct = windows.single();
  int64_t group = 0;
  int64_t next_cut = windows.window_end(0, 0);

  // Park the stacked sums, shift-add them per output, then write or accumulate.
  auto close_window = [&](bool closes_group, bool last) {
    __syncthreads();  // the previous window's readers of `parked` are done
    for_each_element([&](int i, int j, int q, int row, int col) {
      parked[row * Tile::kParkStride + col] = acc[i][j][q];
      acc[i][j][q] = 0;
    });
    __syncthreads();
    const int64_t group_len = windows.group_len(group);
    for (int o = tid; o < TA * TB; o += Tile::kThreads) {
      const int a = o / TB, b = o % TB;
      int32_t U = 0;
      for (int pa = 0; pa < bits_a; ++pa)
        for (int pb = 0; pb < bits_b; ++pb) U += parked[(pa * TA + a) * Tile::kParkStride + pb * TB + b] << (pa + pb);
      const int64_t ra = a_first + a, rb = b_first + b;
      if (!direct) {
        parked[a * Tile::kParkStride + b] = U;  // plane (0, 0) of this output: read by no other output
      } else if (ra < p.a.rows && rb < p.b.rows) {
        if (p.exact) {
          static_cast<int32_t*>(p.out)[ra * p.out_stride_a + rb * p.out_stride_b] = U;
        } else {
          epilogue::store_float(p, ra, rb, epilogue::window_term(p, ra, rb, U, group, true, group_len));
        }
      }
    }
    if (direct) return;
    __syncthreads();
    // The thread holding plane (0, 0) of an output, (row, col) = (a, b), owns its result.
    for_each_element([&](int i, int j, int q, int a, int b) {
      const int64_t ra = a_first + a, rb = b_first + b;
      if (a >= TA || b >= TB || ra >= p.a.rows || rb >= p.b.rows) return;
      result[i][j][q] += epilogue::window_term(p, ra, rb, parked[a * Tile::kParkStride + b], group,
                                             closes_group, group_len);
      if (last) epilogue::store_float(p, ra, rb, result[i][j][q]);
    });
  };

  // ---- prologue: fill kStages - 1 stages ----
#pragma unroll
  for (int s = 0; s < Tile::kStages - 1; ++s) {
    if (s < k_tiles) load_stage(s);
    ext::cp_async_fence();
  }

  // ---- main loop ----
  for (int64_t kt = 0; kt < k_tiles; ++kt) {
    ext::cp_async_wait<Tile::kStages - 2>();
    __syncthreads();  // stage kt is visible to all; stage kt - 1 is free to refill
    if (kt + Tile::kStages - 1 < k_tiles) load_stage(kt + Tile::kStages - 1);
    ext::cp_async_fence();

    const uint8_t* tile_a = smem + (kt % Tile::kStages) * Tile::kStageBytes;
    const uint8_t* tile_b = tile_a + Tile::kStackA * ext::kTileRowBytes;
#pragma unroll
    for (int step = 0; step < ext::kStepsPerStage; ++step) {
      const int64_t k_bit = kt * 512 + step * 256;
      if (k_bit >= padded_bits) break;
      int lo = 0;
      while (true) {  // split the step where windows close (block-uniform: depends on k only)
        const int64_t until_cut = next_cut - k_bit;
        const int hi = until_cut >= 256 ? ext::kStepWords : static_cast<int>(until_cut / 32);
        if (hi > lo) mma_step(tile_a, tile_b, step, lo, hi);
        if (until_cut > 256) break;
        const bool closes_group = next_cut == windows.group_end(group);
        const bool last = windows.is_last(group, next_cut);
        close_window(closes_group, last);
        if (last) {
          next_cut = INT64_MAX;
          break;
        }
        if (closes_group) ++group;
        next_cut = windows.window_end(group, next_cut);
        lo = hi;
        if (lo >= ext::kStepWords) break;
      }
    }
  }
  ext::cp_async_wait<0>();
}

}  // namespace apq::cuda
