// Interface between the torch-facing CPU ops and the ISA-specific popcount kernels.
// The kernels see raw pointers only, so their translation units include no torch headers
// and can be compiled for AVX-512 without touching code that runs everywhere.
#pragma once

#include "../format.h"

#include <cstdint>

namespace apq::cpu {

// The b bit planes of a [rows, K] code matrix in the canonical layout (DESIGN.md §3),
// read as little-endian 64-bit words: bit k of a row is bit k % 64 of word k / 64.
struct PlaneMatrix {
  const uint64_t* data;  // data[(plane * rows + row) * row_qwords + q]
  int64_t bits;
  int64_t rows;
  int64_t row_qwords;
};

// How K splits into groups of 64-bit words; one group when group_size == 0.
struct GroupSpec {
  int64_t K;             // true length in bits; bits at and beyond K are ignored
  int64_t group_qwords;  // words per group (the last one may be shorter)
  int64_t groups;
};

// Receives the exact integer products of one micro tile of outputs:
// U[(i * ncols_stride + j) * groups + g] = sum_{k in g} u_x[m0 + i, k] * u_w[n0 + j, k].
class TileSink {
 public:
  virtual void consume(int64_t m0, int64_t mrows, int64_t n0, int64_t ncols,
                       int64_t ncols_stride, const int64_t* U) = 0;

  // A sink that only wants the exact int32 product of one group sets these, and the
  // kernel writes out[m * exact_ld + n] straight from its registers instead of calling
  // consume (the per-tile cost dominates 1-bit products at moderate K).
  int32_t* exact_out = nullptr;
  int64_t exact_ld = 0;

 protected:
  ~TileSink() = default;
};

// Micro tile shape of `product`; its scratch holds kMicroRows * kMicroCols * groups values.
constexpr int kMicroRows = 4;
constexpr int kMicroCols = 4;

// The x operand re-laid for streaming: rows [0, M - M % kMicroRows) in panels of
// kMicroRows rows, the remaining rows alone. Row r's data starts at word
// r0 * bits * vectors * lanes (r0: first row of its panel) and holds, for each plane i
// and vector v, the panel's rows' vectors side by side: [i][v][row in panel][lane].
// Words past K are zero, so kernels need no tail handling on x.
struct XPanels {
  const uint64_t* data;
  int64_t bits;
  int64_t rows;
  int64_t vectors;  // ceil(ceil(K / 64) / lanes)
};

struct Kernels {
  const char* name;
  int64_t lanes;  // 64-bit words per vector
  // Every micro tile of outputs [m0, m1) x [n0, n1), each handed to sink.consume;
  // m0 and m1 are multiples of kMicroRows or equal to x.rows.
  void (*product)(const XPanels& x, const PlaneMatrix& w, const GroupSpec& groups,
                  int64_t m0, int64_t m1, int64_t n0, int64_t n1, TileSink& sink,
                  int64_t* scratch);
  // Bit planes of one row of byte codes: writes row_qwords words into each of `bits`
  // planes (plane i at dst + i * plane_stride), zero past K.
  void (*pack_row)(const uint8_t* codes, int64_t K, int64_t bits, uint64_t* dst,
                   int64_t plane_stride, int64_t row_qwords);
  // Per-token quantization of one row (format.h), equal to the scalar definitions to the bit:
  // its statistics, and its codes codes[k] = quantize_value(x[k], p, bits).
  RowStats (*row_stats)(const float* x, int64_t K);
  void (*quantize_row)(const float* x, int64_t K, QuantParams p, int bits, uint8_t* codes);
};

const Kernels& portable_kernels();
// nullptr when this build or this CPU has no AVX-512 VPOPCNTDQ.
const Kernels* avx512_kernels();

// ---- int8 dot-product kernels: weight planes expanded to bytes, times activation bytes ----

// Activation codes as signed bytes: row m at data + m * ld, zero from K to ld (a multiple
// of 64). An 8-bit code u is stored as u - 128 (the kernels add 128 * sum(w) back), a
// narrower one as it is: vpdpbusd multiplies unsigned bytes (the weights) by signed ones.
struct XBytes {
  const int8_t* data;
  int64_t rows;
  int64_t ld;
  int64_t bits;
};

// The signed byte that XBytes stores for a code of `bits` bits.
inline int8_t code_byte(uint32_t code, int64_t bits) {
  return static_cast<int8_t>(bits == 8 ? static_cast<int32_t>(code) - 128 : static_cast<int32_t>(code));
}

// What the int8 kernels write for output (m, n): the exact int32 product (gemm, exact set)
// or the affine epilogue of DESIGN.md §2 in double, rounded to float (qmatmul, linear):
//   y = sx[m] * (sum_g sw[n,g] * (U_g + zw[n,g] * Sx_g[m]) + zx[m] * D[n]) + bias[n],
//   D[n] = sum_g sw[n,g] * (Sw_g[n] + zw[n,g] * |g|).
struct Epilogue {
  int32_t* exact;  // out[m * ld + n] when set; the affine fields are then unused
  float* out;
  int64_t ld;
  const int32_t* x_rowsum;  // [M, G]
  const float* x_scale;     // [M]
  const float* x_offset;    // [M]
  const int32_t* w_rowsum;  // [N, G]
  const float* w_scale;     // [N, G]
  const float* w_offset;    // [N, G]
  const float* bias;        // [N], or nullptr
};

// Output channels of one int8 task: two vectors of 16 int32 lanes.
constexpr int64_t kInt8BlockCols = 32;

struct Int8Kernels {
  const char* name;
  // Outputs [m0, m1) x [n0, n1), n1 - n0 <= kInt8BlockCols; the weights are read once.
  void (*product)(const XBytes& x, const PlaneMatrix& w, const GroupSpec& groups, int64_t m0,
                  int64_t m1, int64_t n0, int64_t n1, const Epilogue& ep);
  // Rows [r0, r1) of canonical planes as XBytes rows (dst + r * ld).
  void (*bytes_from_planes)(const PlaneMatrix& x, int64_t K, int64_t r0, int64_t r1, int8_t* dst,
                            int64_t ld);
};

// nullptr when this build or this CPU lacks AVX-512 VNNI, VBMI or GFNI. "vnni" expands
// each task's weights once for many rows; "vnni-decode" streams them for a few rows.
const Int8Kernels* vnni_kernels();
const Int8Kernels* vnni_decode_kernels();

}  // namespace apq::cpu
