// The four sm_80 instructions the bit-plane GEMM is built from, as CuTe atoms: ldmatrix,
// the b1 AND-popc MMA, and cp.async with its fence and wait. Kept apart from the
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

// Asynchronous 16-byte global -> shared copy; zero-fills the destination when !valid.
__device__ __forceinline__ void cp_async_16(uint8_t* smem, const uint32_t* gmem, bool valid) {
  cute::SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<cute::uint128_t>::copy(
      *reinterpret_cast<const cute::uint128_t*>(gmem), *reinterpret_cast<cute::uint128_t*>(smem), valid);
}

__device__ __forceinline__ void cp_async_fence() { cute::cp_async_fence(); }

template <int N>
__device__ __forceinline__ void cp_async_wait() { cute::cp_async_wait<N>(); }

}  // namespace apq::ext
