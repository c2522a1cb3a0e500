// Emulated stand-in for cutlass_ext/apq/sm90_tma_pipeline.hpp (same names, same contracts):
// mbarriers, TMA copies and named barriers of sm90_machine.h.
#pragma once

#include "../sm90_machine.h"

#include <cuda.h>
#include <vector_functions.h>  // make_uint4 for the kernel's 16-byte stores

#include <cstdint>


namespace apq::ext {

using Mbarrier = uint64_t;

inline uint32_t smem_address(const void* p) { return emu90::state.machine->smem().address(p); }
inline int warpgroup_index() { return static_cast<int>(threadIdx.x / 128); }

inline void mbarrier_init(Mbarrier* bar, uint32_t arrivals) { emu90::state.machine->init(smem_address(bar), arrivals); }
inline void mbarrier_init_fence() {}
inline void mbarrier_arrive_if(Mbarrier* bar, bool pred) {
  if (pred) emu90::state.machine->arrive(smem_address(bar), 0);
}
inline void mbarrier_arrive_expect_tx(Mbarrier* bar, uint32_t bytes) {
  emu90::state.machine->arrive(smem_address(bar), bytes);
}
inline void mbarrier_wait(Mbarrier* bar, uint32_t parity) { emu90::state.machine->wait(smem_address(bar), parity); }

inline void tma_load_3d(const CUtensorMap* map, Mbarrier* bar, void* smem, int32_t c0, int32_t c1, int32_t c2) {
  const int32_t coords[3] = {c0, c1, c2};
  emu90::state.machine->tma_load(map, smem_address(bar), smem_address(smem), coords, 3);
}

inline void named_barrier_sync(uint32_t id, uint32_t threads) { emu90::state.machine->named_barrier(id, threads); }
inline void fence_async_proxy() {}

template <uint32_t Registers>
inline void warpgroup_reg_alloc() {}
template <uint32_t Registers>
inline void warpgroup_reg_dealloc() {}

}  // namespace apq::ext
