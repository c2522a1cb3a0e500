// The fused bit-plane GEMM for sm_80 ... sm_90 (mma.sync m16n8k256 b1 AND-popc) with the
// shift-add recovery in registers.
//
// Plane slots (cutlass_ext/apq/plane_slots.hpp): a thread's accumulator rows hold planes of
// its own real rows, plane p of row u in slot u * bits + p, on both operands, so every plane
// pair of an output sits in one thread's registers and recovery is a Horner pass over them,
// with no shared memory and no barrier. Shared memory holds each k-tile in MMA order (stacked
// row = the accumulator row that reads it; the copy plan gathers the planes), so fragment
// addresses are the plain ldmatrix ones, fixed per lane. Bits are runtime arguments: they
// only decide which plane each stacked row holds and which slots are outputs.
//
// K runs in windows (bitplane_gemm.h's KWindows): the main loop runs whole 512-bit k-tiles
// while no window closes inside one (the steady state: a cp.async pipeline, two MMA steps
// with every fragment address fixed); a window closing inside a k-tile (groups of 64 ... 448
// bits) takes masked MMA steps up to the cut. When a window closes the thread recovers U in
// registers and either writes the output (one window), adds window_term to its fp32 results
// (K-groups, several windows), or stores a split-K partial for split_k_reduce.cuh to add up.
#pragma once

#include "bitplane_gemm.h"
#include "epilogue.cuh"

#include <apq/plane_slots.hpp>
#include <apq/plane_tile.hpp>

#include <cstdint>

namespace apq::cuda {

template <int WarpsA, int WarpsB, int MmaA, int MmaB, int Stages>
struct RegisterTile {
  static constexpr int kWarpsA = WarpsA, kWarpsB = WarpsB, kMmaA = MmaA, kMmaB = MmaB, kStages = Stages;
  static constexpr int kThreads = 32 * WarpsA * WarpsB;
  static constexpr int kSlotsA = 2 * MmaA, kSlotsB = 2 * MmaB;     // stacked rows per thread-row / -column
  static constexpr int kWarpStackA = 16 * MmaA, kWarpStackB = 8 * MmaB;
  static constexpr int kStackA = WarpsA * kWarpStackA, kStackB = WarpsB * kWarpStackB;
  static constexpr int kLoadsA = kStackA * ext::kChunksPerRow / kThreads;
  static constexpr int kLoadsB = kStackB * ext::kChunksPerRow / kThreads;
  static constexpr int kStageBytes = (kStackA + kStackB) * ext::kTileRowBytes;
  static constexpr int kPipelineBytes = Stages * kStageBytes;
  // fp32 results of several K-windows: in registers when they fit beside the accumulators,
  // else thread-private in shared memory after the pipeline (TileGeometry::smem_bytes).
  static constexpr bool kResultsInRegisters = kSlotsA * kSlotsB <= 64;

  static_assert(kSlotsA <= 32 && kSlotsB <= 32, "slot masks are 32-bit");
  static_assert(kSlotsA >= 8 && kSlotsB >= 8, "a thread holds the 8 planes of an 8-bit row");
  static_assert(MmaB % 2 == 0, "B fragments load two n8 tiles per ldmatrix.x4");
  static_assert(kStackA * ext::kChunksPerRow % kThreads == 0 && kStackB * ext::kChunksPerRow % kThreads == 0,
                "every thread issues the same number of 16-byte copies");
  static_assert(kThreads / ext::kChunksPerRow % 8 == 0, "a thread's copies share one swizzle phase");
  static_assert(Stages >= 2 && (Stages & (Stages - 1)) == 0, "cp.async pipeline of a power-of-two stage count");
};

// Stacked row `row` of an operand tile in MMA order: the lane-row (A: g) or lane-column (B: t)
// that reads it, its slot, and its warp along that operand.
struct StackedRow {
  int warp, slot, lane;
};
template <class Tile>
__device__ __forceinline__ StackedRow stacked_row_a(int row) {
  const int r = row % Tile::kWarpStackA;  // tile i = r / 16 holds slots 2i (rows g) and 2i + 1 (rows g + 8)
  return {row / Tile::kWarpStackA, 2 * (r / 16) + (r % 16) / 8, r % 8};
}
template <class Tile>
__device__ __forceinline__ StackedRow stacked_row_b(int row) {
  const int r = row % Tile::kWarpStackB;  // tile j = r / 8 holds slots 2j (columns 2t) and 2j + 1 (2t + 1)
  return {row / Tile::kWarpStackB, 2 * (r / 8) + (r % 2), (r % 8) / 2};
}

template <class Tile>
__global__ void __launch_bounds__(Tile::kThreads, 1) bitplane_gemm_kernel(const BitplaneGemmParams p) {
  extern __shared__ __align__(128) uint8_t smem[];
  constexpr int kSA = Tile::kSlotsA, kSB = Tile::kSlotsB;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_a = warp / Tile::kWarpsB, warp_b = warp % Tile::kWarpsB;
  const ext::SlotMap slots_a = ext::SlotMap::of<kSA>(p.a.bits), slots_b = ext::SlotMap::of<kSB>(p.b.bits);
  // Real rows: a block covers kWarpsA * 8 * slots_a.rows rows of a, lane-row g of warp w the
  // rows first + (w * slots_a.rows + u) * 8 + g; likewise b with 4 lane-columns.
  const int64_t a_first = static_cast<int64_t>(blockIdx.x) * (Tile::kWarpsA * 8 * slots_a.rows);
  const int64_t b_first = static_cast<int64_t>(blockIdx.y) * (Tile::kWarpsB * 4 * slots_b.rows);
  auto real_a = [&](int w, int u, int lane_row) { return a_first + (w * slots_a.rows + u) * 8 + lane_row; };
  auto real_b = [&](int w, int u, int lane_col) { return b_first + (w * slots_b.rows + u) * 4 + lane_col; };

  // ---- this block's run of K: whole windows, or (one window) any run of k-tiles ----
  const KWindows windows = KWindows::of(p);
  const bool single = windows.single();
  const KWindows::Run run = windows.split_run(blockIdx.z, p.split_bits);
  const int64_t bit_begin = run.begin, bit_end = run.end;
  const int kt_begin = static_cast<int>(bit_begin / kKTileBits);
  const int kt_end = static_cast<int>((bit_end + kKTileBits - 1) / kKTileBits);
  const bool split = gridDim.z > 1;

  // ---- gmem -> smem copy plan: kLoads 16-byte chunks per thread and k-tile ----
  // Idle slots and rows past the matrix copy 0 bytes (zero-fill): they add nothing.
  const int chunk = tid % ext::kChunksPerRow;  // the same for all of a thread's copies
  const uint32_t dst0 = ext::plane_tile_offset(tid / ext::kChunksPerRow, chunk);
  constexpr int kRowsPerLoad = Tile::kThreads / ext::kChunksPerRow;
  const uint32_t* src_a[Tile::kLoadsA];
  const uint32_t* src_b[Tile::kLoadsB];
  int bytes_a[Tile::kLoadsA], bytes_b[Tile::kLoadsB];
  auto plan = [&](const PlaneOperand& op, const ext::SlotMap& slots, int64_t real, int slot,
                  const uint32_t*& src, int& bytes) {
    const bool valid = slots.is_used(slot) && real < op.rows;
    src = op.planes + (valid ? (static_cast<int64_t>(slots.plane(slot)) * op.rows + real) * p.words + chunk * 4 : 0);
    bytes = valid ? 16 : 0;
  };
#pragma unroll
  for (int i = 0; i < Tile::kLoadsA; ++i) {
    const StackedRow r = stacked_row_a<Tile>(tid / ext::kChunksPerRow + i * kRowsPerLoad);
    plan(p.a, slots_a, real_a(r.warp, slots_a.row(r.slot), r.lane), r.slot, src_a[i], bytes_a[i]);
  }
#pragma unroll
  for (int i = 0; i < Tile::kLoadsB; ++i) {
    const StackedRow r = stacked_row_b<Tile>(tid / ext::kChunksPerRow + i * kRowsPerLoad);
    plan(p.b, slots_b, real_b(r.warp, slots_b.row(r.slot), r.lane), r.slot, src_b[i], bytes_b[i]);
  }
  const uint64_t policy_a = ext::l2_policy(p.a.read_once), policy_b = ext::l2_policy(p.b.read_once);

  const uint32_t smem_base = ext::shared_address(smem);
  auto stage_offset = [&](int kt) { return ((kt - kt_begin) & (Tile::kStages - 1)) * Tile::kStageBytes; };
  // This thread's chunk lies inside the rows' words in k-tiles below chunk_k_tiles (the last
  // k-tile may hold 256 bits only).
  const int chunk_k_tiles = static_cast<int>((p.words - chunk * 4 + 15) / 16);
  auto load_k_tile = [&](int kt) {
    const int in_k = kt < chunk_k_tiles ? 16 : 0;
    const uint32_t dst = smem_base + stage_offset(kt) + dst0;
    const int64_t k_bytes = static_cast<int64_t>(kt) * (kKTileBits / 8);
#pragma unroll
    for (int i = 0; i < Tile::kLoadsA; ++i)
      ext::cp_async_16(dst + i * kRowsPerLoad * ext::kTileRowBytes,
                       reinterpret_cast<const uint32_t*>(reinterpret_cast<const char*>(src_a[i]) + k_bytes),
                       bytes_a[i] & in_k, policy_a);
#pragma unroll
    for (int i = 0; i < Tile::kLoadsB; ++i)
      ext::cp_async_16(dst + (Tile::kStackA + i * kRowsPerLoad) * ext::kTileRowBytes,
                       reinterpret_cast<const uint32_t*>(reinterpret_cast<const char*>(src_b[i]) + k_bytes),
                       bytes_b[i] & in_k, policy_b);
  };

  // ---- the pipeline: k-tile kt sits in stage (kt - kt_begin) % kStages ----
#pragma unroll
  for (int s = 0; s < Tile::kStages - 1; ++s) {
    if (kt_begin + s < kt_end) load_k_tile(kt_begin + s);
    ext::cp_async_fence();
  }
  // Waits for k-tile kt (the next one in order), refills the stage freed by kt - 1, returns kt's stage.
  auto advance = [&](int kt) {
    ext::cp_async_wait<Tile::kStages - 2>();
    __syncthreads();
    if (kt + Tile::kStages - 1 < kt_end) load_k_tile(kt + Tile::kStages - 1);
    ext::cp_async_fence();
    return static_cast<const uint8_t*>(smem + stage_offset(kt));
  };

  // ---- fragments: fixed per-lane offsets of the two k-steps (plane_tile.hpp's layout) ----
  const uint32_t frag_a0 = ext::a_fragment_offset(warp_a * Tile::kWarpStackA, 0, lane);
  const uint32_t frag_a1 = ext::a_fragment_offset(warp_a * Tile::kWarpStackA, 1, lane);
  const uint32_t frag_b0 = ext::b_fragment_offset(Tile::kStackA + warp_b * Tile::kWarpStackB, 0, lane);
  const uint32_t frag_b1 = ext::b_fragment_offset(Tile::kStackA + warp_b * Tile::kWarpStackB, 1, lane);
  int32_t acc[Tile::kMmaA][Tile::kMmaB][4];
  // The accumulator of slot pair (sa, sb): C fragment rows g / g + 8, columns 2t / 2t + 1.
  auto slot_acc = [&](int sa, int sb) -> int32_t& { return acc[sa / 2][sb / 2][(sa % 2) * 2 + sb % 2]; };
  clear_accumulators(acc);

  // One k-step of every MMA tile of the warp; `a_offset` / `b_offset` are that step's frag_*.
  auto mma_step = [&](const uint8_t* stage, uint32_t a_offset, uint32_t b_offset, int lo, int hi) {
    uint32_t a[Tile::kMmaA][4], b[Tile::kMmaB / 2][4];
#pragma unroll
    for (int i = 0; i < Tile::kMmaA; ++i) ext::ldmatrix_x4(stage, a_offset + i * 16 * ext::kTileRowBytes, a[i]);
#pragma unroll
    for (int j = 0; j < Tile::kMmaB / 2; ++j) ext::ldmatrix_x4(stage, b_offset + j * 16 * ext::kTileRowBytes, b[j]);
    if (lo > 0 || hi < ext::kStepWords) {
#pragma unroll
      for (int i = 0; i < Tile::kMmaA; ++i) ext::mask_a_fragment(a[i], lane, lo, hi);
    }
#pragma unroll
    for (int i = 0; i < Tile::kMmaA; ++i)
#pragma unroll
      for (int j = 0; j < Tile::kMmaB; ++j) ext::mma_and_popc(acc[i][j], a[i], b[j / 2][2 * (j % 2)], b[j / 2][2 * (j % 2) + 1]);
  };

  // ---- outputs: slot pairs of planes (0, 0), walked with their real rows ----
  // f(sa, sb, o, ra, rb): o numbers the thread's outputs 0 ... slots_a.rows * slots_b.rows - 1.
  auto for_each_output = [&](auto&& f) {
    const uint32_t first_a = ext::opaque(slots_a.first), first_b = ext::opaque(slots_b.first);  // see recover_in_registers
    int ua = 0;
#pragma unroll
    for (int sa = 0; sa < kSA; ++sa) {
      if (!(first_a >> sa & 1u)) continue;
      const int64_t ra = real_a(warp_a, ua, lane >> 2);
      int ub = 0;
#pragma unroll
      for (int sb = 0; sb < kSB; ++sb) {
        if (!(first_b >> sb & 1u)) continue;
        const int64_t rb = real_b(warp_b, ub, lane & 3);
        if (ra < p.a.rows && rb < p.b.rows) f(sa, sb, ua * slots_b.rows + ub, ra, rb);
        ++ub;
      }
      ++ua;
    }
  };
  float result_regs[Tile::kResultsInRegisters ? kSA : 1][Tile::kResultsInRegisters ? kSB : 1];
  float* result_smem = reinterpret_cast<float*>(smem + Tile::kPipelineBytes);
  auto result = [&](int sa, int sb, int o) -> float& {
    if constexpr (Tile::kResultsInRegisters) {
      return result_regs[sa][sb];
    } else {
      return result_smem[o * Tile::kThreads + tid];  // thread-private: no barrier needed
    }
  };
  if (!single) for_each_output([&](int sa, int sb, int o, int64_t, int64_t) { result(sa, sb, o) = 0.f; });

  // ---- K-windows ----
  int64_t group = bit_begin / windows.group_bits;
  int64_t cut = single ? bit_end : windows.window_end(group, bit_begin);
  auto emit = [&](const epilogue::WindowClose& close) {
    for_each_output([&](int sa, int sb, int o, int64_t ra, int64_t rb) {
      epilogue::window_output(p, close, ra, rb, slot_acc(sa, sb), result(sa, sb, o));
    });
  };

  // ---- main loop: the MMAs of each window, then its outputs ----
  int kt = kt_begin;
  int64_t pos = bit_begin;  // the next bit of K to multiply
  const uint8_t* stage = nullptr;
  while (true) {
    while (pos < cut) {
      if (pos % kKTileBits == 0) {
        if (pos + kKTileBits <= cut) {
          // Steady state: whole k-tiles up to the k-tile holding the cut (its bound held in a
          // register, not recomputed from the 64-bit cut every k-tile).
          const int clean_end = static_cast<int>(ext::opaque(static_cast<uint32_t>(cut / kKTileBits)));
          for (; kt < clean_end; ++kt) {
            const uint8_t* s = advance(kt);
            mma_step(s, frag_a0, frag_b0, 0, ext::kStepWords);
            mma_step(s, frag_a1, frag_b1, 0, ext::kStepWords);
          }
          pos = static_cast<int64_t>(kt) * kKTileBits;
          continue;
        }
        stage = advance(kt);
      }
      // A window closes inside this k-tile: the words [lo, hi) of one k-step.
      const bool second_step = pos % kKTileBits >= 256;
      const int64_t step_end = pos - pos % 256 + 256;
      const int64_t seg_end = cut < step_end ? cut : step_end;
      mma_step(stage, second_step ? frag_a1 : frag_a0, second_step ? frag_b1 : frag_b0,
               static_cast<int>(pos % 256 / 32), static_cast<int>((seg_end - 1) % 256 / 32 + 1));
      pos = seg_end;
      if (pos % kKTileBits == 0) ++kt;
    }
    ext::recover_in_registers<kSA, kSB>(slot_acc, slots_a, slots_b);
    const bool closes_group = cut == windows.group_end(group), last = cut == bit_end;
    emit({single, split, closes_group, last, group, windows.group_len(group)});
    if (last) break;
    clear_accumulators(acc);
    if (closes_group) ++group;
    cut = windows.window_end(group, cut);
  }
  ext::cp_async_wait<0>();
}

// The two shipped shapes (gemm_plan.h's kWideGeometry / kNarrowGeometry): 8 warps of 64 x 64
// stacked rows for throughput, 4 warps of 64 x 32 for decode and split-K.
using WideTile = RegisterTile<2, 4, 4, 8, 4>;
using NarrowTile = RegisterTile<4, 1, 4, 4, 4>;

}  // namespace apq::cuda
