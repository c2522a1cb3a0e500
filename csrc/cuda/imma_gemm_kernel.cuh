// The integer-MMA bit-plane GEMM for sm_80 ... sm_90: for large a_bits * b_bits, where the b1
// kernel's plane pairs grow as the product, the planes are expanded back into 8-bit codes in
// shared memory and multiplied with mma.sync m16n8k32 .u8 (IMMA): 8 MMAs per 16 x 8 outputs
// and 256 bits of K whatever the bit widths, against a_bits * b_bits b1 MMAs.
//
// Per 128-bit k-tile (imma_gemm.h): cp.async copies each row's plane chunks into a stage of a
// 3-stage ring; after the barrier that opens k-tile kt, every thread expands one row of k-tile
// kt + 1 into the free code tile (code_tile.hpp's bit transpose: 4 x 12 swaps per row) while
// its warp multiplies k-tile kt from the other one (4 steps of 4 x 4 MMAs per warp, fragments
// by ldmatrix), so one barrier per k-tile orders both. Codes are unsigned (< 2^bits), so the
// u8 MMA is exact, and the accumulator holds U itself: no recovery. K-windows (KWindows) and
// what a closing window writes are the b1 kernel's (epilogue::window_output); a window
// closes on a 32-bit MMA step, since K-groups end on multiples of 64 bits.
#pragma once

#include "epilogue.cuh"
#include "imma_gemm.h"

#include <apq/code_tile.hpp>
#include <apq/sm80_u8_primitives.hpp>

#include <cstdint>

namespace apq::cuda {

__global__ void __launch_bounds__(ImmaTile::kThreads, 1) imma_gemm_kernel(const BitplaneGemmParams p) {
  using Tile = ImmaTile;
  static_assert(Tile::kKTileBits == ext::kCodeRowBytes, "a code-tile row holds one k-tile");
  extern __shared__ __align__(128) uint8_t smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_a = warp / Tile::kWarpsB, warp_b = warp % Tile::kWarpsB;
  const int64_t a_first = static_cast<int64_t>(blockIdx.x) * Tile::kRowsA;
  const int64_t b_first = static_cast<int64_t>(blockIdx.y) * Tile::kRowsB;

  // ---- this block's run of K ----
  const KWindows windows = KWindows::of(p);
  const bool single = windows.single(), split = gridDim.z > 1;
  const KWindows::Run run = windows.split_run(blockIdx.z, p.split_bits);
  const int kt_begin = static_cast<int>(run.begin / Tile::kKTileBits);
  const int kt_end = static_cast<int>((run.end + Tile::kKTileBits - 1) / Tile::kKTileBits);

  // ---- one row per thread: tid < kRowsA row tid of a, else row tid - kRowsA of b ----
  // The thread copies that row's plane chunks of each k-tile and expands them into codes: it
  // reads only its own copies. Every stage has room for 8 planes; planes past the bits, and
  // rows past the matrix, copy 0 bytes (zero-fill: codes 0), so the expansion reads all 8
  // planes without a predicate.
  const bool on_a = tid < Tile::kRowsA;
  const PlaneOperand& op = on_a ? p.a : p.b;
  const int row_bits = op.bits;
  const int64_t row = on_a ? a_first + tid : b_first + tid - Tile::kRowsA;
  // Bit p: plane p of the row is copied (16 bytes), else zero-filled.
  const uint32_t copied_planes = row < op.rows ? (1u << row_bits) - 1 : 0u;
  const uint32_t* row_planes = op.planes + (row < op.rows ? row : 0) * p.words;
  const int64_t plane_words = op.rows * p.words;
  const uint32_t row_chunk = tid * 16;  // plane 0's chunk of the thread's row in a stage
  const uint32_t smem_base = ext::shared_address(smem);
  auto stage_offset = [](int stage) { return 2 * Tile::kCodeTileBytes + stage * Tile::kStageBytes; };
  auto load_k_tile = [&](int kt, int stage) {
    const uint32_t dst = smem_base + stage_offset(stage) + row_chunk;
    const uint32_t* src = row_planes + static_cast<int64_t>(kt) * (Tile::kKTileBits / 32);
#pragma unroll
    for (int plane = 0; plane < 8; ++plane) {
      // (src runs past the operand for absent planes, which read no byte of it)
      ext::cp_async_16(dst + plane * Tile::kPlaneStride, src, (copied_planes >> plane & 1u) * 16);
      src += plane_words;  // a running pointer: one 64-bit add per plane, no multiply
    }
  };
  auto code_tile = [&](int kt) { return smem + ((kt - kt_begin) & 1) * Tile::kCodeTileBytes; };
  // Two passes of two words (64 bits of K) over the planes, to hold 16 plane words, not 32.
  auto expand_k_tile = [&](int kt, int stage) {
    const uint8_t* chunks = smem + stage_offset(stage) + row_chunk;
    uint8_t* codes = code_tile(kt);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      uint32_t words[8][2];  // [plane][word]
#pragma unroll
      for (int plane = 0; plane < 8; ++plane) {
        const uint2 w = *reinterpret_cast<const uint2*>(chunks + plane * Tile::kPlaneStride + half * 8);
        words[plane][0] = w.x, words[plane][1] = w.y;
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        uint32_t x[8];
#pragma unroll
        for (int plane = 0; plane < 8; ++plane) x[plane] = words[plane][j];
        ext::transpose_planes_to_codes(x);
        const int step = 2 * half + j;
        *reinterpret_cast<uint4*>(codes + ext::code_tile_offset(tid, 2 * step)) = make_uint4(x[0], x[1], x[2], x[3]);
        *reinterpret_cast<uint4*>(codes + ext::code_tile_offset(tid, 2 * step + 1)) = make_uint4(x[4], x[5], x[6], x[7]);
      }
    }
  };

  // ---- MMAs: one 32-bit k-step of the warp's 4 x 4 tiles ----
  const int a_row0 = warp_a * 16 * Tile::kMmaA, b_row0 = Tile::kRowsA + warp_b * 8 * Tile::kMmaB;
  int32_t acc[Tile::kMmaA][Tile::kMmaB][4];
  clear_accumulators(acc);
  // Rows 16 apart share their swizzle: tile i's fragment is 16 * i rows past tile 0's.
  auto mma_step = [&](const uint8_t* codes, int step) {
    const uint32_t a_offset = ext::a_code_fragment_offset(a_row0, step, lane);
    const uint32_t b_offset = ext::b_code_fragment_offset(b_row0, step, lane);
    uint32_t a[Tile::kMmaA][4], b[Tile::kMmaB / 2][4];
#pragma unroll
    for (int i = 0; i < Tile::kMmaA; ++i) ext::ldmatrix_x4(codes, a_offset + i * 16 * ext::kCodeRowBytes, a[i]);
#pragma unroll
    for (int j = 0; j < Tile::kMmaB / 2; ++j) ext::ldmatrix_x4(codes, b_offset + j * 16 * ext::kCodeRowBytes, b[j]);
#pragma unroll
    for (int i = 0; i < Tile::kMmaA; ++i)
#pragma unroll
      for (int j = 0; j < Tile::kMmaB; ++j) ext::mma_u8(acc[i][j], a[i], b[j / 2][2 * (j % 2)], b[j / 2][2 * (j % 2) + 1]);
  };

  // ---- outputs: accumulator (i, j, q) is row g (+ 8) of m16 tile i, column 2t (+ 1) of n8 tile j ----
  float result[Tile::kMmaA][Tile::kMmaB][4];  // fp32 results of several K-windows
  auto for_each_output = [&](auto&& f) {
#pragma unroll
    for (int i = 0; i < Tile::kMmaA; ++i)
#pragma unroll
      for (int j = 0; j < Tile::kMmaB; ++j)
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int64_t ra = a_first + a_row0 + 16 * i + (lane >> 2) + 8 * (q >> 1);
          const int64_t rb = b_first + (b_row0 - Tile::kRowsA) + 8 * j + 2 * (lane & 3) + (q & 1);
          if (ra < p.a.rows && rb < p.b.rows) f(acc[i][j][q], result[i][j][q], ra, rb);
        }
  };
  if (!single) for_each_output([](int32_t, float& r, int64_t, int64_t) { r = 0.f; });

  // ---- K-windows: close_window emits the window ending at `cut`; true after the last ----
  int64_t group = run.begin / windows.group_bits;
  int64_t cut = single ? run.end : windows.window_end(group, run.begin);
  auto close_window = [&] {
    const bool closes_group = cut == windows.group_end(group), last = cut == run.end;
    const epilogue::WindowClose close{single, split, closes_group, last, group, windows.group_len(group)};
    for_each_output([&](int32_t U, float& r, int64_t ra, int64_t rb) { epilogue::window_output(p, close, ra, rb, U, r); });
    if (last) return true;
    clear_accumulators(acc);
    if (closes_group) ++group;
    cut = windows.window_end(group, cut);
    return false;
  };

  // ---- pipeline: planes of k-tile kt in stage (kt - kt_begin) % kStages, codes in code tile (kt - kt_begin) % 2 ----
#pragma unroll
  for (int s = 0; s < Tile::kStages; ++s) {
    if (kt_begin + s < kt_end) load_k_tile(kt_begin + s, s);
    ext::cp_async_fence();
  }
  ext::cp_async_wait<Tile::kStages - 1>();
  __syncthreads();
  expand_k_tile(kt_begin, 0);
  // The stages of k-tiles kt (refilled with kt + kStages once kt is expanded) and kt + 1.
  int stage = 0, next_stage = 1;
  for (int kt = kt_begin; kt < kt_end; ++kt) {
    // k-tile kt + 1's planes have landed; kt's codes are complete; nobody reads kt - 1's codes
    // or kt's planes any more.
    ext::cp_async_wait<Tile::kStages - 2>();
    __syncthreads();
    if (kt + Tile::kStages < kt_end) load_k_tile(kt + Tile::kStages, stage);
    ext::cp_async_fence();
    if (kt + 1 < kt_end) expand_k_tile(kt + 1, next_stage);
    stage = next_stage;
    next_stage = next_stage + 1 == Tile::kStages ? 0 : next_stage + 1;
    const uint8_t* codes = code_tile(kt);
    if (static_cast<int64_t>(kt + 1) * Tile::kKTileBits < cut) {  // steady state: no window closes here
#pragma unroll
      for (int step = 0; step < ext::kCodeSteps; ++step) mma_step(codes, step);
      continue;
    }
    bool done = false;
    int64_t pos = static_cast<int64_t>(kt) * Tile::kKTileBits;
#pragma unroll 1
    for (int step = 0; step < ext::kCodeSteps && !done; ++step) {
      mma_step(codes, step);
      pos += 32;
      if (pos == cut) done = close_window();
    }
    if (done) break;
  }
  ext::cp_async_wait<0>();
}

}  // namespace apq::cuda
