// AVX-512 instantiation of the Walsh-Hadamard row transform (hadamard_kernels.h): the stages
// h = 1, 2, 4, 8 inside one 16-float register (a permute and a sign flip per stage), the
// larger ones as whole-register butterflies. Same operations per element as the portable
// path (b + a == a + b, a + (-b) == a - b in IEEE arithmetic), so both agree to the bit.
#include "hadamard_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <array>

#pragma GCC push_options
#pragma GCC target("avx2,avx512f")
#include <immintrin.h>

namespace apq::cpu {
namespace {

// Stage H inside a register: lane i becomes x[i ^ H] + (+-x[i]), minus where bit H of i is set.
template <int H>
inline __m512 in_register_stage(__m512 x) {
  static constexpr auto idx = [] {
    std::array<int32_t, 16> a{};
    for (int i = 0; i < 16; ++i) a[i] = i ^ H;
    return a;
  }();
  static constexpr auto sign = [] {
    std::array<uint32_t, 16> a{};
    for (int i = 0; i < 16; ++i) a[i] = (i & H) ? 0x80000000u : 0u;
    return a;
  }();
  const __m512 swapped = _mm512_permutexvar_ps(_mm512_loadu_si512(idx.data()), x);
  const __m512i flipped = _mm512_xor_si512(_mm512_castps_si512(x), _mm512_loadu_si512(sign.data()));
  return _mm512_add_ps(swapped, _mm512_castsi512_ps(flipped));
}

void hadamard_row(float* row, int64_t n, const float* mix, int64_t m, float scale, float* scratch) {
  const int64_t P = n / m;
  for (int64_t b = 0; b < m; ++b) {
    float* block = row + b * P;
    if (P < 16) {
      hadamard_butterflies(block, P, 1);
      continue;
    }
    for (int64_t v = 0; v < P; v += 16) {
      __m512 x = _mm512_loadu_ps(block + v);
      x = in_register_stage<1>(x);
      x = in_register_stage<2>(x);
      x = in_register_stage<4>(x);
      x = in_register_stage<8>(x);
      _mm512_storeu_ps(block + v, x);
    }
    for (int64_t h = 16; h < P; h *= 2) {
      for (int64_t j0 = 0; j0 < P; j0 += 2 * h) {
        for (int64_t j = j0; j < j0 + h; j += 16) {
          const __m512 a = _mm512_loadu_ps(block + j), c = _mm512_loadu_ps(block + j + h);
          _mm512_storeu_ps(block + j, _mm512_add_ps(a, c));
          _mm512_storeu_ps(block + j + h, _mm512_sub_ps(a, c));
        }
      }
    }
  }
  hadamard_mix(row, n, mix, m, scale, scratch);
}

}  // namespace

HadamardRowFn hadamard_row_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") ? &hadamard_row : nullptr;
}

}  // namespace apq::cpu

#pragma GCC pop_options

#else

namespace apq::cpu {
HadamardRowFn hadamard_row_avx512() { return nullptr; }
}  // namespace apq::cpu

#endif
