// Emulated stand-in for cutlass_ext/apq/sm90_u8_gmma.hpp: the u8 wgmma is queued and executed
// when a wait_group retires it (sm90_machine.h, from the ISA).
#pragma once

#include "../sm90_machine.h"

#include <apq/sm90_b1_gmma_traits.hpp>  // the descriptor helper, fences, commit and wait

#include <cstdint>

namespace apq::ext {

inline void gmma_u8(uint32_t (&d)[64], uint64_t desc_a, uint64_t desc_b, uint32_t accumulate) {
  emu90::GmmaOp op{nullptr, d, desc_b, accumulate != 0};
  op.desc_a = desc_a;
  op.kind = emu90::GmmaOp::Kind::U8_64x128x32_SS;
  emu90::Machine::issue(*emu90::state.warpgroup, static_cast<int>(threadIdx.x % 128), op);
}

}  // namespace apq::ext
