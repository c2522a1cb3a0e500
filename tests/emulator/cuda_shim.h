// Host emulation of the CUDA execution model, just enough to run the fused kernel's code
// unchanged on the CPU (force-included before it by emulate_gemm.cpp's build): one
// std::thread per CUDA thread, a block-wide barrier for __syncthreads and a warp-wide one
// for the warp-collective instructions (apq/sm80_b1_primitives.hpp in this folder).
#pragma once

#include <barrier>
#include <cstdint>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __align__(n) alignas(n)

namespace emu {

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};

// What each emulated thread knows about itself; set by the launcher.
struct ThreadContext {
  Dim3 thread, block;
  std::barrier<>* block_barrier = nullptr;
  std::barrier<>* warp_barrier = nullptr;
  struct WarpExchange* warp = nullptr;
};
extern thread_local ThreadContext ctx;

// Per-warp mailbox of the collective instructions: every lane posts, all read.
struct WarpExchange {
  const uint8_t* address[32];
  uint32_t a[32][4];
  uint32_t b[32][2];
};

inline void warp_sync() { ctx.warp_barrier->arrive_and_wait(); }

}  // namespace emu

#define threadIdx (emu::ctx.thread)
#define blockIdx (emu::ctx.block)
inline void __syncthreads() { emu::ctx.block_barrier->arrive_and_wait(); }
