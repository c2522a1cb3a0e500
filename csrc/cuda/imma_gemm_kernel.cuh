// The integer-MMA bit-plane GEMM for sm_80 ... sm_90: for large a_bits * b_bits, where the b1
// kernel's plane pairs grow as the product, the planes are expanded back into 8-bit codes in
// shared memory and multiplied with u8 MMAs: 8 mma.sync m16n8k32 (IMMA) per 16 x 8 outputs and
// 256 bits of K whatever the bit widths, against a_bits * b_bits b1 MMAs; on sm_90a the same
// kernel with wgmma m64n128k32 (IGMMA) instead (ImmaWarpgroup below).
//
// Per 128-bit k-tile (imma_gemm.h): cp.async copies each row's plane chunks into a stage of a
// 3-stage ring; after the barrier that opens k-tile kt, the warps multiply k-tile kt from one
// code tile while every thread expands one row of k-tile kt + 1 into the other
// (code_tile.hpp's bit transpose: 4 x 12 swaps per row), so one barrier per k-tile orders
// both. Codes are unsigned (< 2^bits), so the u8 MMA is exact, and the accumulator holds U
// itself: no recovery. K-windows (KWindows) and what a closing window writes are the b1
// kernel's (epilogue::window_output); a window closes on a 32-bit MMA step, since K-groups end
// on multiples of 64 bits.
#pragma once

#include "epilogue.cuh"
#include "imma_gemm.h"

#include <apq/code_tile.hpp>
#include <apq/sm80_u8_primitives.hpp>
#include <apq/sm90_tma_pipeline.hpp>
#include <apq/sm90_u8_gmma.hpp>

#include <cstdint>

// wgmma exists in the sm_90a device pass (and on the host, for the CPU emulator) only.
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define APQ_IGMMA_BODY 0
#else
#define APQ_IGMMA_BODY 1
#endif

namespace apq::cuda {

// How the 8 warps multiply a code tile, and which outputs a thread's accumulators hold:
// acc[i][j][q] is row a_row0 + 16 i + g + 8 (q / 2) of a, row b_row0 + 8 j + 2 t + q % 2 of b
// (g = lane / 4, t = lane % 4), for both.
//   ImmaSync (sm_80 ... sm_90): mma.sync m16n8k32 .u8, a warp's 64 x 32 outputs, fragments by
//     ldmatrix; synchronous.
//   ImmaWarpgroup (sm_90a): wgmma m64n128k32 .u8 of a warpgroup's 64 x 128 outputs, A and B
//     read from the code tile through descriptors (its rows are 128-byte swizzled rows, the
//     tile 1024-byte aligned); asynchronous: `retire` waits, and expansion stores are made
//     visible to wgmma's async proxy (`publish`) before the barrier that opens the k-tile.
struct ImmaSync {
  static constexpr int kTilesA = ImmaTile::kMmaA, kTilesB = ImmaTile::kMmaB;
  static constexpr bool kWarpgroup = false;
  static constexpr int kSmemAlign = 128;
  __device__ static int a_row0(int warp) { return warp / ImmaTile::kWarpsB * 16 * kTilesA; }
  __device__ static int b_row0(int warp) { return warp % ImmaTile::kWarpsB * 8 * kTilesB; }
  // Steps [first, last) of the k-tile in `codes`. Rows 16 apart share their swizzle: tile i's
  // fragment is 16 * i rows past tile 0's.
  __device__ static void multiply(const uint8_t* codes, uint32_t, int first, int last, int warp, int lane,
                                  int32_t (&acc)[kTilesA][kTilesB][4]) {
#pragma unroll
    for (int step = first; step < last; ++step) {
      const uint32_t a_offset = ext::a_code_fragment_offset(a_row0(warp), step, lane);
      const uint32_t b_offset = ext::b_code_fragment_offset(ImmaTile::kRowsA + b_row0(warp), step, lane);
      uint32_t a[kTilesA][4], b[kTilesB / 2][4];
#pragma unroll
      for (int i = 0; i < kTilesA; ++i) ext::ldmatrix_x4(codes, a_offset + i * 16 * ext::kCodeRowBytes, a[i]);
#pragma unroll
      for (int j = 0; j < kTilesB / 2; ++j) ext::ldmatrix_x4(codes, b_offset + j * 16 * ext::kCodeRowBytes, b[j]);
#pragma unroll
      for (int i = 0; i < kTilesA; ++i)
#pragma unroll
        for (int j = 0; j < kTilesB; ++j) ext::mma_u8(acc[i][j], a[i], b[j / 2][2 * (j % 2)], b[j / 2][2 * (j % 2) + 1]);
    }
  }
  __device__ static void retire(int32_t (&)[kTilesA][kTilesB][4]) {}
  __device__ static void publish() {}
};

struct ImmaWarpgroup {
  static constexpr int kTilesA = 1, kTilesB = ImmaTile::kRowsB / 8;
  static constexpr bool kWarpgroup = true;
  static constexpr int kSmemAlign = ImmaTile::kWarpgroupAlign;
  static_assert(ImmaTile::kRowsA == 2 * 64 && ImmaTile::kRowsB == 128 && ImmaTile::kThreads == 256,
                "two warpgroups, each 64 rows of a by all 128 rows of b");
  __device__ static int a_row0(int warp) { return 16 * warp; }
  __device__ static int b_row0(int) { return 0; }
  __device__ static uint32_t* d_registers(int32_t (&acc)[kTilesA][kTilesB][4]) {
    return reinterpret_cast<uint32_t*>(&acc[0][0][0]);
  }
  // Issues steps [first, last) of the k-tile whose code tile starts at shared address `tile`
  // (its rows 128 bytes, 8-row groups 1024 bytes apart; a step is 32 bytes further along K).
  __device__ static void multiply(const uint8_t*, uint32_t tile, int first, int last, int warp, int,
                                  int32_t (&acc)[kTilesA][kTilesB][4]) {
    uint32_t(&d)[64] = *reinterpret_cast<uint32_t(*)[64]>(d_registers(acc));
    const uint32_t a_rows = tile + (warp / 4) * 64 * ext::kCodeRowBytes;
    const uint32_t b_rows = tile + ImmaTile::kRowsA * ext::kCodeRowBytes;
    ext::gmma_fence_operands(d);
    ext::gmma_fence();
#pragma unroll
    for (int step = first; step < last; ++step) {
      ext::gmma_u8(d, ext::gmma_desc_k_sw128(a_rows + 32 * step, 8 * ext::kCodeRowBytes),
                   ext::gmma_desc_k_sw128(b_rows + 32 * step, 8 * ext::kCodeRowBytes), 1);
    }
    ext::gmma_commit();
    ext::gmma_fence_operands(d);
  }
  __device__ static void retire(int32_t (&acc)[kTilesA][kTilesB][4]) {
    uint32_t(&d)[64] = *reinterpret_cast<uint32_t(*)[64]>(d_registers(acc));
    ext::gmma_wait<0>();
    ext::gmma_fence_operands(d);
  }
  __device__ static void publish() { ext::fence_async_proxy(); }
};

template <class Mma>
__device__ __forceinline__ void imma_gemm(const BitplaneGemmParams& p) {
  using Tile = ImmaTile;
  static_assert(Tile::kKTileBits == ext::kCodeRowBytes, "a code-tile row holds one k-tile");
  extern __shared__ __align__(128) uint8_t smem[];
  uint8_t* const block_smem = smem + (Mma::kSmemAlign - ext::shared_address(smem) % Mma::kSmemAlign) % Mma::kSmemAlign;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
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
  const uint32_t smem_base = ext::shared_address(block_smem);
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
  auto code_tile = [&](int kt) { return block_smem + ((kt - kt_begin) & 1) * Tile::kCodeTileBytes; };
  // Two passes of two words (64 bits of K) over the planes, to hold 16 plane words, not 32.
  auto expand_k_tile = [&](int kt, int stage) {
    const uint8_t* chunks = block_smem + stage_offset(stage) + row_chunk;
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

  // ---- MMAs and their accumulators ----
  const int a_row0 = Mma::a_row0(warp), b_row0 = Mma::b_row0(warp);
  int32_t acc[Mma::kTilesA][Mma::kTilesB][4];
  clear_accumulators(acc);

  // ---- outputs: accumulator (i, j, q) is row g (+ 8) of m16 tile i, column 2t (+ 1) of n8 tile j ----
  float result[Mma::kTilesA][Mma::kTilesB][4];  // fp32 results of several K-windows
  auto for_each_output = [&](auto&& f) {
#pragma unroll
    for (int i = 0; i < Mma::kTilesA; ++i)
#pragma unroll
      for (int j = 0; j < Mma::kTilesB; ++j)
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int64_t ra = a_first + a_row0 + 16 * i + (lane >> 2) + 8 * (q >> 1);
          const int64_t rb = b_first + b_row0 + 8 * j + 2 * (lane & 3) + (q & 1);
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
  Mma::publish();
  // The stages of k-tiles kt (refilled with kt + kStages once kt is expanded) and kt + 1.
  int stage = 0, next_stage = 1;
  for (int kt = kt_begin; kt < kt_end; ++kt) {
    // k-tile kt + 1's planes have landed; kt's codes are complete; nobody reads kt - 1's codes
    // (their MMAs have retired) or kt's planes any more.
    Mma::retire(acc);
    ext::cp_async_wait<Tile::kStages - 2>();
    __syncthreads();
    if (kt + Tile::kStages < kt_end) load_k_tile(kt + Tile::kStages, stage);
    ext::cp_async_fence();
    const uint8_t* codes = code_tile(kt);
    const uint32_t codes_address = smem_base + static_cast<uint32_t>(codes - block_smem);
    // Steady state (no window closes in this k-tile): the whole k-tile's MMAs, then the
    // expansion of the next (which wgmma overlaps).
    const bool steady = static_cast<int64_t>(kt + 1) * Tile::kKTileBits < cut;
    if (steady) Mma::multiply(codes, codes_address, 0, ext::kCodeSteps, warp, lane, acc);
    if (kt + 1 < kt_end) {
      expand_k_tile(kt + 1, next_stage);
      Mma::publish();
    }
    stage = next_stage;
    next_stage = next_stage + 1 == Tile::kStages ? 0 : next_stage + 1;
    if (steady) continue;
    bool done = false;
    int64_t pos = static_cast<int64_t>(kt) * Tile::kKTileBits;
#pragma unroll 1
    for (int step = 0; step < ext::kCodeSteps && !done; ++step) {
      Mma::multiply(codes, codes_address, step, step + 1, warp, lane, acc);
      Mma::retire(acc);
      pos += 32;
      if (pos == cut) done = close_window();
    }
    if (done) break;
  }
  Mma::retire(acc);
  ext::cp_async_wait<0>();
}

template <class Mma>
__global__ void __launch_bounds__(ImmaTile::kThreads, 1) imma_gemm_kernel(const BitplaneGemmParams p) {
  if constexpr (!Mma::kWarpgroup || APQ_IGMMA_BODY) imma_gemm<Mma>(p);  // else: the host plan refuses it
}

}  // namespace apq::cuda
