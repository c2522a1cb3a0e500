// The sm_80 instructions the bit-plane GEMM is built from: ldmatrix and the b1 AND-popc MMA
// (CuTe atoms), cp.async with an L2 policy (createpolicy), its fence and wait. Kept apart from the
// addressing in plane_tile.hpp so a host emulator (tests/emulator) can stand in for them.
#pragma once

#include <cute/arch/copy_sm75.hpp>
#include <cute/arch/copy_sm80.hpp>
#include <cute/arch/mma_sm80.hpp>

#include <cstdint>

namespace apq::ext {

// ldmatrix.x4: lanes 8q..8q+7 give the row addresses of 8x16-byte matrix q; lane l receives
// word l % 4 of row l / 4 of every matrix, in r[0..3].
__device__ __forceinline__ void ldmatrix_x4(const uint8_t* tile, uint32_t offset, uint32_t (&r)[4]) {
  cute::SM75_U32x4_LDSM_N::copy(*reinterpret_cast<const cute::uint128_t*>(tile + offset), r[0], r[1],
                                r[2], r[3]);
}

// acc += popc(A AND B) over one 16 x 8 x 256 tile.
__device__ __forceinline__ void mma_and_popc(int32_t (&acc)[4], const uint32_t (&a)[4], uint32_t b0,
                                             uint32_t b1) {
  uint32_t* c = reinterpret_cast<uint32_t*>(acc);
  cute::SM80_16x8x256_S32U1U1S32_TN_ANDPOPC::fma(c[0], c[1], c[2], c[3], a[0], a[1], a[2], a[3], b0, b1,
                                                 c[0], c[1], c[2], c[3]);
}

// An L2 eviction policy for cp.async: operands read once (decode weights) go first.
__device__ __forceinline__ uint64_t l2_policy(bool evict_first) {
  uint64_t policy;
  if (evict_first) {
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
  } else {
    asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;\n" : "=l"(policy));
  }
  return policy;
}

// The shared-state-space address of a pointer into shared memory.
__device__ __forceinline__ uint32_t shared_address(const void* smem) { return cute::cast_smem_ptr_to_uint(smem); }

// Asynchronous 16-byte global -> shared copy of `src_bytes` (0 or 16) bytes, the rest
// zero-filled, bypassing L1, with an L2 cache policy from l2_policy. `smem` is a shared address.
__device__ __forceinline__ void cp_async_16(uint32_t smem, const uint32_t* gmem, int src_bytes, uint64_t policy) {
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;\n" ::"r"(smem), "l"(gmem),
               "r"(src_bytes), "l"(policy));
}

// `value`, opaque to the compiler: what is computed from it stays where it is written instead
// of being hoisted out of the loop around it (and held in registers across that loop).
__device__ __forceinline__ uint32_t opaque(uint32_t value) {
  asm volatile("mov.b32 %0, %0;\n" : "+r"(value));
  return value;
}

// The same without a cache hint: the policy operand must be warp-uniform, and where the compiler
// cannot prove that it is, it moves it into a uniform register before every copy (R2UR).
__device__ __forceinline__ void cp_async_16(uint32_t smem, const uint32_t* gmem, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_bytes));
}

__device__ __forceinline__ void cp_async_fence() { cute::cp_async_fence(); }

template <int N>
__device__ __forceinline__ void cp_async_wait() { cute::cp_async_wait<N>(); }

}  // namespace apq::ext
