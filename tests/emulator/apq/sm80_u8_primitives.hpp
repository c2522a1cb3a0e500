// Emulated stand-in for cutlass_ext/apq/sm80_u8_primitives.hpp: mma.sync m16n8k32 .u8.u8.s32,
// its fragments written from the PTX ISA ("Matrix Fragments for mma.m16n8k32", .u8/.s8), not
// from the kernel's code, and checked once against CuTe's MMA_Traits of
// SM80_16x8x32_S32U8U8S32_TN, an independent statement of the same layout.
#pragma once

#include <apq/sm80_b1_primitives.hpp>  // the warp mailboxes (emulated)

#include <cute/atom/mma_traits_sm80.hpp>

#include <cstdint>
#include <stdexcept>

namespace apq::ext {

struct U8FragmentMaps {
  // (row, k) of byte e (0 ... 15) of A register a[e / 4] and (k, column) of byte e (0 ... 7) of
  // B register b[e / 4], and (row, column) of accumulator c[i], per lane.
  uint8_t a_row[32][16], a_k[32][16], b_k[32][8], b_col[32][8], c_row[32][4], c_col[32][4];
  // The inverse: which lane holds A (row, k) / B (k, column), and which byte e of its registers.
  struct Byte {
    uint8_t lane, e;
  };
  Byte a_at[16][32], b_at[32][8];
  U8FragmentMaps() {
    for (int lane = 0; lane < 32; ++lane) {
      const int group = lane >> 2, tig = lane % 4;  // groupID, threadID_in_group
      for (int i = 0; i < 16; ++i) {  // a_i: row groupID for 0 <= i < 4 || 8 <= i < 12, else + 8
        a_row[lane][i] = static_cast<uint8_t>(group + ((i < 4 || (i >= 8 && i < 12)) ? 0 : 8));
        a_k[lane][i] = static_cast<uint8_t>(tig * 4 + (i & 3) + (i >= 8 ? 16 : 0));
      }
      for (int i = 0; i < 8; ++i) {  // b_i: row (k) tig * 4 + (i & 3), + 16 for i >= 4; column groupID
        b_k[lane][i] = static_cast<uint8_t>(tig * 4 + (i & 3) + (i >= 4 ? 16 : 0));
        b_col[lane][i] = static_cast<uint8_t>(group);
      }
      for (int i = 0; i < 4; ++i) {  // c_i: row groupID (+ 8 for i >= 2), column tig * 2 + (i & 1)
        c_row[lane][i] = static_cast<uint8_t>(group + (i >= 2 ? 8 : 0));
        c_col[lane][i] = static_cast<uint8_t>(tig * 2 + (i & 1));
      }
    }
    for (int lane = 0; lane < 32; ++lane) {
      for (int e = 0; e < 16; ++e) a_at[a_row[lane][e]][a_k[lane][e]] = {static_cast<uint8_t>(lane), static_cast<uint8_t>(e)};
      for (int e = 0; e < 8; ++e) b_at[b_k[lane][e]][b_col[lane][e]] = {static_cast<uint8_t>(lane), static_cast<uint8_t>(e)};
    }
    using Traits = cute::MMA_Traits<cute::SM80_16x8x32_S32U8U8S32_TN>;
    for (int lane = 0; lane < 32; ++lane) {
      for (int v = 0; v < 16; ++v) {
        const int idx = Traits::ALayout{}(lane, v);  // m + 16 k
        if (idx % 16 != a_row[lane][v] || idx / 16 != a_k[lane][v]) throw std::logic_error("emulator: u8 A layout");
      }
      for (int v = 0; v < 8; ++v) {
        const int idx = Traits::BLayout{}(lane, v);  // n + 8 k
        if (idx % 8 != b_col[lane][v] || idx / 8 != b_k[lane][v]) throw std::logic_error("emulator: u8 B layout");
      }
      for (int v = 0; v < 4; ++v) {
        const int idx = Traits::CLayout{}(lane, v);  // m + 16 n
        if (idx % 16 != c_row[lane][v] || idx / 16 != c_col[lane][v]) throw std::logic_error("emulator: u8 C layout");
      }
    }
  }
  static const U8FragmentMaps& get() {
    static const U8FragmentMaps maps;
    return maps;
  }
};

inline void mma_u8(int32_t (&acc)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const U8FragmentMaps& maps = U8FragmentMaps::get();
  const emu::WarpExchange& w = *emu::ctx.warp;
  const int lane = emu::ctx.thread.x % 32, box = post_mma_operands(a, b0, b1);
  auto byte = [](uint32_t reg, int e) { return (reg >> (8 * (e % 4))) & 0xFFu; };
  for (int v = 0; v < 4; ++v) {
    const int m = maps.c_row[lane][v], n = maps.c_col[lane][v];
    uint32_t s = 0;  // s32 accumulation wraps like the hardware's (no .satfinite)
    for (int k = 0; k < 32; ++k) {
      const U8FragmentMaps::Byte a = maps.a_at[m][k], b = maps.b_at[k][n];
      s += byte(w.a[box][a.lane][a.e / 4], a.e) * byte(w.b[box][b.lane][b.e / 4], b.e);
    }
    acc[v] = static_cast<int32_t>(static_cast<uint32_t>(acc[v]) + s);
  }
}

inline uint32_t select_bits(uint32_t a, uint32_t b, uint32_t mask) { return (a & ~mask) | (b & mask); }

}  // namespace apq::ext
