// Host-side description of one bit-plane GEMM launch (shared by the fused kernels, the
// CUTLASS baseline and the host plan). Plain C++: included from .cpp and .cu files.
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
  bool read_once = false;  // no other block reads these planes: L2 may evict them first
};

// Element type of the output and of the bias.
enum class ElemType : int { Int32 = 0, Float32 = 1, Float16 = 2, BFloat16 = 3 };

struct BitplaneGemmParams {
  PlaneOperand a, b;
  int64_t words = 0;        // int32 words per packed row (K padded to 256 bits)
  int64_t K = 0;            // true K: the |g| term of the last group
  int64_t group_size = 0;   // 0: one group per row
  int64_t G = 1;
  int64_t window_bits = 0;  // longest exact int32 run of K for these bit widths (see exact_window_bits)
  bool exact = false;       // gemm: write the int32 sum U; otherwise the affine epilogue
  void* out = nullptr;
  ElemType out_type = ElemType::Int32;
  int64_t out_stride_a = 0, out_stride_b = 0;
  const void* bias = nullptr;  // indexed by the weight row; nullptr: no bias
  ElemType bias_type = ElemType::Float32;
  bool bias_on_a = false;      // true under swap-AB (weights are operand a)
  // Split-K (grid z > 1): block z reduces bits [z * split_bits, (z + 1) * split_bits) of K into
  // partials[z][a_row * b.rows + b_row] (int32 U, or fp32 sums of whole windows, see
  // KWindows::single), which split_k_reduce_kernel adds in split order: the result does not
  // depend on timing.
  int64_t split_bits = 0;
  void* partials = nullptr;
};

// The K granule of the kernels' pipeline: one 512-bit k-tile (two m16n8k256 steps).
constexpr int64_t kKTileBits = 512;

// Longest run of K (bits, a multiple of the k-tile) whose sum U of a_bits x b_bits codes stays
// exact in int32: (2^a - 1)(2^b - 1) * bits < 2^31 (8 x 8 bits: 32768).
constexpr int64_t exact_window_bits(int a_bits, int b_bits) {
  const int64_t max_product = ((int64_t{1} << a_bits) - 1) * ((int64_t{1} << b_bits) - 1);
  const int64_t bits = (int64_t{2147483647} / max_product) / kKTileBits * kKTileBits;
  return bits > kKTileBits ? bits : kKTileBits;
}

#if defined(__CUDACC__)
#define APQ_HD __host__ __device__ __forceinline__
#else
#define APQ_HD inline
#endif

// K is reduced in "windows": runs of bits summed exactly in int32 before the recovery
// turns them into output. A window closes at the end of its K-group and at most every
// window_bits (apq::gemm: one window, its int32 range is checked on the host).
// Group boundaries are multiples of 64 bits, so windows always end on a word.
struct KWindows {
  int64_t padded_bits, group_bits, K, G, window_bits;
  bool exact;
  APQ_HD static KWindows of(const BitplaneGemmParams& p) { return of(p, p.window_bits); }
  // With a window length the kernel fixes at compile time (at most p.window_bits' worst case).
  APQ_HD static KWindows of(const BitplaneGemmParams& p, int64_t window_bits) {
    const int64_t padded = p.words * 32;
    return {padded, p.group_size > 0 ? p.group_size : padded, p.K, p.G, window_bits, p.exact};
  }
  // Where the data ends: the end of the last group (later padding bits are zero and skipped).
  APQ_HD int64_t end_bits() const { return group_end(G - 1); }
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
    const int64_t cap = start + window_bits;
    return group_end(g) < cap ? group_end(g) : cap;
  }
  // The window closing at `end` is the last one.
  APQ_HD bool is_last(int64_t g, int64_t end) const {
    return end == padded_bits || (end == group_end(g) && g + 1 == G);
  }
  // The bits [begin, end) of K that split z of a split-K launch reduces (p.split_bits each).
  struct Run {
    int64_t begin, end;
  };
  APQ_HD Run split_run(int64_t z, int64_t split_bits) const {
    const int64_t begin = z * split_bits, end = begin + split_bits;
    return {begin, end < end_bits() ? end : end_bits()};
  }
  // One window covers everything: the output can be written straight from the recovery
  // (and split-K partials are exact int32 sums; otherwise fp32 sums of whole windows).
  APQ_HD bool single() const { return exact || (G == 1 && padded_bits <= window_bits); }
};

}  // namespace apq::cuda
