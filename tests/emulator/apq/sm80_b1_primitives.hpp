// Emulated stand-ins for cutlass_ext/apq/sm80_b1_primitives.hpp (same names, same
// contracts). The MMA reads its operand and result layouts from CuTe's MMA_Traits of
// SM80_16x8x256_S32U1U1S32_TN_ANDPOPC, and ldmatrix follows the PTX ISA definition, so the
// kernel's own fragment addressing is checked against independent sources. cp.async copies
// at once (a pipeline hazard would not show here; the slot indexing does).
#pragma once

#include <cute/atom/mma_traits_sm80.hpp>

#include <bit>
#include <cstdint>
#include <cstring>

namespace apq::ext {

inline void ldmatrix_x4(const uint8_t* tile, uint32_t offset, uint32_t (&r)[4]) {
  emu::WarpExchange& w = *emu::ctx.warp;
  const int lane = emu::ctx.thread.x % 32;
  w.address[lane] = tile + offset;
  emu::warp_sync();
  for (int q = 0; q < 4; ++q) {  // matrix q: rows from lanes 8q..8q+7
    const uint8_t* row = w.address[8 * q + lane / 4];
    std::memcpy(&r[q], row + 4 * (lane % 4), 4);
  }
  emu::warp_sync();
}

// Where each A / B bit and each C element lives: (lane, register, bit) by matrix position,
// read off CuTe's TV layouts once. Value v of a lane is bit v % 32 of its register v / 32.
struct FragmentMaps {
  struct Slot {
    uint8_t lane, reg, bit;
  };
  Slot a[16][256], b[8][256];
  FragmentMaps() {
    using Traits = cute::MMA_Traits<cute::SM80_16x8x256_S32U1U1S32_TN_ANDPOPC>;
    for (int l = 0; l < 32; ++l) {
      for (int v = 0; v < 128; ++v) {
        const int idx = Traits::ALayout{}(l, v);  // m + 16 k
        a[idx % 16][idx / 16] = {static_cast<uint8_t>(l), static_cast<uint8_t>(v / 32), static_cast<uint8_t>(v % 32)};
      }
      for (int v = 0; v < 64; ++v) {
        const int idx = Traits::BLayout{}(l, v);  // n + 8 k
        b[idx % 8][idx / 8] = {static_cast<uint8_t>(l), static_cast<uint8_t>(v / 32), static_cast<uint8_t>(v % 32)};
      }
    }
  }
  static const FragmentMaps& get() {
    static const FragmentMaps maps;  // thread-safe initialisation
    return maps;
  }
};

inline void mma_and_popc(int32_t (&acc)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  using Traits = cute::MMA_Traits<cute::SM80_16x8x256_S32U1U1S32_TN_ANDPOPC>;
  const FragmentMaps& maps = FragmentMaps::get();
  emu::WarpExchange& w = *emu::ctx.warp;
  const int lane = emu::ctx.thread.x % 32;
  for (int i = 0; i < 4; ++i) w.a[lane][i] = a[i];
  w.b[lane][0] = b0;
  w.b[lane][1] = b1;
  emu::warp_sync();
  for (int v = 0; v < 4; ++v) {
    const int idx = Traits::CLayout{}(lane, v);  // m + 16 n
    const int m = idx % 16, n = idx / 16;
    int32_t s = 0;
    for (int k = 0; k < 256; ++k) {
      const auto sa = maps.a[m][k], sb = maps.b[n][k];
      s += (w.a[sa.lane][sa.reg] >> sa.bit) & (w.b[sb.lane][sb.reg] >> sb.bit) & 1u;
    }
    acc[v] += s;
  }
  emu::warp_sync();
}

inline void cp_async_16(uint8_t* smem, const uint32_t* gmem, bool valid) {
  if (valid) {
    std::memcpy(smem, gmem, 16);
  } else {
    std::memset(smem, 0, 16);
  }
}

inline void cp_async_fence() {}

template <int N>
inline void cp_async_wait() {}

}  // namespace apq::ext
