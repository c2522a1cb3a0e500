// The sm_90a b1 warpgroup MMA as a CuTe-style atom: wgmma.mma_async m64n64k256
// .s32.b1.b1.and.popc (SASS: BGMMA.64x64x256.AND.POPC) with A from registers and B, K-major,
// from shared memory through a matrix descriptor; and the three wgmma ordering instructions.
// Only the instructions live here (tests/emulator/apq has host stand-ins with the same
// names); the layouts, descriptor and array helper are in sm90_b1_gmma_traits.hpp.
// CuTe has no b1 GMMA atom. XOR-popc is not offered: ptxas rejects it for wgmma.
#pragma once

#include <cute/arch/mma_sm90_gmma.hpp>

#include <cstdint>

namespace apq::ext {

// D (64 x 64 int32) = A (64 x 256 bits, registers) AND-popc B (64 x 256 bits, smem) [+ D].
struct SM90_64x64x256_S32U1U1_RS_TN_ANDPOPC {
  using DRegisters = void;
  using ARegisters = uint32_t[4];
  using BRegisters = uint64_t[1];
  using CRegisters = uint32_t[32];

  CUTE_HOST_DEVICE static void fma(
      uint32_t const& a0, uint32_t const& a1, uint32_t const& a2, uint32_t const& a3, uint64_t const& desc_b,
      uint32_t& d00, uint32_t& d01, uint32_t& d02, uint32_t& d03, uint32_t& d04, uint32_t& d05, uint32_t& d06,
      uint32_t& d07, uint32_t& d08, uint32_t& d09, uint32_t& d10, uint32_t& d11, uint32_t& d12, uint32_t& d13,
      uint32_t& d14, uint32_t& d15, uint32_t& d16, uint32_t& d17, uint32_t& d18, uint32_t& d19, uint32_t& d20,
      uint32_t& d21, uint32_t& d22, uint32_t& d23, uint32_t& d24, uint32_t& d25, uint32_t& d26, uint32_t& d27,
      uint32_t& d28, uint32_t& d29, uint32_t& d30, uint32_t& d31,
      cute::SM90::GMMA::ScaleOut const scale_D = cute::SM90::GMMA::ScaleOut::One) {
#if defined(CUTE_ARCH_MMA_SM90A_ENABLED)
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k256.s32.b1.b1.and.popc "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "{%32, %33, %34, %35}, %36, p;\n"
        "}\n"
        : "+r"(d00), "+r"(d01), "+r"(d02), "+r"(d03), "+r"(d04), "+r"(d05), "+r"(d06), "+r"(d07),
          "+r"(d08), "+r"(d09), "+r"(d10), "+r"(d11), "+r"(d12), "+r"(d13), "+r"(d14), "+r"(d15),
          "+r"(d16), "+r"(d17), "+r"(d18), "+r"(d19), "+r"(d20), "+r"(d21), "+r"(d22), "+r"(d23),
          "+r"(d24), "+r"(d25), "+r"(d26), "+r"(d27), "+r"(d28), "+r"(d29), "+r"(d30), "+r"(d31)
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc_b), "r"(int32_t(scale_D)));
#else
    CUTE_INVALID_CONTROL_PATH("SM90_64x64x256_S32U1U1_RS_TN_ANDPOPC needs sm_90a");
#endif
  }
};

// wgmma.fence: register operands written before it are seen by the wgmmas after it.
CUTE_DEVICE void gmma_fence() { cute::warpgroup_arrive(); }
// wgmma.commit_group: the wgmmas issued since the last commit form one group.
CUTE_DEVICE void gmma_commit() { cute::warpgroup_commit_batch(); }
// wgmma.wait_group N: at most N groups still in flight; the others' registers are final.
template <int N>
CUTE_DEVICE void gmma_wait() {
  cute::warpgroup_wait<N>();
}

}  // namespace apq::ext
