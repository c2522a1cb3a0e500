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

// AVX-512 VNNI int8 kernel for many rows (cpu_kernels.h: Int8Kernels "vnni"). A task owns 32
// output channels: their weight planes are expanded to bytes once (int8_avx512.h: expand8),
// transposed into vpdpbusd order (a vector holds 4 consecutive k of 16 channels) and kept in
// a thread-local buffer; the activation rows then stream past them in micro tiles of MR
// rows x 32 channels, each k quad one broadcast and two vpdpbusd per row, accumulated in
// int32 over exact windows, then folded into the double epilogue per group.
#include "cpu_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,gfni,bmi2")
#include "int8_avx512.h"

namespace apq::cpu {
namespace {

constexpr int64_t kQuadBytes = 64 * kVecs;  // one k quad of the expanded block

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

// The task's weights as bytes in S[(quad * kVecs + v) * 64 + 4 c + k % 4] (channel 16 v + c,
// zero past K and past the real channels); with_sums also writes each channel's code sum
// per segment to b.sums (8-bit activations are stored as u - 128).
void expand_block(const PlaneMatrix& w, int64_t K, const Block& b, uint8_t* S, bool with_sums) {
  const int64_t nq = (K + 63) / 64, plane = w.rows * w.row_qwords;
  const uint64_t tail = K % 64 ? (uint64_t{1} << (K % 64)) - 1 : ~uint64_t{0};
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i codes[16][8];
  for (int v = 0; v < kVecs; ++v) {
    int64_t si = 0;
    __m512i sums = _mm512_setzero_si512();
    for (int64_t q0 = 0; q0 < nq; q0 += 8) {
      const int words = static_cast<int>(imin(8, nq - q0));
      for (int c = 0; c < 16; ++c) {
        const int64_t n = b.n0 + 16 * v + c;
        if (16 * v + c < b.ncols) {
          expand_codes(w.data + n * w.row_qwords + q0, plane, w.bits, words, false, codes[c]);
          if (q0 + words == nq) codes[c][words - 1] = _mm512_maskz_mov_epi8(_cvtu64_mask64(tail), codes[c][words - 1]);
        } else {
          for (int j = 0; j < 8; ++j) codes[c][j] = _mm512_setzero_si512();
        }
      }
      for (int j = 0; j < words; ++j) {
        const int64_t q = q0 + j;
        __m512i e[16];
        for (int c = 0; c < 16; ++c) e[c] = codes[c][j];
        transpose16(e);
        for (int k = 0; k < 16; ++k) {
          _mm512_store_si512(S + ((q * 16 + k) * kVecs + v) * 64, e[k]);
          if (with_sums) sums = _mm512_dpbusd_epi32(sums, e[k], ones);
        }
        if (q + 1 == b.segs[si].q1) {
          if (with_sums) _mm512_storeu_si512(b.sums + si * kCols + 16 * v, sums);
          sums = _mm512_setzero_si512();
          ++si;
        }
      }
    }
  }
}

// U[r][v] = the products of rows xr[r] and the expanded weights over k in [k0, k1).
template <int MR>
APQ_INLINE void dot_quads(const int8_t* const* xr, const uint8_t* S, int64_t k0, int64_t k1, __m512i (&U)[MR][kVecs]) {
  __m512i a0[MR], a1[MR];
  for (int r = 0; r < MR; ++r) a0[r] = a1[r] = _mm512_setzero_si512();
  const uint8_t* wp = S + k0 / 4 * kQuadBytes;
  for (int64_t k = k0; k < k1; k += 4, wp += kQuadBytes) {
    const __m512i w0 = _mm512_load_si512(wp), w1 = _mm512_load_si512(wp + 64);
    for (int r = 0; r < MR; ++r) {
      int32_t quad;
      __builtin_memcpy(&quad, xr[r] + k, 4);
      const __m512i xb = _mm512_set1_epi32(quad);
      a0[r] = _mm512_dpbusd_epi32(a0[r], w0, xb);
      a1[r] = _mm512_dpbusd_epi32(a1[r], w1, xb);
    }
  }
  for (int r = 0; r < MR; ++r) {
    U[r][0] = a0[r];
    U[r][1] = a1[r];
  }
}

// MR activation rows x the task's channels, all segments; writes the outputs.
template <int MR>
void row_tile(const XBytes& x, int64_t m, const Block& b, const uint8_t* S, const Epilogue& ep) {
  TileAcc<MR> t;
  const int8_t* xr[MR];
  for (int r = 0; r < MR; ++r) xr[r] = x.data + (m + r) * x.ld;
  for (int64_t si = 0; si < b.nseg; ++si) {
    const Segment& s = b.segs[si];
    __m512i U[MR][kVecs];
    dot_quads<MR>(xr, S, s.q0 * 64, s.q1 * 64, U);
    if (x.bits == 8) {  // stored as u - 128: add 128 * sum(w) back
      for (int v = 0; v < kVecs; ++v) {
        const __m512i corr = _mm512_slli_epi32(_mm512_loadu_si512(b.sums + si * kCols + 16 * v), 7);
        for (int r = 0; r < MR; ++r) U[r][v] = _mm512_add_epi32(U[r][v], corr);
      }
    }
    finish_segment<MR>(b, ep, s, m, MR, U, t);
  }
  if (ep.exact == nullptr) write_affine<MR>(b, ep, m, MR, t);
}

void product_vnni(const XBytes& x, const PlaneMatrix& w, const GroupSpec& gs, int64_t m0, int64_t m1,
                  int64_t n0, int64_t n1, const Epilogue& ep) {
  const Block b = prepare_block(gs, n0, n1, ep);
  const int64_t nq = (gs.K + 63) / 64;
  uint8_t* S = static_cast<uint8_t*>(tl_weights.get(nq * 16 * kQuadBytes));
  expand_block(w, gs.K, b, S, x.bits == 8);
  int64_t m = m0;
  // Grouped products fold every group into double accumulators: 4 rows keep them in registers.
  if (b.groups == 1) {
    for (; m + 8 <= m1; m += 8) row_tile<8>(x, m, b, S, ep);
  }
  for (; m + 4 <= m1; m += 4) row_tile<4>(x, m, b, S, ep);
  if (m1 - m >= 2) {
    row_tile<2>(x, m, b, S, ep);
    m += 2;
  }
  if (m1 - m >= 1) row_tile<1>(x, m, b, S, ep);
}

}  // namespace

// Rows of canonical planes as XBytes (8-bit codes flipped to u - 128, zero past K).
void bytes_from_planes_avx512(const PlaneMatrix& x, int64_t K, int64_t r0, int64_t r1, int8_t* dst, int64_t ld) {
  const int64_t nq = (K + 63) / 64, plane = x.rows * x.row_qwords;
  const uint64_t tail = K % 64 ? (uint64_t{1} << (K % 64)) - 1 : ~uint64_t{0};
  for (int64_t r = r0; r < r1; ++r) {
    int8_t* out = dst + r * ld;
    for (int64_t q0 = 0; q0 < nq; q0 += 8) {
      const int words = static_cast<int>(imin(8, nq - q0));
      __m512i codes[8];
      expand_codes(x.data + r * x.row_qwords + q0, plane, x.bits, words, x.bits == 8, codes);
      if (q0 + words == nq) codes[words - 1] = _mm512_maskz_mov_epi8(_cvtu64_mask64(tail), codes[words - 1]);
      for (int j = 0; j < words; ++j) _mm512_storeu_si512(out + (q0 + j) * 64, codes[j]);
    }
  }
}

namespace {
const Int8Kernels kVnni{"vnni", &product_vnni, &bytes_from_planes_avx512};
}  // namespace

}  // namespace apq::cpu

#pragma GCC pop_options

namespace apq::cpu {

bool vnni_supported() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni") &&
         __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("gfni");
}

const Int8Kernels* vnni_kernels() { return vnni_supported() ? &kVnni : nullptr; }

}  // namespace apq::cpu

#else

namespace apq::cpu {
const Int8Kernels* vnni_kernels() { return nullptr; }
}  // namespace apq::cpu

#endif
