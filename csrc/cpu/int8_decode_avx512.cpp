// AVX-512 VNNI int8 kernel for a few rows (decode; cpu_kernels.h: Int8Kernels "vnni-decode").
// The weights are read once per 4 rows and never stored expanded: each 8-word chunk of a
// channel becomes code bytes in registers (int8_avx512.h: expand8) and meets the activation
// words by vpdpbusd, one accumulator of 16 partial sums per (row, channel); at the end of
// each exact segment 16 accumulators are reduced together. The activations sit on the
// unsigned side, so only 8-bit weights need an offset (stored u - 128, 128 * sum(x) added).
#include "cpu_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,gfni,bmi2")
#include "int8_avx512.h"

namespace apq::cpu {
namespace {

thread_local Scratch tl_segment_sums;

// Lane s of the result = the sum of the 16 lanes of a[s].
APQ_INLINE __m512i reduce16(const __m512i* a) {
  __m512i t[8], u[4];
  for (int p = 0; p < 8; ++p) {
    t[p] = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2 * p], a[2 * p + 1]),
                            _mm512_unpackhi_epi32(a[2 * p], a[2 * p + 1]));
  }
  for (int q = 0; q < 4; ++q) {  // u[q], 128-bit lane L, dword s: lane L's sum of a[4q + s]
    u[q] = _mm512_add_epi32(_mm512_unpacklo_epi64(t[2 * q], t[2 * q + 1]),
                            _mm512_unpackhi_epi64(t[2 * q], t[2 * q + 1]));
  }
  const __m512i x01 = _mm512_add_epi32(_mm512_shuffle_i32x4(u[0], u[1], 0x44), _mm512_shuffle_i32x4(u[0], u[1], 0xEE));
  const __m512i x23 = _mm512_add_epi32(_mm512_shuffle_i32x4(u[2], u[3], 0x44), _mm512_shuffle_i32x4(u[2], u[3], 0xEE));
  return _mm512_add_epi32(_mm512_shuffle_i32x4(x01, x23, 0x88), _mm512_shuffle_i32x4(x01, x23, 0xDD));
}

// Rows [m, m + rows), rows <= MR, times the task's channels, in passes of 16 / MR channels.
template <int MR>
void decode_rows(const XBytes& x, int64_t m, int rows, const PlaneMatrix& w, int64_t K, const Block& b,
                 const Epilogue& ep) {
  constexpr int NC = 16 / MR;
  const int64_t nq = (K + 63) / 64, plane = w.rows * w.row_qwords;
  const bool flip = w.bits == 8;
  const __m512i to_unsigned = _mm512_set1_epi8(static_cast<char>(x.bits == 8 ? 0x80 : 0));
  const int8_t* xr[MR];
  for (int r = 0; r < MR; ++r) xr[r] = x.data + (m + (r < rows ? r : rows - 1)) * x.ld;
  // U of every segment, [segment][row][channel], then (8-bit weights) x's code sums [segment][row].
  int32_t* U_all = static_cast<int32_t*>(tl_segment_sums.get(b.nseg * MR * (kCols + 1) * sizeof(int32_t)));
  int32_t* x_sums = U_all + b.nseg * MR * kCols;
  if (flip) {
    for (int64_t si = 0; si < b.nseg; ++si) {
      for (int r = 0; r < MR; ++r) {
        __m512i s = _mm512_setzero_si512();
        for (int64_t q = b.segs[si].q0; q < b.segs[si].q1; ++q) {
          const __m512i xw = _mm512_xor_si512(_mm512_loadu_si512(xr[r] + q * 64), to_unsigned);
          s = _mm512_add_epi64(s, _mm512_sad_epu8(xw, _mm512_setzero_si512()));
        }
        x_sums[si * MR + r] = static_cast<int32_t>(_mm512_reduce_add_epi64(s));
      }
    }
  }
  for (int c0 = 0; c0 < b.ncols; c0 += NC) {
    __m512i acc[16];
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_si512();
    int64_t si = 0;
    for (int64_t q0 = 0; q0 < nq; q0 += 8) {
      const int words = static_cast<int>(imin(8, nq - q0));
      __m512i codes[NC][8];
      for (int c = 0; c < NC; ++c) {
        if (c0 + c < b.ncols) {
          expand_codes(w.data + (b.n0 + c0 + c) * w.row_qwords + q0, plane, w.bits, words, flip, codes[c]);
        } else {
          for (int j = 0; j < 8; ++j) codes[c][j] = _mm512_setzero_si512();
        }
      }
      for (int j = 0; j < words; ++j) {
        const int64_t q = q0 + j;
        __m512i xw[MR];
        for (int r = 0; r < MR; ++r) xw[r] = _mm512_xor_si512(_mm512_loadu_si512(xr[r] + q * 64), to_unsigned);
        for (int c = 0; c < NC; ++c) {
          for (int r = 0; r < MR; ++r) acc[r * NC + c] = _mm512_dpbusd_epi32(acc[r * NC + c], xw[r], codes[c][j]);
        }
        if (q + 1 == b.segs[si].q1) {
          const __m512i sums = reduce16(acc);  // lane r * NC + c
          int32_t* dst = U_all + si * MR * kCols + c0;
          if constexpr (MR == 1) {
            _mm512_storeu_si512(dst, sums);
          } else if constexpr (MR == 2) {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm512_castsi512_si256(sums));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + kCols), _mm512_extracti64x4_epi64(sums, 1));
          } else {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm512_castsi512_si128(sums));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + kCols), _mm512_extracti32x4_epi32(sums, 1));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2 * kCols), _mm512_extracti32x4_epi32(sums, 2));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 3 * kCols), _mm512_extracti32x4_epi32(sums, 3));
          }
          for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_si512();
          ++si;
        }
      }
    }
  }
  TileAcc<MR> t;
  for (int64_t si = 0; si < b.nseg; ++si) {
    __m512i U[MR][kVecs];
    for (int r = 0; r < MR; ++r) {
      const __m512i corr = _mm512_set1_epi32(flip ? x_sums[si * MR + r] * 128 : 0);
      for (int v = 0; v < kVecs; ++v) {
        const __m512i u = _mm512_maskz_loadu_epi32(col_mask(b.ncols, v), U_all + (si * MR + r) * kCols + 16 * v);
        U[r][v] = _mm512_add_epi32(u, corr);
      }
    }
    finish_segment<MR>(b, ep, b.segs[si], m, rows, U, t);
  }
  if (ep.exact == nullptr) write_affine<MR>(b, ep, m, rows, t);
}

void product_vnni_decode(const XBytes& x, const PlaneMatrix& w, const GroupSpec& gs, int64_t m0, int64_t m1,
                         int64_t n0, int64_t n1, const Epilogue& ep) {
  const Block b = prepare_block(gs, n0, n1, ep);
  for (int64_t m = m0; m < m1; m += 4) {
    const int rows = static_cast<int>(imin(4, m1 - m));
    if (rows == 1) {
      decode_rows<1>(x, m, rows, w, gs.K, b, ep);
    } else if (rows == 2) {
      decode_rows<2>(x, m, rows, w, gs.K, b, ep);
    } else {
      decode_rows<4>(x, m, rows, w, gs.K, b, ep);
    }
  }
}

const Int8Kernels kVnniDecode{"vnni-decode", &product_vnni_decode, &bytes_from_planes_avx512};

}  // namespace
}  // namespace apq::cpu

#pragma GCC pop_options

namespace apq::cpu {
const Int8Kernels* vnni_decode_kernels() { return vnni_supported() ? &kVnniDecode : nullptr; }
}  // namespace apq::cpu

#else

namespace apq::cpu {
const Int8Kernels* vnni_decode_kernels() { return nullptr; }
}  // namespace apq::cpu

#endif
