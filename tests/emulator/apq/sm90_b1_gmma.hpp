// Emulated stand-in for cutlass_ext/apq/sm90_b1_gmma.hpp (same names, same contracts): the
// wgmma is queued and executed when a wait_group retires it (sm90_machine.h, from the ISA).
#pragma once

#include "../sm90_machine.h"

#include <cute/arch/mma_sm90_gmma.hpp>  // GMMA::ScaleOut

#include <cstdint>

namespace apq::ext {

struct SM90_64x64x256_S32U1U1_RS_TN_ANDPOPC {
  static void fma(uint32_t const& a0, uint32_t const& a1, uint32_t const& a2, uint32_t const& a3,
                  uint64_t const& desc_b, uint32_t& d00, uint32_t& d01, uint32_t& d02, uint32_t& d03, uint32_t& d04,
                  uint32_t& d05, uint32_t& d06, uint32_t& d07, uint32_t& d08, uint32_t& d09, uint32_t& d10,
                  uint32_t& d11, uint32_t& d12, uint32_t& d13, uint32_t& d14, uint32_t& d15, uint32_t& d16,
                  uint32_t& d17, uint32_t& d18, uint32_t& d19, uint32_t& d20, uint32_t& d21, uint32_t& d22,
                  uint32_t& d23, uint32_t& d24, uint32_t& d25, uint32_t& d26, uint32_t& d27, uint32_t& d28,
                  uint32_t& d29, uint32_t& d30, uint32_t& d31,
                  cute::SM90::GMMA::ScaleOut const scale_D = cute::SM90::GMMA::ScaleOut::One) {
    // The queue keeps addresses: the registers must stay put until the op retires.
    uint32_t* const d[32] = {&d00, &d01, &d02, &d03, &d04, &d05, &d06, &d07, &d08, &d09, &d10,
                             &d11, &d12, &d13, &d14, &d15, &d16, &d17, &d18, &d19, &d20, &d21,
                             &d22, &d23, &d24, &d25, &d26, &d27, &d28, &d29, &d30, &d31};
    for (int i = 1; i < 32; ++i)
      if (d[i] != d[0] + i) emu90::fail("wgmma accumulators are not one register array");
    if (&a1 != &a0 + 1 || &a2 != &a0 + 2 || &a3 != &a0 + 3) emu90::fail("wgmma A fragment is not one register array");
    emu90::Machine::issue(*emu90::state.warpgroup, static_cast<int>(threadIdx.x % 128),
                          {&a0, d[0], desc_b, scale_D == cute::SM90::GMMA::ScaleOut::One});
  }
};

inline void gmma_fence() {}
inline void gmma_commit() { emu90::Machine::commit(*emu90::state.warpgroup, static_cast<int>(threadIdx.x % 128)); }
template <int N>
inline void gmma_wait() {
  emu90::state.machine->wait_group(*emu90::state.warpgroup, static_cast<int>(threadIdx.x % 128), N);
}

}  // namespace apq::ext
