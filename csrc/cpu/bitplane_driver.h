// The bit-plane product and plane packing, written once over a vector policy V and
// instantiated per ISA (bitplane_avx512.cpp, bitplane_portable.cpp).
//
// A micro tile of MR tokens x NR channels walks K in chunks, reading x from panels
// (cpu_kernels.h: XPanels) and w from its canonical rows. For every shift s it
// accumulates popc(x_i AND w_j) lane-wise over the chunk for all plane pairs with
// i + j = s, then adds the lane sums, shifted by s, into `tot` (the shift-add recovery
// of DESIGN.md §2). At the end of a K-group `tot` is reduced across lanes into U[t][g];
// groups narrower than a vector are split off lane by lane. Nothing of size b_x * b_w leaves the micro tile.
//
// V provides: vec, lanes, chunk_vectors, zero(), load(p), load_lanes(p, n) (the first n
// lanes, the rest zero), and_popc(a, b), add(a, b),
// shl(a, s), hsum(v, n, out) (out[t] = sum of the lanes of v[t]), store_int32<MR, NR>(v,
// ncols, out, ld) (the lane sums of the MR x NR tile as int32) and add_group_sums(a, q0,
// gq, n, U) (U[(q0 + l) / gq] += lane l of a, for the first n lanes).
//
// Everything here has internal linkage on purpose: the AVX-512 translation unit compiles
// it with AVX-512 enabled, and an inline function with external linkage could be merged
// by the linker into callers on CPUs without AVX-512.
#pragma once

#include "cpu_kernels.h"

#include <cstdint>

namespace apq::cpu {
namespace {

// Local helpers instead of std:: templates, which would be instantiated with this TU's
// target flags and could be merged into other TUs by the linker.
constexpr int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

#if defined(__GNUC__)
#define APQ_KERNEL_INLINE inline __attribute__((always_inline))
#define APQ_KERNEL_LAMBDA_INLINE __attribute__((always_inline))
#else
#define APQ_KERNEL_INLINE inline
#define APQ_KERNEL_LAMBDA_INLINE
#endif

template <class V, int MR, int NR>
struct MicroTile {
  static constexpr int T = MR * NR;
  using vec = typename V::vec;

  const XPanels& x;
  const PlaneMatrix& w;
  const GroupSpec& gs;
  const uint64_t* xpanel;    // this tile's rows, laid out as XPanels describes
  const uint64_t* wrow[NR];  // plane-0 row of each channel (a ragged edge repeats the last)
  int64_t nq;                // words holding real bits
  int64_t nv;                // vectors covering them
  int w_tail_lanes;          // lanes of w's last vector inside the row (masked load), or 0

  MicroTile(const XPanels& x_, const PlaneMatrix& w_, const GroupSpec& gs_, int64_t m0, int64_t n0)
      : x(x_), w(w_), gs(gs_) {
    xpanel = x.data + m0 * x.bits * x.vectors * V::lanes;
    for (int c = 0; c < NR; ++c) wrow[c] = w.data + imin(n0 + c, w.rows - 1) * w.row_qwords;
    nq = (gs.K + 63) / 64;
    nv = x.vectors;
    // x is zero past K, so w's last vector may read garbage words, but not past its row.
    const int64_t room = w.row_qwords - (nv - 1) * V::lanes;
    w_tail_lanes = room < V::lanes ? static_cast<int>(room) : 0;
  }

  // tot (= if first, else +=) the shift class s of the recovery: the sum over plane pairs
  // with i + j = s and over vectors [v0, v1) of popc(x_i & w_j), shifted left by s.
  // Pairs of one class share the accumulators, so each class costs one shift-add; the
  // accumulators are locals of this one function so that they stay in registers.
  APQ_KERNEL_INLINE void shift_class(int64_t s, int64_t v0, int64_t v1, bool first, vec* tot) const {
    const bool w_tail = w_tail_lanes > 0 && v1 == nv;
    const int64_t full = v1 - v0 - (w_tail ? 1 : 0);
    const int64_t wplane = w.rows * w.row_qwords;
    vec acc[T];
    for (int t = 0; t < T; ++t) acc[t] = V::zero();
    const int64_t i_lo = s - (w.bits - 1) > 0 ? s - (w.bits - 1) : 0;
    const int64_t i_hi = s < x.bits - 1 ? s : x.bits - 1;
    for (int64_t i = i_lo; i <= i_hi; ++i) {
      const uint64_t* xp = xpanel + (i * nv + v0) * MR * V::lanes;
      const uint64_t* wp[NR];
      for (int c = 0; c < NR; ++c) wp[c] = wrow[c] + (s - i) * wplane + v0 * V::lanes;
      auto step = [&](int64_t v, bool tail) APQ_KERNEL_LAMBDA_INLINE {
        vec xv[MR];
        for (int r = 0; r < MR; ++r) xv[r] = V::load(xp + (v * MR + r) * V::lanes);
        for (int c = 0; c < NR; ++c) {
          const uint64_t* p = wp[c] + v * V::lanes;
          const vec wv = tail ? V::load_lanes(p, w_tail_lanes) : V::load(p);
          for (int r = 0; r < MR; ++r) acc[r * NR + c] = V::add(acc[r * NR + c], V::and_popc(xv[r], wv));
        }
      };
      for (int64_t v = 0; v < full; ++v) step(v, false);
      if (w_tail) step(full, true);
    }
    // Branches outside the loops: a select would compute both sides for every t.
    if (s != 0) {
      for (int t = 0; t < T; ++t) acc[t] = V::shl(acc[t], static_cast<int>(s));
    }
    if (first) {
      for (int t = 0; t < T; ++t) tot[t] = acc[t];
    } else {
      for (int t = 0; t < T; ++t) tot[t] = V::add(tot[t], acc[t]);
    }
  }

  // tot (= if first, else +=) the recovered sum over vectors [v0, v1).
  void accumulate(int64_t v0, int64_t v1, bool first, vec* tot) const {
    for (int64_t s = 0; s < x.bits + w.bits - 1; ++s) shift_class(s, v0, v1, first && s == 0, tot);
  }

  // tot = the sum over vectors [v0, v1), walked in cache-sized chunks.
  APQ_KERNEL_INLINE void accumulate_chunked(int64_t v0, int64_t v1, vec* tot) const {
    if (x.bits == 1 && w.bits == 1 && v1 - v0 <= V::chunk_vectors) {
      shift_class(0, v0, v1, true, tot);  // one class, one chunk: tot never leaves registers
      return;
    }
    for (int64_t c = v0; c < v1; c += V::chunk_vectors) {
      accumulate(c, imin(c + V::chunk_vectors, v1), c == v0, tot);
    }
  }

  // The whole-K product (one group) as int32, written to out[r * ld + c] for c < ncols.
  APQ_KERNEL_INLINE void run_exact(int32_t* out, int64_t ld, int64_t ncols) const {
    vec tot[T];
    accumulate_chunked(0, nv, tot);
    V::template store_int32<MR, NR>(tot, static_cast<int>(ncols), out, ld);
  }

  // Writes U[t * groups + g] for all groups.
  void run(int64_t* U) const {
    const int64_t G = gs.groups, gq = gs.group_qwords;
    vec tot[T];
    if (G == 1) {
      accumulate_chunked(0, nv, tot);
      V::hsum(tot, T, U);
    } else if (gq % V::lanes == 0) {
      // Every group is a whole number of vectors: reduce across lanes once per group.
      const int64_t gv = gq / V::lanes;
      for (int64_t g = 0; g < G; ++g) {
        accumulate_chunked(g * gv, imin((g + 1) * gv, nv), tot);
        int64_t sums[T];
        V::hsum(tot, T, sums);
        for (int t = 0; t < T; ++t) U[t * G + g] = sums[t];
      }
    } else {
      // Groups narrower than (or straddling) a vector: split each vector's lanes by group.
      for (int64_t e = 0; e < T * G; ++e) U[e] = 0;
      for (int64_t v = 0; v < nv; ++v) {
        accumulate(v, v + 1, true, tot);
        const int lanes = static_cast<int>(imin(V::lanes, nq - v * V::lanes));
        for (int t = 0; t < T; ++t) V::add_group_sums(tot[t], v * V::lanes, gq, lanes, U + t * G);
      }
    }
  }
};

template <class V, int MR, int NR>
APQ_KERNEL_INLINE void tile(const XPanels& x, const PlaneMatrix& w, const GroupSpec& gs, int64_t m,
                            int64_t n, int64_t ncols, TileSink& sink, int64_t* U) {
  const MicroTile<V, MR, NR> micro(x, w, gs, m, n);
  if (sink.exact_out != nullptr && gs.groups == 1) {
    micro.run_exact(sink.exact_out + m * sink.exact_ld + n, sink.exact_ld, ncols);
  } else {
    micro.run(U);
    sink.consume(m, MR, n, ncols, NR, U);
  }
}

// Channels outer, tokens inner: a micro tile's weight rows stay in L1 while the x panels
// of the block stream past them.
template <class V>
void product(const XPanels& x, const PlaneMatrix& w, const GroupSpec& gs, int64_t m0, int64_t m1,
             int64_t n0, int64_t n1, TileSink& sink, int64_t* U) {
  constexpr int MR = kMicroRows, NR = kMicroCols;
  const int64_t m_panels_end = x.rows - x.rows % MR;
  for (int64_t n = n0; n < n1; n += NR) {
    const int64_t ncols = imin(NR, n1 - n);
    int64_t m = m0;
    for (; m + MR <= imin(m1, m_panels_end); m += MR) tile<V, MR, NR>(x, w, gs, m, n, ncols, sink, U);
    for (; m < m1; ++m) tile<V, 1, NR>(x, w, gs, m, n, ncols, sink, U);
  }
}

}  // namespace
}  // namespace apq::cpu
