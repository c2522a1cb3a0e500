// Pieces shared by the AVX-512 int8 kernels (int8_avx512.cpp: many rows, int8_decode_avx512.cpp:
// a few): weight planes expanded to code bytes, the per-task epilogue terms, the exact
// windows and the double epilogue. Include only from a translation unit compiled for
// AVX-512 (#pragma GCC target as in those files); everything here has internal linkage and
// uses no std:: templates, for the reason bitplane_driver.h gives.
#pragma once

#include "cpu_kernels.h"

#include <immintrin.h>

#include <cstdint>
#include <cstdlib>

#define APQ_INLINE inline __attribute__((always_inline))

namespace apq::cpu {

// Defined in int8_avx512.cpp, shared by both int8 kernels.
bool vnni_supported();
void bytes_from_planes_avx512(const PlaneMatrix& x, int64_t K, int64_t r0, int64_t r1, int8_t* dst, int64_t ld);

namespace {

constexpr int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

constexpr int kVecs = 2;            // vectors of 16 channels per task
constexpr int kCols = 16 * kVecs;   // channels per task
static_assert(kCols == kInt8BlockCols, "one task is one block of output channels");
// Words per int32 window: a lane adds at most 64 * kWindowWords products of two bytes, one
// of them at most 128 in magnitude and the other at most 255: 2.7e8 < 2^31 for any K.
constexpr int64_t kWindowWords = 128;

// A thread's scratch memory: grows, never shrinks, 64-byte aligned.
struct Scratch {
  void* data = nullptr;
  size_t size = 0;
  ~Scratch() { std::free(data); }
  void* get(size_t bytes) {
    if (bytes > size) {
      std::free(data);
      size = (bytes + 4095) / 4096 * 4096;
      data = std::aligned_alloc(64, size);
    }
    return data;
  }
};
thread_local Scratch tl_weights, tl_params;

// Words [q0, q1) of one group, cut at window boundaries.
struct Segment {
  int64_t q0, q1, group;
  bool first, last;  // of its group
};

// ---- codes from planes ----

struct ByteIndex {
  alignas(64) uint8_t v[64];
};
// vpermb index that turns T (qword i = byte row of plane i) into D (qword j byte 7 - i =
// byte j of plane i), the bit-matrix layout gf2p8affineqb transposes; `base` picks which 32
// bytes of a two-word register hold T when only 4 planes are read.
constexpr ByteIndex plane_transpose_index(int base) {
  ByteIndex r{};
  for (int j = 0; j < 8; ++j) {
    for (int i = 0; i < 8; ++i) r.v[8 * j + 7 - i] = static_cast<uint8_t>((base + 8 * i + j) & 63);
  }
  return r;
}
constexpr ByteIndex kPlaneIndex8 = plane_transpose_index(0);
constexpr ByteIndex kPlaneIndex4[2] = {plane_transpose_index(0), plane_transpose_index(32)};

// gf2p8affineqb with A = D and x byte t = 1 << t: output byte t of qword j has bit i = bit t
// of D byte 7 - i = bit 8 j + t of plane i: the code of weight 8 j + t.
APQ_INLINE __m512i bit_transpose(__m512i d, bool flip_msb) {
  const __m512i select_bit = _mm512_set1_epi64(0x8040201008040201ll);
  return flip_msb ? _mm512_gf2p8affine_epi64_epi8(select_bit, d, 0x80)
                  : _mm512_gf2p8affine_epi64_epi8(select_bit, d, 0);
}

// The codes of 8 consecutive words of one row (plane-0 words at p, planes `plane` words
// apart, the first `words` of them read) as 8 vectors of 64 bytes; flip_msb stores u ^ 128.
// A qword transpose gathers word w of every plane into one register, then vpermb and a
// bit-matrix transpose turn it into bytes: about 3.5 instructions per 64 weights for
// PB = 4 read planes (bits <= 4), 6 for PB = 8.
template <int PB>
APQ_INLINE void expand8(const uint64_t* p, int64_t plane, int64_t bits, int words, bool flip_msb, __m512i* out) {
  const __mmask8 lanes = static_cast<__mmask8>(words >= 8 ? 0xFF : (1u << words) - 1);
  __m512i P[PB];
  for (int i = 0; i < PB; ++i) P[i] = i < bits ? _mm512_maskz_loadu_epi64(lanes, p + i * plane) : _mm512_setzero_si512();
  const __m512i s1_lo = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11), s1_hi = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
  const __m512i s2_lo = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), s2_hi = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
  __m512i A[PB], B[PB];
  for (int i = 0; i < PB; i += 2) {  // A[i], A[i+1]: planes i, i+1 interleaved by word (0-3, 4-7)
    A[i] = _mm512_permutex2var_epi64(P[i], s1_lo, P[i + 1]);
    A[i + 1] = _mm512_permutex2var_epi64(P[i], s1_hi, P[i + 1]);
  }
  for (int i = 0; i < PB; i += 4) {  // B[i + h]: words 2h, 2h + 1 of planes i..i+3
    B[i + 0] = _mm512_permutex2var_epi64(A[i], s2_lo, A[i + 2]);
    B[i + 1] = _mm512_permutex2var_epi64(A[i], s2_hi, A[i + 2]);
    B[i + 2] = _mm512_permutex2var_epi64(A[i + 1], s2_lo, A[i + 3]);
    B[i + 3] = _mm512_permutex2var_epi64(A[i + 1], s2_hi, A[i + 3]);
  }
  if constexpr (PB == 4) {
    const __m512i idx0 = _mm512_load_si512(kPlaneIndex4[0].v), idx1 = _mm512_load_si512(kPlaneIndex4[1].v);
    const __mmask64 low_planes = 0xF0F0F0F0F0F0F0F0ull;  // D bytes 7 - i for i < 4
    for (int h = 0; h < 4; ++h) {
      out[2 * h] = bit_transpose(_mm512_maskz_permutexvar_epi8(low_planes, idx0, B[h]), flip_msb);
      out[2 * h + 1] = bit_transpose(_mm512_maskz_permutexvar_epi8(low_planes, idx1, B[h]), flip_msb);
    }
  } else {
    static_assert(PB == 8, "4 or 8 planes");
    const __m512i s3_lo = _mm512_setr_epi64(0, 1, 2, 3, 8, 9, 10, 11), s3_hi = _mm512_setr_epi64(4, 5, 6, 7, 12, 13, 14, 15);
    const __m512i idx = _mm512_load_si512(kPlaneIndex8.v);
    for (int h = 0; h < 4; ++h) {
      out[2 * h] = bit_transpose(_mm512_permutexvar_epi8(idx, _mm512_permutex2var_epi64(B[h], s3_lo, B[4 + h])), flip_msb);
      out[2 * h + 1] = bit_transpose(_mm512_permutexvar_epi8(idx, _mm512_permutex2var_epi64(B[h], s3_hi, B[4 + h])), flip_msb);
    }
  }
}

APQ_INLINE void expand_codes(const uint64_t* p, int64_t plane, int64_t bits, int words, bool flip_msb, __m512i* out) {
  if (bits <= 4) {
    expand8<4>(p, plane, bits, words, flip_msb, out);
  } else {
    expand8<8>(p, plane, bits, words, flip_msb, out);
  }
}

// ---- per task: groups, windows and the epilogue terms of its channels ----

struct Block {
  int64_t n0;          // first channel
  const Segment* segs;
  int64_t nseg;
  int64_t groups;
  int ncols;           // real channels of the task (the rest are zero)
  const double* sw;    // [G][kCols] weight scales
  const double* zw;    // [G][kCols] weight offsets
  const double* d;     // [kCols]: sum_g sw * (Sw_g + zw * |g|)
  const double* bias;  // [kCols], zero without bias
  int32_t* sums;       // [nseg][kCols]: scratch for per-segment code sums
};

// Segments and epilogue terms of channels [n0, n1), in the thread's parameter scratch.
Block prepare_block(const GroupSpec& gs, int64_t n0, int64_t n1, const Epilogue& ep) {
  const int64_t nq = (gs.K + 63) / 64, G = gs.groups, gq = gs.group_qwords;
  const int64_t max_segs = G + nq / kWindowWords + 1;
  const size_t seg_bytes = (max_segs * sizeof(Segment) + 63) / 64 * 64;
  const size_t sums_bytes = max_segs * kCols * sizeof(int32_t);
  char* params = static_cast<char*>(tl_params.get(seg_bytes + sums_bytes + (2 * G + 2) * kCols * sizeof(double)));
  Segment* segs = reinterpret_cast<Segment*>(params);
  int32_t* sums = reinterpret_cast<int32_t*>(params + seg_bytes);
  double* sw = reinterpret_cast<double*>(params + seg_bytes + sums_bytes);
  double* zw = sw + G * kCols;
  double* d = zw + G * kCols;
  double* bias = d + kCols;
  int64_t nseg = 0;
  for (int64_t g = 0; g < G; ++g) {
    const int64_t end = imin((g + 1) * gq, nq);
    for (int64_t q = g * gq; q < end; q += kWindowWords) {
      segs[nseg++] = {q, imin(q + kWindowWords, end), g, q == g * gq, q + kWindowWords >= end};
    }
  }
  const int ncols = static_cast<int>(n1 - n0);
  if (ep.exact == nullptr) {
    for (int c = 0; c < kCols; ++c) {
      const bool real = c < ncols;
      d[c] = 0.0;
      bias[c] = real && ep.bias ? ep.bias[n0 + c] : 0.0;
      for (int64_t g = 0; g < G; ++g) {
        const int64_t e = (n0 + c) * G + g;
        sw[g * kCols + c] = real ? ep.w_scale[e] : 0.0;
        zw[g * kCols + c] = real ? ep.w_offset[e] : 0.0;
        if (real) {
          const double len = static_cast<double>(imin(gq * 64, gs.K - g * gq * 64));
          d[c] += sw[g * kCols + c] * (ep.w_rowsum[e] + zw[g * kCols + c] * len);
        }
      }
    }
  }
  return {n0, segs, nseg, G, ncols, sw, zw, d, bias, sums};
}

// Per tile of MR rows: the sum over finished groups of sw * (U + zw * Sx), and the U of the
// current group over its finished windows.
template <int MR>
struct TileAcc {
  __m512d acc[MR][kCols / 8];
  alignas(64) double part[MR][kCols];
};

APQ_INLINE __mmask16 col_mask(int ncols, int v) {
  const int left = ncols - 16 * v;
  return static_cast<__mmask16>(left >= 16 ? 0xFFFF : left <= 0 ? 0 : (1u << left) - 1);
}

// Consumes the exact int32 products U of segment s for rows [m, m + rows) (MR - rows
// padding rows are ignored): gemm stores them, qmatmul folds them into t.
template <int MR>
APQ_INLINE void finish_segment(const Block& b, const Epilogue& ep, const Segment& s, int64_t m, int rows,
                               const __m512i (&U)[MR][kVecs], TileAcc<MR>& t) {
  if (ep.exact != nullptr && s.first && s.last) {  // gemm within one window
    for (int r = 0; r < rows; ++r) {
      for (int v = 0; v < kVecs; ++v) {
        _mm512_mask_storeu_epi32(ep.exact + (m + r) * ep.ld + b.n0 + 16 * v, col_mask(b.ncols, v), U[r][v]);
      }
    }
    return;
  }
  if (!s.first || !s.last) {  // a group of several windows: U as doubles, summed in t.part
    for (int r = 0; r < MR; ++r) {
      for (int v = 0; v < kVecs; ++v) {
        __m512d lo = _mm512_cvtepi32_pd(_mm512_castsi512_si256(U[r][v]));
        __m512d hi = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(U[r][v], 1));
        double* p = t.part[r] + 16 * v;
        if (!s.first) {
          lo = _mm512_add_pd(lo, _mm512_load_pd(p));
          hi = _mm512_add_pd(hi, _mm512_load_pd(p + 8));
        }
        _mm512_store_pd(p, lo);
        _mm512_store_pd(p + 8, hi);
      }
    }
    if (!s.last) return;
  }
  if (ep.exact != nullptr) {  // gemm over several windows: the checked K keeps U in int32
    for (int r = 0; r < rows; ++r) {
      for (int v = 0; v < kVecs; ++v) {
        const __m512i u = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm512_cvtpd_epi32(_mm512_load_pd(t.part[r] + 16 * v))),
            _mm512_cvtpd_epi32(_mm512_load_pd(t.part[r] + 16 * v + 8)), 1);
        _mm512_mask_storeu_epi32(ep.exact + (m + r) * ep.ld + b.n0 + 16 * v, col_mask(b.ncols, v), u);
      }
    }
    return;
  }
  const double* sw = b.sw + s.group * kCols;
  const double* zw = b.zw + s.group * kCols;
  __m512d sx[MR];
  for (int r = 0; r < MR; ++r) {
    const int64_t row = m + (r < rows ? r : rows - 1);
    sx[r] = _mm512_set1_pd(static_cast<double>(ep.x_rowsum[row * b.groups + s.group]));
  }
  for (int c = 0; c < kCols; c += 8) {
    const __m512d zw_c = _mm512_load_pd(zw + c), sw_c = _mm512_load_pd(sw + c);
    for (int r = 0; r < MR; ++r) {
      const __m256i half = (c / 8) % 2 ? _mm512_extracti64x4_epi64(U[r][c / 16], 1) : _mm512_castsi512_si256(U[r][c / 16]);
      const __m512d u_group = s.first ? _mm512_cvtepi32_pd(half) : _mm512_load_pd(t.part[r] + c);
      // zw * Sx is exact in double, so this equals U + zw * Sx rounded once
      const __m512d u = _mm512_fmadd_pd(zw_c, sx[r], u_group);
      t.acc[r][c / 8] = _mm512_fmadd_pd(sw_c, u, s.group == 0 ? _mm512_setzero_pd() : t.acc[r][c / 8]);
    }
  }
}

// qmatmul's outputs of rows [m, m + rows): y = sx * (acc + zx * d) + bias, as float.
template <int MR>
APQ_INLINE void write_affine(const Block& b, const Epilogue& ep, int64_t m, int rows, const TileAcc<MR>& t) {
  for (int r = 0; r < rows; ++r) {
    const __m512d sx = _mm512_set1_pd(static_cast<double>(ep.x_scale[m + r]));
    const __m512d zx = _mm512_set1_pd(static_cast<double>(ep.x_offset[m + r]));
    float* out = ep.out + (m + r) * ep.ld + b.n0;
    for (int c = 0; c < b.ncols; c += 8) {
      const __m512d inner = _mm512_fmadd_pd(zx, _mm512_load_pd(b.d + c), t.acc[r][c / 8]);
      const __m512d y = _mm512_add_pd(_mm512_mul_pd(sx, inner), _mm512_load_pd(b.bias + c));
      const int left = b.ncols - c;
      _mm256_mask_storeu_ps(out + c, static_cast<__mmask8>(left >= 8 ? 0xFF : (1u << left) - 1), _mm512_cvtpd_ps(y));
    }
  }
}

}  // namespace
}  // namespace apq::cpu
