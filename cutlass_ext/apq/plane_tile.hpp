// Warp-level building blocks of the bit-plane GEMM on the b1 AND-popc tensor cores
// (mma.sync.m16n8k256 .b1.b1.s32.and.popc, CuTe's SM80_16x8x256_S32U1U1S32_TN_ANDPOPC).
//
// A shared-memory "plane tile" holds rows of packed bits, 512 bits (64 bytes, two MMA
// k-steps) per row. Row r's 16-byte chunk c is stored at chunk c ^ ((r >> 1) & 3), so the
// eight row addresses of one ldmatrix phase fall into eight different 16-byte bank groups.
//
// Fragment layouts (PTX ISA, m16n8k256 .b1; CuTe MMA_Traits ALayout/BLayout), with
// g = lane / 4 and t = lane % 4:
//   A (16 x 256, row-major): a0 = row g, bits 32t..32t+31; a1 = row g+8, same bits;
//                            a2, a3 = rows g, g+8 at bits 128 + 32t ...
//   B (8 x 256, one row per n): b0 = row g, bits 32t...; b1 = row g, bits 128 + 32t ...
//   C (16 x 8 int32):        c0, c1 = row g, cols 2t, 2t+1; c2, c3 = row g+8.
// ldmatrix.x4 hands lane the 32-bit word (lane % 4) of row (lane / 4) of each 8x16-byte
// matrix, which is exactly that layout when the four matrices are chosen as below. Rows at
// multiples of 16 from one another share the swizzle, so a fragment's offset plus 1024 * i
// is the fragment 16 * i rows further.
#pragma once

#include <apq/sm80_b1_primitives.hpp>

#include <cstdint>

namespace apq::ext {

constexpr int kTileRowBytes = 64;        // 512 bits per row and pipeline stage
constexpr int kStepWords = 8;            // 256 bits: one MMA k-step
constexpr int kChunksPerRow = kTileRowBytes / 16;

// Byte offset of 16-byte chunk `chunk` (0..3) of row `row` in a plane tile.
__device__ __forceinline__ uint32_t plane_tile_offset(int row, int chunk) {
  return static_cast<uint32_t>(row * kTileRowBytes + ((chunk ^ ((row >> 1) & 3)) << 4));
}

// Byte offset of the row this lane hands ldmatrix.x4 for the A fragment of the m16 tile at
// `row0`, k-step `step` (0 or 1) of the stage: registers a0 ... a3 as listed above.
__device__ __forceinline__ uint32_t a_fragment_offset(int row0, int step, int lane) {
  const int row = row0 + (lane & 7) + ((lane >> 3) & 1) * 8;
  return plane_tile_offset(row, 2 * step + (lane >> 4));
}

// The same for the B fragments of the two n8 tiles at `row0` and `row0 + 8`: registers
// b0, b1 of the first and b0, b1 of the second.
__device__ __forceinline__ uint32_t b_fragment_offset(int row0, int step, int lane) {
  const int row = row0 + (lane & 7) + (lane >> 4) * 8;
  return plane_tile_offset(row, 2 * step + ((lane >> 3) & 1));
}

// Keeps only the words [lo, hi) of a k-step in an A fragment (the thread holds words t
// and t + 4), so one k-step can be split where a K-group or an exact-sum window ends.
// Masking A alone is enough: AND-popc of a zero word is zero.
__device__ __forceinline__ void mask_a_fragment(uint32_t (&a)[4], int lane, int lo, int hi) {
  const int t = lane & 3;
  const uint32_t low = (t >= lo && t < hi) ? ~0u : 0u;
  const uint32_t high = (t + 4 >= lo && t + 4 < hi) ? ~0u : 0u;
  a[0] &= low;
  a[1] &= low;
  a[2] &= high;
  a[3] &= high;
}

}  // namespace apq::ext
