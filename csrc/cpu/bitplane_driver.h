// The bit-plane product and plane packing, written once over a vector policy V and
// instantiated per ISA (bitplane_avx512.cpp, bitplane_portable.cpp).
//
// A micro tile of MR tokens x NR channels walks K in chunks. For every plane pair (i, j)
// it accumulates popc(x_i AND w_j) lane-wise over the chunk, then adds the lane sums,
// shifted by i + j, into `tot` (the shift-add recovery of DESIGN.md §2). At the end of a
// K-group `tot` is reduced across lanes into U[t][g]; groups narrower than a vector are
// split off lane by lane. Nothing of size b_x * b_w leaves the micro tile.
//
// V provides: vec, lanes, chunk_vectors, zero(), load(p), load_tail(p, n, bits) (first n
// lanes, the last of them ANDed with bits, the rest zero), and_popc(a, b), add(a, b),
// shl(a, s), hsum(v, n, out) (out[t] = sum of the lanes of v[t]) and store(a, out).
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

template <class V, int MR, int NR>
struct MicroTile {
  static constexpr int T = MR * NR;
  using vec = typename V::vec;

  const PlaneMatrix& x;
  const PlaneMatrix& w;
  const GroupSpec& gs;
  const uint64_t* xrow[MR];  // plane-0 row of each token (ragged edges repeat the last row)
  const uint64_t* wrow[NR];
  int64_t nq;          // words holding real bits
  int64_t nv;          // vectors covering them
  int tail_lanes;      // valid lanes of the last vector
  uint64_t tail_bits;  // valid bits of the last word

  MicroTile(const PlaneMatrix& x_, const PlaneMatrix& w_, const GroupSpec& gs_, int64_t m0,
            int64_t n0)
      : x(x_), w(w_), gs(gs_) {
    for (int r = 0; r < MR; ++r) xrow[r] = x.data + imin(m0 + r, x.rows - 1) * x.row_qwords;
    for (int c = 0; c < NR; ++c) wrow[c] = w.data + imin(n0 + c, w.rows - 1) * w.row_qwords;
    nq = (gs.K + 63) / 64;
    nv = (nq + V::lanes - 1) / V::lanes;
    tail_lanes = static_cast<int>(nq - (nv - 1) * V::lanes);
    tail_bits = gs.K % 64 ? (uint64_t{1} << (gs.K % 64)) - 1 : ~uint64_t{0};
  }

  // tot[t] += sum over vectors [v0, v1) and all plane pairs of popc(x_i & w_j) << (i + j).
  void accumulate(int64_t v0, int64_t v1, vec* tot) const {
    const bool has_tail = v1 == nv;
    const int64_t v_full_end = has_tail ? nv - 1 : v1;
    const int64_t xplane = x.rows * x.row_qwords, wplane = w.rows * w.row_qwords;
    for (int64_t i = 0; i < x.bits; ++i) {
      for (int64_t j = 0; j < w.bits; ++j) {
        vec acc[T];
        for (int t = 0; t < T; ++t) acc[t] = V::zero();
        auto step = [&](int64_t q, auto load) {
          vec xv[MR];
          for (int r = 0; r < MR; ++r) xv[r] = load(xrow[r] + i * xplane + q, true);
          for (int c = 0; c < NR; ++c) {
            const vec wv = load(wrow[c] + j * wplane + q, false);
            for (int r = 0; r < MR; ++r) acc[r * NR + c] = V::add(acc[r * NR + c], V::and_popc(xv[r], wv));
          }
        };
        for (int64_t v = v0; v < v_full_end; ++v) {
          step(v * V::lanes, [](const uint64_t* p, bool) { return V::load(p); });
        }
        if (has_tail) {
          step((nv - 1) * V::lanes, [this](const uint64_t* p, bool is_x) {
            return V::load_tail(p, tail_lanes, is_x ? tail_bits : ~uint64_t{0});
          });
        }
        const int shift = static_cast<int>(i + j);
        for (int t = 0; t < T; ++t) tot[t] = V::add(tot[t], V::shl(acc[t], shift));
      }
    }
  }

  // U[t * groups + g] for all groups; U must hold T * groups zeros.
  void run(int64_t* U) const {
    const int64_t G = gs.groups, gq = gs.group_qwords;
    vec tot[T];
    auto accumulate_chunked = [&](int64_t v0, int64_t v1) {
      for (int t = 0; t < T; ++t) tot[t] = V::zero();
      for (int64_t c = v0; c < v1; c += V::chunk_vectors) {
        accumulate(c, imin(c + V::chunk_vectors, v1), tot);
      }
    };
    if (G == 1 || gq % V::lanes == 0) {
      // Every group is a whole number of vectors: reduce across lanes once per group.
      const int64_t gv = G == 1 ? nv : gq / V::lanes;
      for (int64_t g = 0; g < G; ++g) {
        accumulate_chunked(g * gv, imin((g + 1) * gv, nv));
        int64_t sums[T];
        V::hsum(tot, T, sums);
        for (int t = 0; t < T; ++t) U[t * G + g] += sums[t];
      }
    } else {
      // Groups narrower than (or straddling) a vector: split each vector's lanes by group.
      for (int64_t v = 0; v < nv; ++v) {
        accumulate_chunked(v, v + 1);
        const int64_t lanes = v == nv - 1 ? tail_lanes : V::lanes;
        for (int t = 0; t < T; ++t) {
          int64_t lane_sums[V::lanes];
          V::store(tot[t], lane_sums);
          for (int64_t l = 0; l < lanes; ++l) U[t * G + (v * V::lanes + l) / gq] += lane_sums[l];
        }
      }
    }
  }
};

template <class V, int MR, int NR>
void product_rows(const PlaneMatrix& x, const PlaneMatrix& w, const GroupSpec& gs, int64_t m,
                  int64_t n0, int64_t n1, TileSink& sink, int64_t* U) {
  for (int64_t n = n0; n < n1; n += NR) {
    for (int64_t e = 0; e < MR * NR * gs.groups; ++e) U[e] = 0;
    MicroTile<V, MR, NR>(x, w, gs, m, n).run(U);
    sink.consume(m, MR, n, imin(NR, n1 - n), NR, U);
  }
}

template <class V>
void product(const PlaneMatrix& x, const PlaneMatrix& w, const GroupSpec& gs, int64_t m0,
             int64_t m1, int64_t n0, int64_t n1, TileSink& sink, int64_t* U) {
  constexpr int MR = kMicroRows, NR = kMicroCols;
  int64_t m = m0;
  for (; m + MR <= m1; m += MR) product_rows<V, MR, NR>(x, w, gs, m, n0, n1, sink, U);
  for (; m < m1; ++m) product_rows<V, 1, NR>(x, w, gs, m, n0, n1, sink, U);
}

}  // namespace
}  // namespace apq::cpu
