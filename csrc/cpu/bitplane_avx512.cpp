// AVX-512 VPOPCNTDQ instantiation of the bit-plane driver: 512 bits of AND-popc per step.
#include "cpu_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <cstdint>

#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512bw,avx512vl,avx512vpopcntdq,popcnt,bmi2")
#include <immintrin.h>

#include "bitplane_driver.h"

namespace apq::cpu {
namespace {

struct Avx512 {
  using vec = __m512i;
  static constexpr int lanes = 8;
  static constexpr int64_t chunk_vectors = 8;  // 4096 bits per row per chunk: fits L1

  static APQ_KERNEL_INLINE vec zero() { return _mm512_setzero_si512(); }
  static APQ_KERNEL_INLINE vec load(const uint64_t* p) { return _mm512_loadu_si512(p); }
  static APQ_KERNEL_INLINE vec load_lanes(const uint64_t* p, int n) {
    return _mm512_maskz_loadu_epi64(static_cast<__mmask8>((1u << n) - 1), p);
  }
  static APQ_KERNEL_INLINE vec and_popc(vec a, vec b) { return _mm512_popcnt_epi64(_mm512_and_si512(a, b)); }
  static APQ_KERNEL_INLINE vec add(vec a, vec b) { return _mm512_add_epi64(a, b); }
  static APQ_KERNEL_INLINE vec shl(vec a, int s) { return _mm512_sll_epi64(a, _mm_cvtsi32_si128(s)); }

  // The lane sums of 8 vectors as two 256-bit registers: sums[q] lane l = sum of a[4q + l].
  // Halves first, then an in-lane tree on 256-bit registers (cheaper than 512-bit
  // cross-lane shuffles, notably on AMD Zen 4).
  static APQ_KERNEL_INLINE void reduce8(const vec* a, __m256i* sums) {
    __m256i h[8];
    for (int k = 0; k < 8; ++k) {
      h[k] = _mm256_add_epi64(_mm512_castsi512_si256(a[k]), _mm512_extracti64x4_epi64(a[k], 1));
    }
    __m256i t[4];  // t[p], 128-bit lane l: [sum of h[2p] lanes 2l..2l+1, same for h[2p + 1]]
    for (int p = 0; p < 4; ++p) {
      t[p] = _mm256_add_epi64(_mm256_unpacklo_epi64(h[2 * p], h[2 * p + 1]),
                              _mm256_unpackhi_epi64(h[2 * p], h[2 * p + 1]));
    }
    for (int q = 0; q < 2; ++q) {
      sums[q] = _mm256_add_epi64(_mm256_permute2x128_si256(t[2 * q], t[2 * q + 1], 0x20),
                                 _mm256_permute2x128_si256(t[2 * q], t[2 * q + 1], 0x31));
    }
  }
  static APQ_KERNEL_INLINE void hsum(const vec* v, int n, int64_t* out) {
    for (int k = 0; k < n; k += 8) {
      vec block[8];
      for (int b = 0; b < 8; ++b) block[b] = k + b < n ? v[k + b] : zero();
      __m256i sums[2];
      reduce8(block, sums);
      if (k + 8 <= n) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k), sums[0]);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k + 4), sums[1]);
      } else {
        int64_t tmp[8];
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(tmp), sums[0]);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(tmp + 4), sums[1]);
        for (int b = 0; k + b < n; ++b) out[k + b] = tmp[b];
      }
    }
  }

  // U[(q0 + l) / gq] += lane l of a for l < n, where lane l holds word q0 + l (q0 a
  // multiple of 8): groups of 1, 2 or 4 words are summed in-register.
  static APQ_KERNEL_INLINE void add_group_sums(vec a, int64_t q0, int64_t gq, int n, int64_t* U) {
    if (n == lanes && gq == 1) {
      _mm512_storeu_si512(U + q0, _mm512_add_epi64(_mm512_loadu_si512(U + q0), a));
    } else if (n == lanes && gq == 2) {
      const vec pairs = _mm512_add_epi64(a, _mm512_shuffle_epi32(a, _MM_PERM_BADC));  // even lanes
      const __m256i sums = _mm512_castsi512_si256(
          _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 2, 4, 6, 0, 2, 4, 6), pairs));
      __m256i* dst = reinterpret_cast<__m256i*>(U + q0 / 2);
      _mm256_storeu_si256(dst, _mm256_add_epi64(_mm256_loadu_si256(dst), sums));
    } else if (n == lanes && gq == 4) {
      const __m256i lo = _mm512_castsi512_si256(a), hi = _mm512_extracti64x4_epi64(a, 1);
      const __m256i both = _mm256_add_epi64(_mm256_unpacklo_epi64(lo, hi), _mm256_unpackhi_epi64(lo, hi));
      const __m128i sums = _mm_add_epi64(_mm256_castsi256_si128(both), _mm256_extracti128_si256(both, 1));
      __m128i* dst = reinterpret_cast<__m128i*>(U + q0 / 4);
      _mm_storeu_si128(dst, _mm_add_epi64(_mm_loadu_si128(dst), sums));
    } else {
      alignas(64) int64_t lane_sums[lanes];
      _mm512_store_si512(lane_sums, a);
      for (int l = 0; l < n; ++l) U[(q0 + l) / gq] += lane_sums[l];
    }
  }

  // The lane sums of an MR x 4 tile as int32 rows; each reduce8 yields two rows.
  template <int MR, int NR>
  static APQ_KERNEL_INLINE void store_int32(const vec* v, int ncols, int32_t* out, int64_t ld) {
    static_assert(NR == 4 && (MR == 1 || MR % 2 == 0), "tile rows of four 64-bit sums");
    const __mmask8 cols = static_cast<__mmask8>((1u << ncols) - 1);
    for (int r = 0; r < MR; r += 2) {
      vec block[8];
      for (int b = 0; b < 8; ++b) block[b] = r * NR + b < MR * NR ? v[r * NR + b] : zero();
      __m256i sums[2];
      reduce8(block, sums);
      for (int q = 0; q < 2 && r + q < MR; ++q) {
        const __m128i row = _mm256_cvtepi64_epi32(sums[q]);
        if (ncols == NR) {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(out + (r + q) * ld), row);
        } else {
          _mm_mask_storeu_epi32(out + (r + q) * ld, cols, row);  // masked stores are slow on Zen 4
        }
      }
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

// 16 values at a time; min/max need no care for NaN (a NaN row's statistics are unused) and
// never hold -0 (lanes start at +0, which -0 does not undercut).
RowStats row_stats_avx512(const float* x, int64_t K) {
  __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
  __mmask16 bad = 0;
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 valid = K - k >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (K - k)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(valid, x + k);  // zeros change neither lo nor hi
    bad |= _mm512_cmp_ps_mask(_mm512_sub_ps(v, v), _mm512_setzero_ps(), _CMP_NEQ_UQ);
    lo = _mm512_min_ps(v, lo);
    hi = _mm512_max_ps(v, hi);
  }
  return {_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi), bad == 0};
}

// quantize_value on 16 values: the same division, subtraction and round-to-nearest-even;
// the clamp's operands are never NaN here (a non-finite row has a NaN scale).
void quantize_row_avx512(const float* x, int64_t K, QuantParams p, int bits, uint8_t* codes) {
  const bool nan_scale = p.scale != p.scale;
  const __m512 scale = _mm512_set1_ps(p.scale), offset = _mm512_set1_ps(p.offset);
  const __m512 qmax = _mm512_set1_ps(static_cast<float>((1 << bits) - 1));
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 valid = K - k >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (K - k)) - 1);
    const __m512 t = _mm512_sub_ps(_mm512_div_ps(_mm512_maskz_loadu_ps(valid, x + k), scale), offset);
    const __m512 r = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512i c = nan_scale ? _mm512_setzero_si512()
                                : _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(r, _mm512_setzero_ps()), qmax));
    _mm512_mask_cvtepi32_storeu_epi8(codes + k, valid, c);
  }
}

const Kernels kAvx512{"avx512", Avx512::lanes, &product<Avx512>, &pack_row_avx512,
                      &row_stats_avx512, &quantize_row_avx512};

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
