// Shared-memory tiles of 8-bit codes for the integer MMA (m16n8k32 .u8, sm80_u8_primitives.hpp),
// and the expansion of canonical bit planes into such codes.
//
// A code tile row holds 128 codes of K (four m16n8k32 steps), 16-byte chunk c of row r stored at
// chunk c ^ (r & 7): the eight rows of one ldmatrix phase, and the eight rows a quarter-warp
// stores at once, fall into eight different 16-byte bank groups.
//
// Expansion is a bit transpose: 32 bits of K of a row in each of 8 plane words (plane p: bit
// p of the codes) become 32 codes in 8 words, code of K offset 8b + i in byte b of word i.
// Within each 32-code MMA step the codes are thus stored in a fixed permuted order; A and B
// rows are expanded alike, so the MMA pairs the same K on both sides and the sum over the step
// is unchanged. Every step still covers exactly 32 consecutive K (a K-group end, a multiple of
// 64, never falls inside one).
#pragma once

#include <apq/sm80_b1_primitives.hpp>
#include <apq/sm80_u8_primitives.hpp>

#include <cstdint>

namespace apq::ext {

constexpr int kCodeRowBytes = 128;  // codes (bytes) of K per row
constexpr int kCodeSteps = kCodeRowBytes / 32;
constexpr int kCodeChunksPerRow = kCodeRowBytes / 16;

__device__ __forceinline__ uint32_t code_tile_offset(int row, int chunk) {
  return static_cast<uint32_t>(row * kCodeRowBytes + ((chunk ^ (row & 7)) << 4));
}

// The row this lane hands ldmatrix.x4 for the A fragment (a0 ... a3) of the m16 tile at
// `row0`, k-step `step`: matrices (rows 0-7, k 0-15), (rows 8-15, k 0-15), (rows 0-7, k 16-31),
// (rows 8-15, k 16-31); lane l receives bytes 4 (l % 4) .. of row l / 4 of each.
__device__ __forceinline__ uint32_t a_code_fragment_offset(int row0, int step, int lane) {
  return code_tile_offset(row0 + (lane & 7) + ((lane >> 3) & 1) * 8, 2 * step + (lane >> 4));
}

// The same for the B fragments (b0, b1) of the two n8 tiles at `row0` and `row0 + 8`.
__device__ __forceinline__ uint32_t b_code_fragment_offset(int row0, int step, int lane) {
  return code_tile_offset(row0 + (lane & 7) + (lane >> 4) * 8, 2 * step + ((lane >> 3) & 1));
}

// Swaps, in each byte, the bits selected by `mask` << `shift` of x with the bits `mask` of y:
// one stage of an 8 x 8 bit-matrix transpose (rows: the words, columns: bit i of each byte).
// Two shifts and two 3-input logic ops (LOP3).
__device__ __forceinline__ void swap_bit_blocks(uint32_t& x, uint32_t& y, int shift, uint32_t mask) {
  const uint32_t x_new = select_bits(x, y << shift, mask << shift);
  y = select_bits(y, x >> shift, mask);
  x = x_new;
}

// planes[p]: bits of plane p for 32 K (zero for p >= bits); afterwards planes[i] byte b is the
// code of K offset 8b + i (bit p of it from planes[p]). Transposes the four 8 x 8 bit matrices
// (one per byte) at once: 12 swaps.
__device__ __forceinline__ void transpose_planes_to_codes(uint32_t (&planes)[8]) {
#pragma unroll
  for (int j = 0; j < 4; ++j) swap_bit_blocks(planes[j], planes[j + 4], 4, 0x0F0F0F0Fu);
#pragma unroll
  for (int j = 0; j < 8; j += 4) {
    swap_bit_blocks(planes[j], planes[j + 2], 2, 0x33333333u);
    swap_bit_blocks(planes[j + 1], planes[j + 3], 2, 0x33333333u);
  }
#pragma unroll
  for (int j = 0; j < 8; j += 2) swap_bit_blocks(planes[j], planes[j + 1], 1, 0x55555555u);
}

}  // namespace apq::ext
