// CuTe traits of the b1 warpgroup MMA atom (sm90_b1_gmma.hpp), the shared-memory matrix
// descriptor of its B operand and an array-form call. After CuTe's MMA_Traits of
// SM90_64xNx32_S32S8S8_RS_TN (cute/atom/mma_traits_sm90_gmma.hpp), with K counted in bits:
//   A (registers, PTX ISA "wgmma .m64nNk256 fragment layout for matrix A"): thread
//     (warp w, lane = 4g + t) holds rows 16w + g (a0, a2) and 16w + g + 8 (a1, a3); a0 and
//     a1 carry bits 32t .. 32t + 31 of the 256, a2 and a3 bits 128 + 32t ...
//   D (registers, N/2 int32): d[4j + 2h + e] is row 16w + g + 8h, column 8j + 2t + e
//     (CuTe's CLayout_64xN, the same for every wgmma shape).
//   B (shared memory, K-major): 8-row core matrices of 16-byte K chunks, rows of 128 bytes
//     with the 128-byte swizzle (16-byte chunk c of row r stored at chunk c ^ (r % 8)),
//     successive 8-row groups `sbo` bytes apart.
#pragma once

#include <apq/sm90_b1_gmma.hpp>

#include <cute/atom/mma_traits_sm90_gmma.hpp>

#include <cstdint>
#include <utility>

namespace cute {

template <>
struct MMA_Traits<apq::ext::SM90_64x64x256_S32U1U1_RS_TN_ANDPOPC> {
  using ValTypeD = int32_t;
  using ValTypeA = uint1b_t;
  using ValTypeB = uint1b_t;
  using ValTypeC = int32_t;

  using FrgTypeB = GMMA::smem_desc<GMMA::Major::K>;

  using Shape_MNK = Shape<_64, _64, _256>;
  using ThrID = Layout<_128>;
  // (thread, value) -> m + 64 k
  using ALayout = Layout<Shape<Shape<_4, _8, _4>, Shape<_32, _2, _2>>,
                         Stride<Stride<_2048, _1, _16>, Stride<_64, _8, _8192>>>;
  using BLayout = GMMA::ABLayout<64, 256>;
  using CLayout = GMMA::CLayout_64x64;

  GMMA::ScaleOut accumulate_ = GMMA::ScaleOut::One;
};

}  // namespace cute

namespace apq::ext {

using BgmmaAtom = SM90_64x64x256_S32U1U1_RS_TN_ANDPOPC;

// Matrix descriptor (PTX ISA "Matrix Descriptor Format") of a K-major operand in 128-byte
// swizzled rows: start address >> 4 in bits 0-13, leading offset (unused when swizzled,
// encoded 1) in 16-29, stride offset >> 4 in 32-45, base offset 0 (the tile starts on a
// 1024-byte boundary), layout type 1 = 128-byte swizzle in 62-63. Adding 2 advances the
// start by 32 bytes: the next 256 bits of K.
CUTE_HOST_DEVICE constexpr uint64_t gmma_desc_k_sw128(uint32_t smem_address, uint32_t group_stride_bytes) {
  return static_cast<uint64_t>((smem_address & 0x3FFFF) >> 4) | (uint64_t{1} << 16) |
         (static_cast<uint64_t>((group_stride_bytes & 0x3FFFF) >> 4) << 32) | (uint64_t{1} << 62);
}
constexpr uint64_t kGmmaDescStep256Bits = 32 >> 4;

namespace detail {
template <size_t... I>
CUTE_DEVICE void gmma_b1_expand(uint32_t (&d)[32], const uint32_t (&a)[4], uint64_t desc_b, uint32_t accumulate,
                                std::index_sequence<I...>) {
  BgmmaAtom::fma(a[0], a[1], a[2], a[3], desc_b, d[I]..., static_cast<cute::SM90::GMMA::ScaleOut>(accumulate));
}
}  // namespace detail

// d = A x B (+ d when `accumulate` is 1, not when 0), asynchronous: d is final after gmma_wait.
CUTE_DEVICE void gmma_b1(uint32_t (&d)[32], const uint32_t (&a)[4], uint64_t desc_b, uint32_t accumulate) {
  detail::gmma_b1_expand(d, a, desc_b, accumulate, std::make_index_sequence<32>{});
}

// Keeps the compiler from moving reads or writes of `r` across a wgmma boundary (CUTLASS's
// warpgroup_fence_operand): the hardware writes the accumulators asynchronously.
template <int N>
CUTE_DEVICE void gmma_fence_operands(uint32_t (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) cute::warpgroup_fence_operand(r[i]);
}

}  // namespace apq::ext
