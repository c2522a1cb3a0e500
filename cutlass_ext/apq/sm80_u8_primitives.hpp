// The sm_80 integer MMA of the int8 path: mma.sync.aligned.m16n8k32.row.col.s32.u8.u8.s32
// (CuTe's SM80_16x8x32_S32U8U8S32_TN), on sm_80 ... sm_90. tests/emulator/apq has a host
// stand-in with the same name and contract.
#pragma once

#include <cute/arch/mma_sm80.hpp>

#include <cstdint>

namespace apq::ext {

// acc += A (16 x 32 u8, row-major) * B (32 x 8 u8, column-major), s32 accumulation without
// saturation. PTX ISA fragments (g = lane / 4, t = lane % 4; bytes low to high):
//   a0 = row g, k 4t .. 4t+3;  a1 = row g+8, same k;  a2, a3 = rows g, g+8 at k 16 + 4t ..
//   b0 = column g, k 4t .. 4t+3;  b1 = column g, k 16 + 4t ..
//   c0, c1 = row g, columns 2t, 2t+1;  c2, c3 = row g+8.
__device__ __forceinline__ void mma_u8(int32_t (&acc)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  uint32_t* c = reinterpret_cast<uint32_t*>(acc);
  cute::SM80_16x8x32_S32U8U8S32_TN::fma(c[0], c[1], c[2], c[3], a[0], a[1], a[2], a[3], b0, b1, c[0], c[1], c[2],
                                        c[3]);
}

// (a & ~mask) | (b & mask) in one 3-input logic op (lop3.b32, LUT 0xF0 & ~0xAA | 0xCC & 0xAA):
// written as C++, ptxas splits it when it can prove bits of an operand constant.
__device__ __forceinline__ uint32_t select_bits(uint32_t a, uint32_t b, uint32_t mask) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xD8;\n" : "=r"(d) : "r"(a), "r"(b), "r"(mask));
  return d;
}

}  // namespace apq::ext
