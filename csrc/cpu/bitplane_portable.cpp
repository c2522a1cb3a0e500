// Portable instantiation of the bit-plane driver: one 64-bit word per step, any CPU.
#include "bitplane_driver.h"

#include <algorithm>
#include <bit>
#include <cstring>

namespace apq::cpu {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the packed layout is read as little-endian 64-bit words");

struct Scalar {
  using vec = uint64_t;
  static constexpr int lanes = 1;
  static constexpr int64_t chunk_vectors = 64;  // 4096 bits per row per chunk

  static vec zero() { return 0; }
  static vec load(const uint64_t* p) { return *p; }
  static vec load_lanes(const uint64_t* p, int) { return *p; }
  static vec and_popc(vec a, vec b) { return static_cast<vec>(std::popcount(a & b)); }
  static vec add(vec a, vec b) { return a + b; }
  static vec shl(vec a, int s) { return a << s; }
  static void add_group_sums(vec a, int64_t q0, int64_t gq, int, int64_t* U) {
    U[q0 / gq] += static_cast<int64_t>(a);
  }
  static void hsum(const vec* v, int n, int64_t* out) {
    for (int t = 0; t < n; ++t) out[t] = static_cast<int64_t>(v[t]);
  }
  template <int MR, int NR>
  static void store_int32(const vec* v, int ncols, int32_t* out, int64_t ld) {
    for (int r = 0; r < MR; ++r) {
      for (int c = 0; c < ncols; ++c) out[r * ld + c] = static_cast<int32_t>(v[r * NR + c]);
    }
  }
};

// Bit i of 8 byte codes gathered into one byte by the classic multiply:
// (byte j's bit at 8j) * 0x0102040810204080 lands at bit 56 + j.
uint64_t gather_bit(uint64_t eight_codes, int64_t i) {
  return (((eight_codes >> i) & 0x0101010101010101ull) * 0x0102040810204080ull) >> 56;
}

void pack_row_portable(const uint8_t* codes, int64_t K, int64_t bits, uint64_t* dst,
                       int64_t plane_stride, int64_t row_qwords) {
  for (int64_t q = 0; q < row_qwords; ++q) {
    uint64_t chunk[8] = {};
    const int64_t n = std::clamp<int64_t>(K - q * 64, 0, 64);
    if (n > 0) std::memcpy(chunk, codes + q * 64, static_cast<size_t>(n));
    for (int64_t i = 0; i < bits; ++i) {
      uint64_t word = 0;
      for (int b = 0; b < 8; ++b) word |= gather_bit(chunk[b], i) << (8 * b);
      dst[i * plane_stride + q] = word;
    }
  }
}

RowStats row_stats_portable(const float* x, int64_t K) {
  RowStats stats = RowStats::empty();
  for (int64_t k = 0; k < K; ++k) stats.add(x[k]);
  return stats;
}

void quantize_row_portable(const float* x, int64_t K, QuantParams p, int bits, uint8_t* codes) {
  for (int64_t k = 0; k < K; ++k) codes[k] = static_cast<uint8_t>(quantize_value(x[k], p, bits));
}

const Kernels kPortable{"portable", Scalar::lanes, &product<Scalar>, &pack_row_portable,
                        &row_stats_portable, &quantize_row_portable};

}  // namespace

const Kernels& portable_kernels() { return kPortable; }

}  // namespace apq::cpu
