// The sm_90 instructions of a TMA-fed, warp-specialized pipeline, as thin wrappers of CuTe /
// CUTLASS: mbarriers (init, arrive, arrive with expected transaction bytes, parity wait), the
// 3-D bulk tensor copy global -> shared that completes on an mbarrier, the proxy fence that
// makes ordinary shared-memory stores visible to TMA / wgmma, and register reallocation
// between warpgroups, and named barriers. tests/emulator/apq has host stand-ins with the same names.
#pragma once

#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/arch/util.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/cutlass.h>

#include <cuda.h>

#include <cstdint>

namespace apq::ext {

using Mbarrier = uint64_t;

CUTE_DEVICE uint32_t smem_address(const void* p) { return cute::cast_smem_ptr_to_uint(p); }

// threadIdx.x / 128, known to the compiler as warp-uniform (values derived from it can live
// in uniform registers, e.g. wgmma descriptors).
CUTE_DEVICE int warpgroup_index() { return cutlass::canonical_warp_group_idx(); }

CUTE_DEVICE void mbarrier_init(Mbarrier* bar, uint32_t arrivals) { cutlass::arch::ClusterBarrier::init(bar, arrivals); }
// Makes the initialised barriers visible to the async proxy (TMA); a __syncthreads follows.
CUTE_DEVICE void mbarrier_init_fence() { cutlass::arch::fence_barrier_init(); }
// Arrives when `pred`: a predicated instruction, not a branch (ptxas serializes wgmmas that
// have a branch between their issue and their wait).
CUTE_DEVICE void mbarrier_arrive_if(Mbarrier* bar, bool pred) {
#if defined(__CUDA_ARCH__)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %1, 0;\n@p mbarrier.arrive.shared::cta.b64 _, [%0];\n}\n" ::"r"(
          smem_address(bar)),
      "r"(static_cast<uint32_t>(pred))
      : "memory");
#endif
}
// Arrives and adds `bytes` to the transaction count the current phase waits for.
CUTE_DEVICE void mbarrier_arrive_expect_tx(Mbarrier* bar, uint32_t bytes) {
  cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(bar, bytes);
}
// Blocks until the phase of parity `parity` has completed (the current one, or the one
// before it, which counts as complete).
CUTE_DEVICE void mbarrier_wait(Mbarrier* bar, uint32_t parity) { cutlass::arch::ClusterBarrier::wait(bar, parity); }

// Copies the box of `map` at (c0, c1, c2) into shared memory; its bytes complete on `bar`.
CUTE_DEVICE void tma_load_3d(const CUtensorMap* map, Mbarrier* bar, void* smem, int32_t c0, int32_t c1, int32_t c2) {
  cute::SM90_TMA_LOAD_3D::copy(map, bar, static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_NORMAL), smem, c0, c1,
                               c2);
}

// Barrier `id` (1..15; 0 is __syncthreads) among `threads` threads, a multiple of 32.
CUTE_DEVICE void named_barrier_sync(uint32_t id, uint32_t threads) {
#if defined(__CUDA_ARCH__)
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
#endif
}

// Ordinary shared-memory stores before it are seen by later TMA and wgmma accesses.
CUTE_DEVICE void fence_async_proxy() { cutlass::arch::fence_view_async_shared(); }

template <uint32_t Registers>
CUTE_DEVICE void warpgroup_reg_alloc() {
  cutlass::arch::warpgroup_reg_alloc<Registers>();
}
template <uint32_t Registers>
CUTE_DEVICE void warpgroup_reg_dealloc() {
  cutlass::arch::warpgroup_reg_dealloc<Registers>();
}

}  // namespace apq::ext
