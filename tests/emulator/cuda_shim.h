// Host emulation of the CUDA execution model, just enough to run the kernels' code
// unchanged on the CPU (force-included before it by emulate_gemm.cpp's build): one
// std::thread per CUDA thread, a block-wide barrier for __syncthreads and a warp-wide one
// for the warp-collective instructions (apq/sm80_b1_primitives.hpp in this folder).
#pragma once

#include <barrier>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

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

// The global memory a kernel may read (its operands), and the first read outside it.
struct GlobalReads {
  std::vector<std::pair<const uint8_t*, const uint8_t*>> ranges;
  std::mutex mutex;
  std::string violation;
  void check(const void* address, size_t bytes) {
    const auto* a = static_cast<const uint8_t*>(address);
    for (const auto& [begin, end] : ranges) {
      if (a >= begin && a + bytes <= end) return;
    }
    std::lock_guard<std::mutex> lock(mutex);
    if (violation.empty()) violation = "a kernel read global memory outside its operands";
  }
};

// What each emulated thread knows about itself; set by the launcher.
struct ThreadContext {
  Dim3 thread, block, grid, block_dim;
  uint8_t* shared = nullptr;  // the block's shared memory
  GlobalReads* reads = nullptr;  // checked by the emulated copies when set
  std::barrier<>* block_barrier = nullptr;
  std::barrier<>* warp_barrier = nullptr;
  struct WarpExchange* warp = nullptr;
};
extern thread_local ThreadContext ctx;

// Per-warp mailboxes of the collective instructions: every lane posts, all read (two,
// used in turn, see apq/sm80_b1_primitives.hpp).
struct WarpExchange {
  const uint8_t* address[2][32];
  uint32_t a[2][32][4];
  uint32_t b[2][32][2];
};

inline void warp_sync() { ctx.warp_barrier->arrive_and_wait(); }

}  // namespace emu

#include <cuda_runtime.h>  // names parameters `gridDim`, `blockDim`: included before the macros below

#define threadIdx (emu::ctx.thread)
#define blockIdx (emu::ctx.block)
#define gridDim (emu::ctx.grid)
#define blockDim (emu::ctx.block_dim)
inline void __syncthreads() { emu::ctx.block_barrier->arrive_and_wait(); }

