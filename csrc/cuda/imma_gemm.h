// Host-side description of the integer-MMA kernel (imma_gemm_kernel.cuh): its block tile and
// shared-memory layout. Plain C++: shared by the kernel, the host plan (gemm_plan.cpp) and
// tests/emulator.
//
// A block multiplies kRowsA real rows of a by kRowsB real rows of b (no plane stacking: the
// MMA sees 8-bit codes). Per 128-bit k-tile every thread copies the planes of one row (a
// 16-byte chunk per plane) into a cp.async stage and expands them into 128 codes of a code
// tile (cutlass_ext/apq/code_tile.hpp); two code tiles alternate, so one k-tile is expanded
// while the previous one is multiplied.
#pragma once

#include "bitplane_gemm.h"

#include <cstdint>

namespace apq::cuda {

struct ImmaTile {
  static constexpr int kWarpsA = 2, kWarpsB = 4;  // warps along a and b
  static constexpr int kMmaA = 4, kMmaB = 4;      // m16 / n8 MMA tiles per warp: 64 x 32 outputs
  static constexpr int kThreads = 32 * kWarpsA * kWarpsB;
  static constexpr int kRowsA = kWarpsA * 16 * kMmaA, kRowsB = kWarpsB * 8 * kMmaB;
  static constexpr int kKTileBits = 128;          // bits of K per k-tile: one code-tile row, 4 m16n8k32 steps
  static constexpr int kStages = 3;               // cp.async stages of planes
  static constexpr int kCodeTileBytes = (kRowsA + kRowsB) * kKTileBits;
  static_assert(kRowsA + kRowsB == kThreads, "every thread copies and expands one row of a k-tile");
  static_assert(kMmaB % 2 == 0, "B fragments load two n8 tiles per ldmatrix.x4");
  static_assert(::apq::cuda::kKTileBits % kKTileBits == 0,
                "split-K splits (multiples of the host plan's 512-bit k-tile) start on one of these k-tiles");

  // A stage holds 16 bytes (128 bits of K) of 8 planes of every row, [plane][row] (a's rows,
  // then b's), planes past an operand's bits zero-filled.
  static constexpr int kPlaneStride = (kRowsA + kRowsB) * 16;  // bytes from one plane's chunks to the next
  static constexpr int kStageBytes = 8 * kPlaneStride;
  // Two code tiles, then the plane stages: 160 KiB; the wgmma form (sm_90a) aligns them to
  // 1024 bytes (its descriptors' 128-byte swizzle), in 1 KiB more.
  static constexpr int kSmemBytes = 2 * kCodeTileBytes + kStages * kStageBytes;
  static constexpr int kWarpgroupAlign = 1024;
  static constexpr int kWarpgroupSmemBytes = kSmemBytes + kWarpgroupAlign;
};

}  // namespace apq::cuda
