// Host-side description of the sm_90a BGMMA kernel (bgmma_gemm_kernel.cuh): tile constants,
// how the plane stacking adapts to the bit widths, and the TMA tensor maps of the operands.
// Plain C++ (no torch): shared by the launch (bgmma_gemm_sm90a.cu), the host plan (gemm_plan.cpp)
// and tests/emulator.
//
// A block has three warpgroups: warpgroup 0 is the producer (one thread issues the TMA
// copies), warpgroups 1 and 2 are consumers. Both consumers multiply the same 256 stacked
// rows of operand a (four m64 tiles) by their own 64 stacked rows of operand b (one n64 tile).
// Stacking puts every plane pair of an output into the registers of one consumer thread:
//   a: a thread holds rows 16w + g + 8h of each m64 tile i, i.e. 8 "slots" s = 2i + h.
//      Slot s of every thread is filled from stacked row 32 s + 8 w + g of the shared tile,
//      and plane p of real row r sits in slot s = p * slots_a + r / 32 (rows 32 s + r % 32),
//      so slots_a = 8 / bits_a real rows per thread and the shared tile is plane-major.
//   b: a thread holds columns 8 j + 2 t + e of the n64 tile (j = 0..7, e = 0, 1); plane q of
//      real row c sits in column block j = q * blocks_b + c / 8, so the planes of a column
//      differ only in j and blocks_b = 8 / bits_b.
// Both counts are powers of two, so the shift-add is a butterfly over slots and over column
// blocks (bgmma_gemm_kernel.cuh, fold_planes).
#pragma once

#include "bitplane_gemm.h"

#include <cuda.h>

#include <cstdint>

namespace apq::cuda {

struct BgmmaTile {
  static constexpr int kConsumers = 2;               // consumer warpgroups
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static constexpr int kMmaTiles = 4;                // m64 tiles of a per consumer
  static constexpr int kSlots = 2 * kMmaTiles;       // a rows per thread
  static constexpr int kColBlocks = 8;               // n8 blocks of the n64 tile
  static constexpr int kStackA = 64 * kMmaTiles;     // stacked rows of a per block
  static constexpr int kStackB = 8 * kColBlocks * kConsumers;
  static constexpr int kRowBytes = 128;              // 1024 bits of K per row: one stage
  static constexpr int kStageWords = kRowBytes / 4;
  static constexpr int kStageBits = kRowBytes * 8;
  static constexpr int kStages = 3;
  static constexpr int kTileABytes = kStackA * kRowBytes;
  static constexpr int kStageBytes = (kStackA + kStackB) * kRowBytes;
  // The epilogue runs as a loop over a thread's outputs, reading their U (int32) and, for
  // calls with several K-windows, their fp32 results from thread-private shared arrays of
  // kOutputs entries ([output][consumer thread]). More outputs than that only occur with one
  // window: then U goes to the stage buffers, free once the main loop is done.
  static constexpr int kConsumerThreads = 128 * kConsumers;
  static constexpr int kOutputs = 32;
  static constexpr int kOutputArrayBytes = kOutputs * kConsumerThreads * 4;
  // Stages, U and result arrays, 2 mbarriers per stage, and slack to align the stages to
  // 1024 bytes (the 128-byte swizzle pattern repeats every 8 rows).
  static constexpr int kSmemBytes = kStages * kStageBytes + 2 * kOutputArrayBytes + 2 * kStages * 8 + 1024;
  // K-windows of a fixed length, exact for every bit pair: a runtime length (BitplaneGemmParams::
  // window_bits) would cost the consumers registers they do not have (ptxas spills).
  static constexpr int64_t kWindowBits = exact_window_bits(8, 8);
  static constexpr int kProducerRegisters = 40;
  static constexpr int kConsumerRegisters = 232;
  static_assert(kSlots == 8 && kColBlocks == 8, "the butterflies cover up to 8 planes");
  static_assert(kStages * kStageBytes >= kSlots * kColBlocks * 2 * kConsumerThreads * 4,
                "the stage buffers hold every U of a one-window call");
  static_assert(kConsumerRegisters * 128 * kConsumers + kProducerRegisters * 128 <= 65536, "one block per SM");
  static_assert(kSmemBytes <= 227 * 1024, "sm_90 gives a block at most 227 KiB of shared memory");
};

struct BgmmaGeometry {
  int slots_a;          // real rows of a per thread (a power of two)
  int blocks_b;         // real column blocks of b per thread (a power of two)
  int used_slots;       // slots_a * bits_a
  int64_t rows_a;       // real rows of a per block
  int64_t rows_b_half;  // real rows of b per consumer warpgroup
  int64_t rows_b;       // real rows of b per block

  APQ_HD static BgmmaGeometry of(const BitplaneGemmParams& p) {
    // Calls with several K-windows keep an fp32 result per output in shared memory: at most
    // BgmmaTile::kOutputs per thread, i.e. slots_a * blocks_b * 2 <= 32.
    const int cap = KWindows::of(p, BgmmaTile::kWindowBits).single() ? 8 : 4;
    const int slots = 8 / p.a.bits < cap ? 8 / p.a.bits : cap;
    const int blocks = 8 / p.b.bits < cap ? 8 / p.b.bits : cap;
    return {slots, blocks, slots * p.a.bits, 32 * slots, 8 * blocks, 8 * blocks * BgmmaTile::kConsumers};
  }
};

// cuTensorMapEncodeTiled's signature: the driver's (through cudaGetDriverEntryPoint) or
// the emulator's.
using TensorMapEncoder = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                      const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                      CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// The planes of one operand as a 3-D tensor (word, row, plane), read in boxes of one stage
// of K x `box_rows` rows x one plane into 128-byte swizzled shared rows. Rows and words
// past the end read as zero, so ragged edges need no predicates.
inline CUresult encode_plane_map(TensorMapEncoder encode, CUtensorMap* map, const PlaneOperand& op, int64_t words,
                                 int64_t box_rows) {
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(words), static_cast<cuuint64_t>(op.rows),
                              static_cast<cuuint64_t>(op.bits)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(words) * 4, static_cast<cuuint64_t>(op.rows * words) * 4};
  const cuuint32_t box[3] = {BgmmaTile::kStageWords, static_cast<cuuint32_t>(box_rows), 1};
  const cuuint32_t element_strides[3] = {1, 1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_UINT32, 3, const_cast<uint32_t*>(op.planes), dims, strides, box,
                element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
}

// The tensor maps of both operands for a launch of `p` (grid and shared memory: gemm_plan.cpp's
// plan_launch, from the same BgmmaGeometry).
inline CUresult encode_bgmma_maps(TensorMapEncoder encode, const BitplaneGemmParams& p, CUtensorMap& map_a,
                                  CUtensorMap& map_b) {
  const BgmmaGeometry geo = BgmmaGeometry::of(p);
  const CUresult status = encode_plane_map(encode, &map_a, p.a, p.words, geo.rows_a);
  return status != CUDA_SUCCESS ? status : encode_plane_map(encode, &map_b, p.b, p.words, geo.rows_b_half);
}

}  // namespace apq::cuda
