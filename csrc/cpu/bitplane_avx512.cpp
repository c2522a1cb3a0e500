// AVX-512 VPOPCNTDQ instantiation of the bit-plane driver: 512 bits of AND-popc per step.
#include "cpu_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <cstdint>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vpopcntdq,popcnt,bmi2")
#include <immintrin.h>

#include "bitplane_driver.h"

namespace apq::cpu {
namespace {

struct Avx512 {
  using vec = __m512i;
  static constexpr int lanes = 8;
  static constexpr int64_t chunk_vectors = 8;  // 4096 bits per row per chunk: fits L1

  static vec zero() { return _mm512_setzero_si512(); }
  static vec load(const uint64_t* p) { return _mm512_loadu_si512(p); }
  static vec load_lanes(const uint64_t* p, int n) {
    return _mm512_maskz_loadu_epi64(static_cast<__mmask8>((1u << n) - 1), p);
  }
  static vec and_popc(vec a, vec b) { return _mm512_popcnt_epi64(_mm512_and_si512(a, b)); }
  static vec add(vec a, vec b) { return _mm512_add_epi64(a, b); }
  static vec shl(vec a, int s) { return _mm512_sll_epi64(a, _mm_cvtsi32_si128(s)); }
  static void store(vec a, int64_t* out) { _mm512_storeu_si512(out, a); }

  // r[k] = sum of the lanes of a[k], for 8 vectors, in a shuffle/add tree.
  static vec reduce8(const vec* a) {
    vec t[4];
    for (int p = 0; p < 4; ++p) {
      t[p] = _mm512_add_epi64(_mm512_unpacklo_epi64(a[2 * p], a[2 * p + 1]),
                              _mm512_unpackhi_epi64(a[2 * p], a[2 * p + 1]));
    }
    auto fold = [](vec lo, vec hi) {
      return _mm512_add_epi64(_mm512_shuffle_i64x2(lo, hi, _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm512_shuffle_i64x2(lo, hi, _MM_SHUFFLE(3, 1, 3, 1)));
    };
    return fold(fold(t[0], t[1]), fold(t[2], t[3]));
  }
  static void hsum(const vec* v, int n, int64_t* out) {
    for (int k = 0; k < n; k += 8) {
      vec block[8];
      for (int b = 0; b < 8; ++b) block[b] = k + b < n ? v[k + b] : zero();
      int64_t sums[8];
      store(reduce8(block), sums);
      for (int b = 0; b < 8 && k + b < n; ++b) out[k + b] = sums[b];
    }
  }
};

// 64 byte codes at a time: plane i of the word is the mask of bytes with bit i set.
void pack_row_avx512(const uint8_t* codes, int64_t K, int64_t bits, uint64_t* dst,
                     int64_t plane_stride, int64_t row_qwords) {
  for (int64_t q = 0; q < row_qwords; ++q) {
    const int64_t k0 = q * 64;
    const int64_t n = K - k0 < 0 ? 0 : (K - k0 > 64 ? 64 : K - k0);
    const __mmask64 valid = n == 64 ? ~__mmask64{0} : (__mmask64{1} << n) - 1;
    const __m512i c = n > 0 ? _mm512_maskz_loadu_epi8(valid, codes + k0) : _mm512_setzero_si512();
    for (int64_t i = 0; i < bits; ++i) {
      dst[i * plane_stride + q] = _mm512_test_epi8_mask(c, _mm512_set1_epi8(static_cast<char>(1 << i)));
    }
  }
}

const Kernels kAvx512{"avx512", Avx512::lanes, &product<Avx512>, &pack_row_avx512};

}  // namespace

const Kernels* avx512_kernels() {
  __builtin_cpu_init();
  const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vpopcntdq");
  return supported ? &kAvx512 : nullptr;
}

}  // namespace apq::cpu

#pragma GCC pop_options

#else

namespace apq::cpu {
const Kernels* avx512_kernels() { return nullptr; }
}  // namespace apq::cpu

#endif
