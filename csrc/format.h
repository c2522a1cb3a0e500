// The three readings of unsigned codes (DESIGN.md §1) and per-token dynamic quantization.
// Host and device share this code so CPU, CUDA and the Python reference agree to the bit:
// every step is one IEEE fp32 operation in the same order as apq_torch/reference.py.
#pragma once

#include <cmath>
#include <cstdint>
#include <cfloat>
#include <string_view>

#if defined(__CUDACC__)
#define APQ_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define APQ_HOST_DEVICE inline
#endif

namespace apq {

enum class Format : int { Unsigned = 0, Signed = 1, Bipolar = 2 };

// Throws (naming op and argument) on an unknown name or a format that cannot have `bits`.
Format parse_format(std::string_view name, int64_t bits, const char* op, const char* arg);

struct QuantParams {
  float scale;   // sigma: value = scale * (code + offset)
  float offset;  // zeta
};

// Per-row statistics gathered in one pass: min, max and whether every value was finite.
// An aggregate (no constructors) so that it can live in CUDA shared memory.
struct RowStats {
  float lo;  // min(min(x), 0)
  float hi;  // max(max(x), 0)
  bool finite;
  APQ_HOST_DEVICE static RowStats empty() { return {0.f, 0.f, true}; }
  APQ_HOST_DEVICE void add(float v) {
    if (!(v - v == 0.f)) finite = false;  // NaN or +-inf
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  APQ_HOST_DEVICE void merge(const RowStats& o) {
    lo = o.lo < lo ? o.lo : lo;
    hi = o.hi > hi ? o.hi : hi;
    finite = finite && o.finite;
  }
};

// Scale and offset of one token whose range [lo, hi] is first scaled by `clip` in (0, 1]
// (activation clipping: values beyond it saturate at the end codes; 1 keeps the range).
// Non-finite rows get scale NaN (the output becomes NaN rather than silently finite);
// all-zero rows get the smallest normal scale.
APQ_HOST_DEVICE QuantParams choose_params(RowStats s, int bits, Format format, float clip) {
  const float qmax = static_cast<float>((1 << bits) - 1);
  if (!s.finite) return {NAN, 0.f};
  s.lo *= clip;
  s.hi *= clip;
  QuantParams p;
  if (format == Format::Unsigned) {
    p.scale = fmaxf((s.hi - s.lo) / qmax, FLT_MIN);
    const float zero_point = fminf(fmaxf(rintf(-s.lo / p.scale), 0.f), qmax);
    p.offset = -zero_point;
  } else {
    const float absmax = fmaxf(-s.lo, s.hi);
    if (format == Format::Signed) {
      const float half = static_cast<float>(1 << (bits - 1));
      p.scale = fmaxf(absmax / (half - 1.f), FLT_MIN);
      p.offset = -half;
    } else {  // bipolar: odd grid +-1, +-3, ..., +-qmax times scale/2
      p.scale = fmaxf((2.f * absmax) / qmax, FLT_MIN);
      p.offset = -0.5f * qmax;
    }
  }
  return p;
}

// The unsigned code of one value: clamp(round_half_even(x / scale - offset), 0, qmax).
APQ_HOST_DEVICE uint32_t quantize_value(float x, QuantParams p, int bits) {
  if (p.scale != p.scale) return 0;  // non-finite row
  const float qmax = static_cast<float>((1 << bits) - 1);
  const float t = x / p.scale - p.offset;
  return static_cast<uint32_t>(fminf(fmaxf(rintf(t), 0.f), qmax));
}

// The last step of the Walsh-Hadamard transform of blocks of P values (P a power of two):
// multiply by fp32(1 / sqrt(P)), rounded once from double (csrc/cpu/hadamard_kernels.h).
inline float hadamard_scale(int64_t P) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(P))); }

}  // namespace apq
