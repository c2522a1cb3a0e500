// The sm_90a bit-plane GEMM on the b1 warpgroup MMA (BGMMA.64x64x256.AND.POPC), fed by TMA.
//
// Roles (bgmma_gemm.h): warpgroup 0 produces, one thread issuing the TMA copies of a
// kStages-deep ring of stages (1024 bits of K of 256 stacked rows of a and 128 of b, 128-byte
// swizzled) that complete on a "full" mbarrier per stage; warpgroups 1 and 2 consume, each
// running four m64n64k256 wgmmas per 256 bits of K (A from registers, loaded with ldmatrix;
// B through a shared-memory descriptor) and giving a stage back on its "empty" mbarrier.
// A comes from registers so that its rows can be routed to any thread slot (the stacking
// of bgmma_gemm.h) and masked where a K-window ends inside a 256-bit step.
//
// Recovery happens in registers when a K-window closes (end of K, of a K-group, or every
// BgmmaTile::kWindowBits, as in KWindows): every plane pair of an output is in one thread, so
// U = sum_{p,q} C[p][q] << (p + q) is two butterflies over the thread's accumulators
// (fold_planes), then the affine epilogue of epilogue.cuh writes the output (exact int32 for
// apq::gemm) or adds the window's term to an fp32 result kept in registers.
//
// Only the sm_90a device pass (and the host, for the CPU emulator) compiles a body: wgmma
// does not exist elsewhere, and the launch refuses other GPUs.
#pragma once

#include "bgmma_gemm.h"
#include "epilogue.cuh"

#include <apq/plane_tile.hpp>
#include <apq/sm90_b1_gmma_traits.hpp>
#include <apq/sm90_tma_pipeline.hpp>

#include <cuda.h>

#include <cstdint>
#include <type_traits>

#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define APQ_BGMMA_KERNEL_BODY 0
#else
#define APQ_BGMMA_KERNEL_BODY 1
#endif

namespace apq::cuda {

namespace bgmma {

using Acc = uint32_t[BgmmaTile::kMmaTiles][32];  // [m64 tile][wgmma D register]

// D register of (row half h, column block j, column e) for the thread of warp w, lane 4g + t:
// row 16w + g + 8h, column 8j + 2t + e. A register r: row 16w + g + 8 (r % 2), K bits
// 32t + 128 (r / 2) .. + 31 (what the ldmatrix routing below loads).
constexpr int d_register(int h, int j, int e) { return 4 * j + 2 * h + e; }

// Both against the atom's CuTe layouts ((thread, value) -> m + 64 n, resp. m + 64 k), for
// threads that step every lane and warp bit (the layouts are affine in them).
constexpr bool fragments_match_the_atom() {
  using Traits = cute::MMA_Traits<ext::BgmmaAtom>;
  for (int thread : {0, 1, 2, 4, 8, 16, 32, 64, 127}) {
    const int w = thread / 32, g = thread % 32 / 4, t = thread % 4;
    for (int h = 0; h < 2; ++h)
      for (int j = 0; j < 8; ++j)
        for (int e = 0; e < 2; ++e)
          if (typename Traits::CLayout{}(thread, d_register(h, j, e)) != 16 * w + g + 8 * h + 64 * (8 * j + 2 * t + e))
            return false;
    for (int r = 0; r < 4; ++r)
      for (int bit : {0, 1, 31})
        if (typename Traits::ALayout{}(thread, bit + 32 * r) !=
            16 * w + g + 8 * (r % 2) + 64 * (32 * t + 128 * (r / 2) + bit))
          return false;
  }
  return true;
}
static_assert(fragments_match_the_atom(), "the kernel's fragment bookkeeping disagrees with the atom");

// The accumulator of slot s (m64 tile s / 2, row half s % 2), column block j, column e.
__device__ __forceinline__ uint32_t& at(Acc& acc, int s, int j, int e) { return acc[s / 2][d_register(s % 2, j, e)]; }

// U for every output: columns first (plane q of column block jb is block q * Rb + jb),
// then slots (plane p of slot r is slot p * Ra + r). Each level adds the upper half of a
// group of planes, shifted by the number of planes below it. Planes past the bit count hold
// zeros, so they may be folded in.
template <int Ra, int Rb>
__device__ __forceinline__ void fold(Acc& acc) {
#pragma unroll
  for (int d = Rb; d < 8; d *= 2)
#pragma unroll
    for (int s = 0; s < 8; ++s)
#pragma unroll
      for (int j = 0; j < 8; ++j)
        if (j % (2 * d) < Rb)
#pragma unroll
          for (int e = 0; e < 2; ++e) at(acc, s, j, e) += at(acc, s, j + d, e) << (d / Rb);
#pragma unroll
  for (int d = Ra; d < 8; d *= 2)
#pragma unroll
    for (int s = 0; s < 8; ++s)
      if (s % (2 * d) < Ra)
#pragma unroll
        for (int j = 0; j < Rb; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) at(acc, s, j, e) += at(acc, s + d, j, e) << (d / Ra);
}

template <int Ra>
__device__ __forceinline__ void fold_rb(Acc& acc, int rb) {
  switch (rb) {
    case 1: fold<Ra, 1>(acc); break;
    case 2: fold<Ra, 2>(acc); break;
    case 4: fold<Ra, 4>(acc); break;
    default: fold<Ra, 8>(acc); break;
  }
}

// After it, U of (real row slot r < ra, column block jb < rb, e) is at(acc, r, jb, e).
__device__ __forceinline__ void fold_planes(Acc& acc, int ra, int rb) {
  switch (ra) {
    case 1: fold_rb<1>(acc, rb); break;
    case 2: fold_rb<2>(acc, rb); break;
    case 4: fold_rb<4>(acc, rb); break;
    default: fold_rb<8>(acc, rb); break;
  }
}

}  // namespace bgmma

template <class Tile>
__global__ void __launch_bounds__(Tile::kThreads, 1)
    bgmma_gemm_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                      const BitplaneGemmParams p) {
#if APQ_BGMMA_KERNEL_BODY
  extern __shared__ __align__(128) uint8_t smem_raw[];
  // 128-byte swizzled tiles start on 1024-byte boundaries (the pattern spans 8 rows).
  uint8_t* smem = smem_raw + ((1024 - (ext::smem_address(smem_raw) & 1023)) & 1023);
  // (stages, U array, result array, barriers), see BgmmaTile::kSmemBytes
  ext::Mbarrier* full =
      reinterpret_cast<ext::Mbarrier*>(smem + Tile::kStages * Tile::kStageBytes + 2 * Tile::kOutputArrayBytes);
  ext::Mbarrier* empty = full + Tile::kStages;
  auto tile_a = [&](int stage) { return smem + stage * Tile::kStageBytes; };  // (kStackA rows, kRowBytes)
  auto tile_b = [&](int stage) { return tile_a(stage) + Tile::kTileABytes; };  // (kStackB rows, kRowBytes)

  const BgmmaGeometry geo = BgmmaGeometry::of(p);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, warpgroup = warp / 4;
  const int64_t a_first = static_cast<int64_t>(blockIdx.x) * geo.rows_a;
  const int64_t b_first = static_cast<int64_t>(blockIdx.y) * geo.rows_b;
  const int64_t k_tiles = (p.words + Tile::kStageWords - 1) / Tile::kStageWords;

  // ---- set-up: barriers; zero the stacked rows that no TMA box writes (slots past
  // bits_a * slots_a, columns past bits_b * blocks_b): they are multiplied but must add 0 ----
  if (tid == 0) {
    for (int s = 0; s < Tile::kStages; ++s) {
      ext::mbarrier_init(&full[s], 1);
      ext::mbarrier_init(&empty[s], Tile::kConsumers);
    }
    ext::mbarrier_init_fence();
  }
  {
    const int a_used = 32 * geo.used_slots, b_used = p.b.bits * static_cast<int>(geo.rows_b_half);
    const int a_chunks = (Tile::kStackA - a_used) * Tile::kRowBytes / 16;
    const int b_chunks = (64 - b_used) * Tile::kRowBytes / 16;  // per consumer half
    const int per_stage = a_chunks + Tile::kConsumers * b_chunks;
    for (int i = tid; i < Tile::kStages * per_stage; i += Tile::kThreads) {
      const int stage = i / per_stage, c = i % per_stage;
      uint8_t* dst = c < a_chunks ? tile_a(stage) + a_used * Tile::kRowBytes + 16 * c
                                  : tile_b(stage) + ((c - a_chunks) / b_chunks * 64 + b_used) * Tile::kRowBytes +
                                        16 * ((c - a_chunks) % b_chunks);
      *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
    }
    ext::fence_async_proxy();  // wgmma reads the zero rows of b through the async proxy
  }
  __syncthreads();

  // ================================ producer ================================
  if (warpgroup == 0) {
    ext::warpgroup_reg_dealloc<Tile::kProducerRegisters>();
    if (tid == 0) {
      const uint32_t stage_bytes =
          static_cast<uint32_t>((p.a.bits * geo.rows_a + Tile::kConsumers * p.b.bits * geo.rows_b_half) *
                                Tile::kRowBytes);
      for (int64_t kt = 0; kt < k_tiles; ++kt) {
        const int stage = static_cast<int>(kt % Tile::kStages);
        // The first pass finds every stage free: parity 1 names the phase before the first.
        ext::mbarrier_wait(&empty[stage], static_cast<uint32_t>((kt / Tile::kStages) & 1) ^ 1);
        ext::mbarrier_arrive_expect_tx(&full[stage], stage_bytes);
        const int32_t k_word = static_cast<int32_t>(kt * Tile::kStageWords);
        for (int plane = 0; plane < p.a.bits; ++plane)
          ext::tma_load_3d(&map_a, &full[stage], tile_a(stage) + plane * geo.rows_a * Tile::kRowBytes, k_word,
                           static_cast<int32_t>(a_first), plane);
        for (int c = 0; c < Tile::kConsumers; ++c)
          for (int plane = 0; plane < p.b.bits; ++plane)
            ext::tma_load_3d(&map_b, &full[stage],
                             tile_b(stage) + (64 * c + plane * geo.rows_b_half) * Tile::kRowBytes, k_word,
                             static_cast<int32_t>(b_first + c * geo.rows_b_half), plane);
      }
    }
    return;
  }

  // ================================ consumers ================================
  ext::warpgroup_reg_alloc<Tile::kConsumerRegisters>();
  const int half = ext::warpgroup_index() - 1;  // which 64 stacked rows of b (warp-uniform)
  const int w = warp % 4, g = lane / 4, t = lane % 4;
  const bool four_tiles = geo.used_slots > 6;  // else the m64 tile of slots 6, 7 is empty

  // ldmatrix.x4 of m64 tile i: lanes 8m .. 8m + 7 address matrix m = A register m, i.e. row
  // half m % 2 (slot 2i + m % 2, stacked rows 32 slot + 8w + 0..7) and 16-byte chunk m / 2 of
  // the 256-bit step. Chunk c of stacked row r is stored at c ^ (r % 8) (128-byte swizzle).
  const int m = lane / 8, row = lane % 8;
  auto lane_offset = [&](int step) {  // of tile 0, from the stage's a tile
    return static_cast<uint32_t>((32 * (m % 2) + 8 * w + row) * Tile::kRowBytes +
                                 (((2 * step + m / 2) ^ row) << 4));
  };
  uint32_t step_offset[4];
#pragma unroll
  for (int step = 0; step < 4; ++step) {
    step_offset[step] = lane_offset(step);
    cute::warpgroup_fence_operand(step_offset[step]);  // kept in registers, not recomputed per step
  }
  // B of this consumer in stage 0; a stage is kStageBytes >> 4 further in the address field.
  const uint64_t b_desc0 =
      ext::gmma_desc_k_sw128(ext::smem_address(tile_b(0) + 64 * half * Tile::kRowBytes), 8 * Tile::kRowBytes);

  bgmma::Acc acc;
#pragma unroll
  for (int i = 0; i < Tile::kMmaTiles; ++i)
#pragma unroll
    for (int v = 0; v < 32; ++v) acc[i][v] = 0;  // tiles never issued must read as zero
  uint32_t a_frag[2][Tile::kMmaTiles][4];  // double-buffered: a wgmma reads its A until it completes
  uint32_t accumulate = 0;                 // 0 for the first wgmma of a window, else 1

  // Thread-private output arrays, entry o of this thread at [o * kConsumerThreads + ctid].
  const int ctid = tid - 128;
  int32_t* const u_window = reinterpret_cast<int32_t*>(smem + Tile::kStages * Tile::kStageBytes);
  float* const results = reinterpret_cast<float*>(u_window + Tile::kOutputs * Tile::kConsumerThreads);
  const int outputs = geo.slots_a * geo.blocks_b * 2;  // output o: slot o / (2 blocks_b), block, e
  const KWindows windows = KWindows::of(p, Tile::kWindowBits);
  const bool direct = windows.single();
  if (!direct)
    for (int o = 0; o < outputs; ++o) results[o * Tile::kConsumerThreads + ctid] = 0.f;

  // One 256-bit step of the first `tiles` m64 tiles (3 or 4: a compile-time count, so that
  // no branch separates the wgmmas of a group), A restricted to the words [lo, hi) of the
  // step. Pipelined: leaves this step in flight (the previous one is complete afterwards).
  auto issue = [&](auto tiles, const uint8_t* a_tile, uint32_t a_offset, uint64_t b_desc,
                   uint32_t (&a)[Tile::kMmaTiles][4], int lo, int hi) {
    constexpr int kTiles = decltype(tiles)::value;
#pragma unroll
    for (int i = 0; i < kTiles; ++i) {
      ext::ldmatrix_x4(a_tile, a_offset + i * 64 * Tile::kRowBytes, a[i]);
      if (lo > 0 || hi < ext::kStepWords) ext::mask_a_fragment(a[i], lane, lo, hi);
    }
    uint32_t scale = accumulate;  // materialised before the fence, like the operands
    cute::warpgroup_fence_operand(scale);
#pragma unroll
    for (int i = 0; i < kTiles; ++i) ext::gmma_fence_operands(acc[i]);
    ext::gmma_fence();
#pragma unroll
    for (int i = 0; i < kTiles; ++i) ext::gmma_b1(acc[i], a[i], b_desc, scale);
    ext::gmma_commit();
    ext::gmma_wait<1>();
#pragma unroll
    for (int i = 0; i < kTiles; ++i) ext::gmma_fence_operands(acc[i]);
    accumulate = 1;
  };
  using ThreeTiles = std::integral_constant<int, 3>;
  using FourTiles = std::integral_constant<int, 4>;

  const int64_t padded_bits = p.words * 32;
  int64_t group = 0;
  int64_t next_cut = windows.window_end(0, 0);

  // Shift-add every output's plane pairs in registers, park the sums U in this thread's
  // array, then one loop writes the outputs or adds the window's term to their results.
  auto close_window = [&](bool closes_group, bool last) {
    ext::gmma_wait<0>();
#pragma unroll
    for (int i = 0; i < Tile::kMmaTiles; ++i) ext::gmma_fence_operands(acc[i]);
    bgmma::fold_planes(acc, geo.slots_a, geo.blocks_b);
    int32_t* u = u_window;
    if (outputs > Tile::kOutputs) {  // one window only: the main loop is over in both consumers
      ext::named_barrier_sync(1, Tile::kConsumerThreads);
      u = reinterpret_cast<int32_t*>(smem);
    }
#pragma unroll
    for (int s = 0; s < 8; ++s) {
      if (s >= geo.slots_a) continue;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        if (j >= geo.blocks_b) continue;
#pragma unroll
        for (int e = 0; e < 2; ++e)
          u[((s * geo.blocks_b + j) * 2 + e) * Tile::kConsumerThreads + ctid] =
              static_cast<int32_t>(bgmma::at(acc, s, j, e));
      }
    }
    const int64_t group_len = windows.group_len(group);
    for (int o = 0; o < outputs; ++o) {
      const int s = o / (2 * geo.blocks_b), j = o / 2 % geo.blocks_b, e = o % 2;
      const int64_t ra = a_first + 32 * s + 8 * w + g;
      const int64_t rb = b_first + half * geo.rows_b_half + 8 * j + 2 * t + e;
      if (ra >= p.a.rows || rb >= p.b.rows) continue;
      const int32_t U = u[o * Tile::kConsumerThreads + ctid];
      if (p.exact) {
        static_cast<int32_t*>(p.out)[ra * p.out_stride_a + rb * p.out_stride_b] = U;
      } else if (direct) {
        epilogue::store_float(p, ra, rb, epilogue::window_term(p, ra, rb, U, group, true, group_len));
      } else {
        float& r = results[o * Tile::kConsumerThreads + ctid];
        r += epilogue::window_term(p, ra, rb, U, group, closes_group, group_len);
        if (last) epilogue::store_float(p, ra, rb, r);
      }
    }
    accumulate = 0;
  };

  // ---- main loop: K in stages. Whole stages inside a window run four pipelined steps each
  // (the steady state); a stage with a window end inside runs one masked segment at a time ----
  int64_t bit = 0;  // the next bit of K to multiply
  int stage = Tile::kStages - 1, release_stage = -1;
  uint32_t phase = 1;  // parity of the current fill of `stage`
  bool started = false;
  auto enter_stage = [&] {  // wait for the next stage; the one before goes back after the next issue
    release_stage = started ? stage : -1;
    started = true;
    stage = stage + 1 == Tile::kStages ? 0 : stage + 1;
    phase ^= stage == 0;
    ext::mbarrier_wait(&full[stage], phase);
  };
  uint32_t releaser = tid % 128 == 0;  // one arrival per consumer warpgroup
  cute::warpgroup_fence_operand(releaser);  // computed once, not per stage
  auto release = [&] {  // after an issue's wait the wgmmas of the previous stage are complete
    ext::mbarrier_arrive_if(&empty[release_stage < 0 ? 0 : release_stage], release_stage >= 0 && releaser != 0);
    release_stage = -1;
  };
  while (true) {
    if (bit % Tile::kStageBits == 0) enter_stage();
    const int64_t stage_start = bit - bit % Tile::kStageBits;
    const int64_t stage_end =
        stage_start + Tile::kStageBits < padded_bits ? stage_start + Tile::kStageBits : padded_bits;
    if (bit == stage_start && next_cut >= stage_end) {
      // All four steps, also past the end of K in the last stage: TMA filled those words
      // with zeros, and a conditional step would make ptxas serialize the wgmmas.
      // Stages lying whole inside the window, at least this one (the last may be partial).
      int stages = next_cut - bit >= 2 * Tile::kStageBits ? static_cast<int>((next_cut - bit) / Tile::kStageBits) : 1;
      const int64_t steady_end = bit + stages * static_cast<int64_t>(Tile::kStageBits);
      auto steady = [&](auto tiles) {
        while (true) {
          const uint32_t a_base = stage * Tile::kStageBytes;
          const uint64_t b_desc = b_desc0 + stage * (Tile::kStageBytes >> 4);
#pragma unroll
          for (int step = 0; step < 4; ++step) {
            issue(tiles, smem, a_base + step_offset[step], b_desc + step * ext::kGmmaDescStep256Bits,
                  a_frag[step % 2], 0, ext::kStepWords);
            if (step == 0) release();
          }
          if (--stages == 0) break;
          enter_stage();
        }
      };
      if (four_tiles) {
        steady(FourTiles{});
      } else {
        steady(ThreeTiles{});
      }
      bit = steady_end < padded_bits ? steady_end : padded_bits;
    } else {
      // After the wait, a_frag[1] is free whatever ran before; the steady state that may
      // follow starts with a_frag[0].
      const int step = static_cast<int>((bit - stage_start) / 256);
      const int64_t step_start = stage_start + 256 * step;
      const int64_t segment_end = next_cut < step_start + 256 ? next_cut : step_start + 256;
      const uint32_t a_offset = stage * Tile::kStageBytes + lane_offset(step);
      const uint64_t b_desc = b_desc0 + stage * (Tile::kStageBytes >> 4) + step * ext::kGmmaDescStep256Bits;
      const int lo = static_cast<int>((bit - step_start) / 32), hi = static_cast<int>((segment_end - step_start) / 32);
      ext::gmma_wait<0>();
      if (four_tiles) {
        issue(FourTiles{}, smem, a_offset, b_desc, a_frag[1], lo, hi);
      } else {
        issue(ThreeTiles{}, smem, a_offset, b_desc, a_frag[1], lo, hi);
      }
      release();
      bit = segment_end;
    }
    if (bit == next_cut) {
      const bool closes_group = next_cut == windows.group_end(group);
      const bool last = windows.is_last(group, next_cut);
      close_window(closes_group, last);
      if (last) break;
      if (closes_group) ++group;
      next_cut = windows.window_end(group, next_cut);
    }
  }
#endif
}

}  // namespace apq::cuda
