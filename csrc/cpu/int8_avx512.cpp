// AVX-512 VNNI int8 kernel (cpu_kernels.h: Int8Kernels). A task owns 32 output channels:
// their weight planes are expanded to bytes once (one masked byte add per plane and 64
// weights), transposed into vpdpbusd order (a vector holds 4 consecutive k of 16 channels)
// and kept in a thread-local buffer; the activation rows then stream past them in micro
// tiles of MR rows x 32 channels, each k quad one broadcast and two vpdpbusd per row.
// Accumulation is int32 over windows short enough that no lane can overflow, then double.
//
// Like bitplane_avx512.cpp this translation unit is compiled for AVX-512 and uses no
// std:: templates (an inline instantiation could be merged into code for other CPUs).
#include "cpu_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <cstdint>
#include <cstdlib>

#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,bmi2")
#include <immintrin.h>

#define APQ_INLINE inline __attribute__((always_inline))

namespace apq::cpu {
namespace {

constexpr int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

constexpr int kVecs = 2;                     // vectors of 16 channels per task
constexpr int kCols = 16 * kVecs;            // channels per task
constexpr int64_t kQuadBytes = 64 * kVecs;   // one k quad of the expanded block
static_assert(kCols == kInt8BlockCols, "one task is one block of output channels");
// Words per int32 window: a lane adds at most 64 * kWindowWords products of a signed
// activation byte (|b| <= 128) and a weight byte (<= 255): 2.7e8 < 2^31 for any K.
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

// 16 rows of 16 int32 each transposed in registers: out[j][c] = in[c][j].
APQ_INLINE void transpose16(__m512i* r) {
  __m512i t[16], u[16];
  for (int p = 0; p < 8; ++p) {
    t[2 * p] = _mm512_unpacklo_epi32(r[2 * p], r[2 * p + 1]);
    t[2 * p + 1] = _mm512_unpackhi_epi32(r[2 * p], r[2 * p + 1]);
  }
  // u[4a + s], 128-bit lane L: rows 4a..4a+3 at column 4L + s
  for (int a = 0; a < 4; ++a) {
    u[4 * a + 0] = _mm512_unpacklo_epi64(t[4 * a], t[4 * a + 2]);
    u[4 * a + 1] = _mm512_unpackhi_epi64(t[4 * a], t[4 * a + 2]);
    u[4 * a + 2] = _mm512_unpacklo_epi64(t[4 * a + 1], t[4 * a + 3]);
    u[4 * a + 3] = _mm512_unpackhi_epi64(t[4 * a + 1], t[4 * a + 3]);
  }
  for (int s = 0; s < 4; ++s) {  // a 4 x 4 transpose of 128-bit lanes per column residue s
    const __m512i v0 = _mm512_shuffle_i32x4(u[s], u[4 + s], 0x88);
    const __m512i v1 = _mm512_shuffle_i32x4(u[s], u[4 + s], 0xDD);
    const __m512i v2 = _mm512_shuffle_i32x4(u[8 + s], u[12 + s], 0x88);
    const __m512i v3 = _mm512_shuffle_i32x4(u[8 + s], u[12 + s], 0xDD);
    r[s] = _mm512_shuffle_i32x4(v0, v2, 0x88);
    r[4 + s] = _mm512_shuffle_i32x4(v1, v3, 0x88);
    r[8 + s] = _mm512_shuffle_i32x4(v0, v2, 0xDD);
    r[12 + s] = _mm512_shuffle_i32x4(v1, v3, 0xDD);
  }
}

// The 64 codes of word q of a row (plane-0 word at p, planes `plane` words apart) as bytes.
APQ_INLINE __m512i expand_word(const uint64_t* p, int64_t bits, int64_t plane, uint64_t valid) {
  __m512i e = _mm512_maskz_mov_epi8(_cvtu64_mask64(p[0] & valid), _mm512_set1_epi8(1));
  for (int64_t i = 1; i < bits; ++i) {
    e = _mm512_mask_add_epi8(e, _cvtu64_mask64(p[i * plane] & valid), e,
                             _mm512_set1_epi8(static_cast<char>(1 << i)));
  }
  return e;
}

// One task's weights and per-channel epilogue terms.
struct Block {
  const uint8_t* S;       // S[(quad * kVecs + v) * 64 + 4 * c + k % 4]: channel 16 v + c
  const int32_t* wsums;   // [segment][kCols] code sums (8-bit activations), else nullptr
  const double* sw;       // [G][kCols] weight scales
  const double* zw;       // [G][kCols] weight offsets
  const double* d;        // [kCols]: sum_g sw * (Sw_g + zw * |g|)
  const double* bias;     // [kCols], zero without bias
  const Segment* segs;
  int64_t nseg;
  int64_t groups;
  int ncols;
};

// Expands channels [n0, n1) (zero beyond) into `S`; with `wsums`, also their code sums per segment.
void expand_block(const PlaneMatrix& w, int64_t K, int64_t n0, int64_t n1, const Segment* segs,
                  int64_t nseg, uint8_t* S, int32_t* wsums) {
  const int64_t nq = (K + 63) / 64, plane = w.rows * w.row_qwords;
  const uint64_t tail = K % 64 ? (uint64_t{1} << (K % 64)) - 1 : ~uint64_t{0};
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t s = 0; s < nseg; ++s) {
    __m512i sums[kVecs];
    for (int v = 0; v < kVecs; ++v) sums[v] = _mm512_setzero_si512();
    for (int64_t q = segs[s].q0; q < segs[s].q1; ++q) {
      const uint64_t valid = q == nq - 1 ? tail : ~uint64_t{0};
      for (int v = 0; v < kVecs; ++v) {
        __m512i e[16];
        for (int c = 0; c < 16; ++c) {
          const int64_t n = n0 + 16 * v + c;
          e[c] = n < n1 ? expand_word(w.data + n * w.row_qwords + q, w.bits, plane, valid)
                        : _mm512_setzero_si512();
        }
        transpose16(e);
        for (int j = 0; j < 16; ++j) {
          _mm512_store_si512(S + ((q * 16 + j) * kVecs + v) * 64, e[j]);
          if (wsums) sums[v] = _mm512_dpbusd_epi32(sums[v], e[j], ones);
        }
      }
    }
    if (wsums) {
      for (int v = 0; v < kVecs; ++v) _mm512_storeu_si512(wsums + s * kCols + 16 * v, sums[v]);
    }
  }
}

// MR activation rows x the task's channels, all groups; writes the outputs.
template <int MR>
void row_tile(const XBytes& x, int64_t m, const Block& b, const Epilogue& ep, int64_t n0) {
  alignas(64) double acc[MR][kCols];  // sum over finished groups of sw * (U + zw * Sx)
  alignas(64) double part[MR][kCols];  // U of the current group over its finished windows
  for (int r = 0; r < MR; ++r) {
    for (int c = 0; c < kCols; ++c) acc[r][c] = 0.0;
  }
  const int8_t* xr[MR];
  for (int r = 0; r < MR; ++r) xr[r] = x.data + (m + r) * x.ld;
  const __mmask16 colmask = static_cast<__mmask16>(b.ncols >= 16 ? 0xFFFF : (1u << b.ncols) - 1);
  const __mmask16 colmask_hi = static_cast<__mmask16>(b.ncols >= 32 ? 0xFFFF : b.ncols <= 16 ? 0 : (1u << (b.ncols - 16)) - 1);

  for (int64_t si = 0; si < b.nseg; ++si) {
    const Segment& s = b.segs[si];
    __m512i U[MR][kVecs];
    for (int r = 0; r < MR; ++r) {
      for (int v = 0; v < kVecs; ++v) U[r][v] = _mm512_setzero_si512();
    }
    const uint8_t* wp = b.S + s.q0 * 16 * kQuadBytes;
    for (int64_t k = s.q0 * 64; k < s.q1 * 64; k += 4, wp += kQuadBytes) {
      const __m512i w0 = _mm512_load_si512(wp), w1 = _mm512_load_si512(wp + 64);
      for (int r = 0; r < MR; ++r) {
        int32_t quad;
        __builtin_memcpy(&quad, xr[r] + k, 4);
        const __m512i xb = _mm512_set1_epi32(quad);
        U[r][0] = _mm512_dpbusd_epi32(U[r][0], w0, xb);
        U[r][1] = _mm512_dpbusd_epi32(U[r][1], w1, xb);
      }
    }
    if (b.wsums) {  // 8-bit activations were stored as u - 128
      for (int v = 0; v < kVecs; ++v) {
        const __m512i corr = _mm512_slli_epi32(_mm512_loadu_si512(b.wsums + si * kCols + 16 * v), 7);
        for (int r = 0; r < MR; ++r) U[r][v] = _mm512_add_epi32(U[r][v], corr);
      }
    }
    if (ep.exact != nullptr && s.first && s.last) {  // gemm within one window
      for (int r = 0; r < MR; ++r) {
        int32_t* out = ep.exact + (m + r) * ep.ld + n0;
        _mm512_mask_storeu_epi32(out, colmask, U[r][0]);
        _mm512_mask_storeu_epi32(out + 16, colmask_hi, U[r][1]);
      }
      continue;
    }
    // The segment's U as doubles, plus the group's earlier windows.
    for (int r = 0; r < MR; ++r) {
      for (int v = 0; v < kVecs; ++v) {
        __m512d lo = _mm512_cvtepi32_pd(_mm512_castsi512_si256(U[r][v]));
        __m512d hi = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(U[r][v], 1));
        double* p = part[r] + 16 * v;
        if (!s.first) {
          lo = _mm512_add_pd(lo, _mm512_load_pd(p));
          hi = _mm512_add_pd(hi, _mm512_load_pd(p + 8));
        }
        _mm512_store_pd(p, lo);
        _mm512_store_pd(p + 8, hi);
      }
    }
    if (!s.last) continue;
    if (ep.exact != nullptr) {  // gemm over several windows: the checked K keeps U in int32
      for (int r = 0; r < MR; ++r) {
        int32_t* out = ep.exact + (m + r) * ep.ld + n0;
        for (int v = 0; v < kVecs; ++v) {
          const __m512i u = _mm512_inserti64x4(
              _mm512_castsi256_si512(_mm512_cvtpd_epi32(_mm512_load_pd(part[r] + 16 * v))),
              _mm512_cvtpd_epi32(_mm512_load_pd(part[r] + 16 * v + 8)), 1);
          _mm512_mask_storeu_epi32(out + 16 * v, v == 0 ? colmask : colmask_hi, u);
        }
      }
      continue;
    }
    const int64_t g = s.group;
    const double* sw = b.sw + g * kCols;
    const double* zw = b.zw + g * kCols;
    for (int r = 0; r < MR; ++r) {
      const __m512d sx = _mm512_set1_pd(static_cast<double>(ep.x_rowsum[(m + r) * b.groups + g]));
      for (int c = 0; c < kCols; c += 8) {
        const __m512d t = _mm512_fmadd_pd(_mm512_load_pd(zw + c), sx, _mm512_load_pd(part[r] + c));
        _mm512_store_pd(acc[r] + c, _mm512_fmadd_pd(_mm512_load_pd(sw + c), t, _mm512_load_pd(acc[r] + c)));
      }
    }
  }
  if (ep.exact != nullptr) return;
  for (int r = 0; r < MR; ++r) {
    const __m512d sx = _mm512_set1_pd(static_cast<double>(ep.x_scale[m + r]));
    const __m512d zx = _mm512_set1_pd(static_cast<double>(ep.x_offset[m + r]));
    float* out = ep.out + (m + r) * ep.ld + n0;
    for (int c = 0; c < kCols; c += 8) {
      const __m512d inner = _mm512_fmadd_pd(zx, _mm512_load_pd(b.d + c), _mm512_load_pd(acc[r] + c));
      const __m512d y = _mm512_add_pd(_mm512_mul_pd(sx, inner), _mm512_load_pd(b.bias + c));
      const int left = b.ncols - c;
      if (left <= 0) break;
      const __mmask8 cols = static_cast<__mmask8>(left >= 8 ? 0xFF : (1u << left) - 1);
      _mm256_mask_storeu_ps(out + c, cols, _mm512_cvtpd_ps(y));
    }
  }
}

void product_vnni(const XBytes& x, const PlaneMatrix& w, const GroupSpec& gs, int64_t m0, int64_t m1,
                  int64_t n0, int64_t n1, const Epilogue& ep) {
  const int64_t nq = (gs.K + 63) / 64, G = gs.groups, gq = gs.group_qwords;
  const int64_t max_segs = G + nq / kWindowWords + 1;
  const bool affine = ep.exact == nullptr;
  // Parameter scratch: segments, code sums, sw, zw, d, bias.
  const size_t seg_bytes = (max_segs * sizeof(Segment) + 63) / 64 * 64;
  const size_t sums_bytes = max_segs * kCols * sizeof(int32_t);
  char* params = static_cast<char*>(tl_params.get(seg_bytes + sums_bytes + (2 * G + 2) * kCols * sizeof(double)));
  Segment* segs = reinterpret_cast<Segment*>(params);
  int32_t* wsums = reinterpret_cast<int32_t*>(params + seg_bytes);
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
  uint8_t* S = static_cast<uint8_t*>(tl_weights.get(nq * 16 * kQuadBytes));
  expand_block(w, gs.K, n0, n1, segs, nseg, S, x.bits == 8 ? wsums : nullptr);

  const int ncols = static_cast<int>(n1 - n0);
  if (affine) {
    for (int c = 0; c < kCols; ++c) {
      d[c] = 0.0;
      bias[c] = c < ncols && ep.bias ? ep.bias[n0 + c] : 0.0;
      for (int64_t g = 0; g < G; ++g) {
        const int64_t n = n0 + c, e = n * G + g;
        const bool real = c < ncols;
        sw[g * kCols + c] = real ? ep.w_scale[e] : 0.0;
        zw[g * kCols + c] = real ? ep.w_offset[e] : 0.0;
        if (real) {
          const double len = static_cast<double>(imin(gq * 64, gs.K - g * gq * 64));
          d[c] += sw[g * kCols + c] * (ep.w_rowsum[e] + zw[g * kCols + c] * len);
        }
      }
    }
  }
  const Block b{S, x.bits == 8 ? wsums : nullptr, sw, zw, d, bias, segs, nseg, G, ncols};
  int64_t m = m0;
  for (; m + 8 <= m1; m += 8) row_tile<8>(x, m, b, ep, n0);
  if (m1 - m >= 4) {
    row_tile<4>(x, m, b, ep, n0);
    m += 4;
  }
  if (m1 - m >= 2) {
    row_tile<2>(x, m, b, ep, n0);
    m += 2;
  }
  if (m1 - m >= 1) row_tile<1>(x, m, b, ep, n0);
}

void bytes_from_planes_vnni(const PlaneMatrix& x, int64_t K, int64_t r0, int64_t r1, int8_t* dst,
                            int64_t ld) {
  const int64_t nq = (K + 63) / 64, plane = x.rows * x.row_qwords;
  const uint64_t tail = K % 64 ? (uint64_t{1} << (K % 64)) - 1 : ~uint64_t{0};
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(x.bits == 8 ? 0x80 : 0));
  for (int64_t r = r0; r < r1; ++r) {
    int8_t* out = dst + r * ld;
    for (int64_t q = 0; q < ld / 64; ++q) {
      __m512i e = _mm512_setzero_si512();
      if (q < nq) {
        const uint64_t valid = q == nq - 1 ? tail : ~uint64_t{0};
        e = _mm512_maskz_mov_epi8(_cvtu64_mask64(valid),
                                  _mm512_xor_si512(expand_word(x.data + r * x.row_qwords + q, x.bits, plane, valid), flip));
      }
      _mm512_storeu_si512(out + q * 64, e);
    }
  }
}

const Int8Kernels kVnni{"vnni", &product_vnni, &bytes_from_planes_vnni};

}  // namespace

const Int8Kernels* vnni_kernels() {
  __builtin_cpu_init();
  const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
  return supported ? &kVnni : nullptr;
}

}  // namespace apq::cpu

#pragma GCC pop_options

#else

namespace apq::cpu {
const Int8Kernels* vnni_kernels() { return nullptr; }
}  // namespace apq::cpu

#endif
