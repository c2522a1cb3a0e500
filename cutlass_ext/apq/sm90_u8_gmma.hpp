// The sm_90a integer warpgroup MMA of the int8 path: wgmma.mma_async m64n128k32 .s32.u8.u8 with A
// and B K-major in shared memory through matrix descriptors (CuTe's
// SM90::GMMA::MMA_64x128x32_S32U8U8_SS_TN; SASS IGMMA.64x128x32.U8.U8), as an array call. The
// descriptor, fences, commit and wait are the b1 atom's (sm90_b1_gmma_traits.hpp); D registers
// are laid out alike (d[4j + 2h + e]: row 16w + g + 8h, column 8j + 2t + e). tests/emulator/apq
// has a host stand-in with the same name and contract.
#pragma once

#include <apq/sm90_b1_gmma_traits.hpp>

#include <cute/arch/mma_sm90_gmma.hpp>

#include <cstdint>
#include <utility>

namespace apq::ext {

using IgmmaAtom = cute::SM90::GMMA::MMA_64x128x32_S32U8U8_SS_TN;

namespace detail {
template <size_t... I>
CUTE_DEVICE void gmma_u8_expand(uint32_t (&d)[64], uint64_t desc_a, uint64_t desc_b, uint32_t accumulate,
                                std::index_sequence<I...>) {
  IgmmaAtom::fma(desc_a, desc_b, d[I]..., static_cast<cute::SM90::GMMA::ScaleOut>(accumulate));
}
}  // namespace detail

// d (64 x 128 int32) = A (64 x 32 u8) x B (128 x 32 u8)^T (+ d when `accumulate` is 1),
// asynchronous: d is final after gmma_wait; A and B must not change before it either.
CUTE_DEVICE void gmma_u8(uint32_t (&d)[64], uint64_t desc_a, uint64_t desc_b, uint32_t accumulate) {
  detail::gmma_u8_expand(d, desc_a, desc_b, accumulate, std::make_index_sequence<64>{});
}

}  // namespace apq::ext
