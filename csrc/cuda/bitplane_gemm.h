// Host-side description of one bit-plane GEMM launch (shared by the fused kernel, the
// CUTLASS baseline and the kernel mapping). Plain C++: included from .cpp and .cu files.
//
// The kernels compute a "row operand" a (the MMA's A side) times a "column operand" b.
// Normally a = activations, b = weights; swap-AB (skinny M) puts the weights on the A
// side so that 16-row MMA tiles are filled by weight rows. The output element for
// (a-row r, b-row c) lives at out[r * out_stride_a + c * out_stride_b].
#pragma once

#include <cstdint>

namespace apq::cuda {

// Where one operand's packed planes and per-row metadata live (DESIGN.md §3).
// Metadata element (row r, group g) is at ptr[r * meta_row_stride + g * meta_group_stride]:
// weights have [R, G] scales (strides G, 1), activations [R] scales (strides 1, 0).
struct PlaneOperand {
  const uint32_t* planes = nullptr;  // [bits, rows, words]
  int64_t rows = 0;
  int bits = 0;
  const int32_t* rowsum = nullptr;   // [rows, G], always per group
  const float* scale = nullptr;
  const float* offset = nullptr;
  int64_t meta_row_stride = 0;
  int64_t meta_group_stride = 0;
};

// Element type of the output and of the bias.
enum class ElemType : int { Int32 = 0, Float32 = 1, Float16 = 2, BFloat16 = 3 };

struct BitplaneGemmParams {
  PlaneOperand a, b;
  int64_t words = 0;        // int32 words per packed row (K padded to 256 bits)
  int64_t K = 0;            // true K: the |g| term of the last group
  int64_t group_size = 0;   // 0: one group per row
  int64_t G = 1;
  bool exact = false;       // gemm: write the int32 sum U; otherwise the affine epilogue
  void* out = nullptr;
  ElemType out_type = ElemType::Int32;
  int64_t out_stride_a = 0, out_stride_b = 0;
  const void* bias = nullptr;  // indexed by the weight row; nullptr: no bias
  ElemType bias_type = ElemType::Float32;
  bool bias_on_a = false;      // true under swap-AB (weights are operand a)
};

// Longest run of K (bits) whose 8x8-bit sum stays exact in int32: 255*255*32768 < 2^31.
constexpr int64_t kMaxExactWindowBits = 32768;

#if defined(__CUDACC__)
#define APQ_HD __host__ __device__ __forceinline__
#else
#define APQ_HD inline
#endif

// K is reduced in "windows": runs of bits summed exactly in int32 before the recovery
// turns them into output. A window closes at the end of its K-group and at most every
// kMaxExactWindowBits (apq::gemm: one window, its int32 range is checked on the host).
// Group boundaries are multiples of 64 bits, so windows always end on a word.
struct KWindows {
  int64_t padded_bits, group_bits, K, G;
  bool exact;
  APQ_HD static KWindows of(const BitplaneGemmParams& p) {
    const int64_t padded = p.words * 32;
    return {padded, p.group_size > 0 ? p.group_size : padded, p.K, p.G, p.exact};
  }
  APQ_HD int64_t group_end(int64_t g) const {
    const int64_t end = (g + 1) * group_bits;
    return end < padded_bits ? end : padded_bits;
  }
  // True length |g| of group g (the padding bits are zero and do not count).
  APQ_HD int64_t group_len(int64_t g) const {
    const int64_t end = (g + 1) * group_bits;
    return (end < K ? end : K) - g * group_bits;
  }
  APQ_HD int64_t window_end(int64_t g, int64_t start) const {
    if (exact) return padded_bits;
    const int64_t cap = start + kMaxExactWindowBits;
    return group_end(g) < cap ? group_end(g) : cap;
  }
  // The window closing at `end` is the last one.
  APQ_HD bool is_last(int64_t g, int64_t end) const {
    return end == padded_bits || (end == group_end(g) && g + 1 == G);
  }
  // One window covers everything: the output can be written straight from the recovery.
  APQ_HD bool single() const { return exact || (G == 1 && padded_bits <= kMaxExactWindowBits); }
};

// Tile shapes of the fused kernel; one instantiation each (bitplane_gemm_sm80_*.cu).
// A block stacks the planes of stack_a / a.bits rows of a and stack_b / b.bits rows of b.
// Bgmma is the sm_90a wgmma kernel (bgmma_gemm.h), another kernel with its own stacking.
enum class TileConfig : int { Large = 0, Skinny = 1, Bgmma = 2 };
struct TileShape {
  int stack_a, stack_b;
};
constexpr TileShape kLargeTile{128, 128};  // 8 warps, 4 stages: throughput shapes
constexpr TileShape kSkinnyTile{64, 32};   // 2 warps, 6 stages: decode (swap-AB, weights on a)
const char* tile_config_name(TileConfig c);

// Launches on `stream` (a cudaStream_t). Throw on a launch error.
void launch_bitplane_gemm_large(const BitplaneGemmParams& p, void* stream);
void launch_bitplane_gemm_skinny(const BitplaneGemmParams& p, void* stream);
void launch_bitplane_gemm(TileConfig c, const BitplaneGemmParams& p, void* stream);
// The sm_90a BGMMA kernel (bgmma_gemm_sm90a.cu); the caller checks the GPU is sm_90.
void launch_bgmma_gemm(const BitplaneGemmParams& p, void* stream);

// Dynamic shared memory of one block (the large tile needs more than sm_86/sm_89 offer).
int bitplane_gemm_smem_bytes_large();
int bitplane_gemm_smem_bytes_skinny();
int bitplane_gemm_smem_bytes(TileConfig c);

// The CUTLASS baseline: device::Gemm<uint1b_t, ..., OpAndPopc> on the stacked planes of
// each K-group into an int32 workspace, then a recovery kernel. Not swapped (a = x).
void launch_baseline_gemm(const BitplaneGemmParams& p, int32_t* workspace, float* accumulator,
                          void* stream);
// Workspace sizes (elements) the baseline needs for this call.
int64_t baseline_workspace_elems(const BitplaneGemmParams& p);

}  // namespace apq::cuda
