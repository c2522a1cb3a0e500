// The affine/dequant epilogue of DESIGN.md §2 for one output element, shared by the fused
// kernels and the CUTLASS baseline's recovery kernel.
#pragma once

#include "bitplane_gemm.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace apq::cuda {

namespace epilogue {

__device__ __forceinline__ float load_bias(const void* bias, ElemType type, int64_t i) {
  if (bias == nullptr) return 0.f;
  switch (type) {
    case ElemType::Float16: return __half2float(static_cast<const __half*>(bias)[i]);
    case ElemType::BFloat16: return __bfloat162float(static_cast<const __nv_bfloat16*>(bias)[i]);
    default: return static_cast<const float*>(bias)[i];
  }
}

__device__ __forceinline__ void store_float(const BitplaneGemmParams& p, int64_t ra, int64_t rb, float y) {
  const int64_t i = ra * p.out_stride_a + rb * p.out_stride_b;
  y += load_bias(p.bias, p.bias_type, p.bias_on_a ? ra : rb);
  switch (p.out_type) {
    case ElemType::Float32: static_cast<float*>(p.out)[i] = y; break;
    case ElemType::Float16: static_cast<__half*>(p.out)[i] = __float2half_rn(y); break;
    case ElemType::BFloat16: static_cast<__nv_bfloat16*>(p.out)[i] = __float2bfloat16_rn(y); break;
    default: break;
  }
}

// sigma_a * sigma_b * (U + [closes group] (zeta_a*Sb + zeta_b*Sa + zeta_a*zeta_b*|g|)), the
// bracket in double like the CPU path: its terms cancel to a much smaller result.
__device__ __forceinline__ float window_term(const BitplaneGemmParams& p, int64_t ra, int64_t rb,
                                             int32_t U, int64_t g, bool closes_group, int64_t group_len) {
  const PlaneOperand &a = p.a, &b = p.b;
  const int64_t ia = ra * a.meta_row_stride + g * a.meta_group_stride;
  const int64_t ib = rb * b.meta_row_stride + g * b.meta_group_stride;
  double bracket = static_cast<double>(U);
  if (closes_group) {
    const double za = a.offset[ia], zb = b.offset[ib];
    bracket += za * b.rowsum[rb * p.G + g] + zb * a.rowsum[ra * p.G + g] +
               za * zb * static_cast<double>(group_len);
  }
  return static_cast<float>(static_cast<double>(a.scale[ia]) * b.scale[ib] * bracket);
}

// Where a closing K-window leaves an output (the register-tile kernels, bitplane_gemm_kernel.cuh
// and imma_gemm_kernel.cuh): U written (one window), or the window's term added to the fp32
// `result` and written after the last window; under split-K (grid z > 1), into this split's
// partials for split_k_reduce.cuh instead.
struct WindowClose {
  bool single, split;  // KWindows::single(); grid z > 1
  bool closes_group, last;
  int64_t group, group_len;
};

__device__ __forceinline__ void window_output(const BitplaneGemmParams& p, const WindowClose& w, int64_t ra,
                                              int64_t rb, int32_t U, float& result) {
  const int64_t at = static_cast<int64_t>(blockIdx.z) * p.a.rows * p.b.rows + ra * p.b.rows + rb;
  if (w.single && (p.exact || w.split)) {
    int32_t* dst = static_cast<int32_t*>(w.split ? p.partials : p.out);
    dst[w.split ? at : ra * p.out_stride_a + rb * p.out_stride_b] = U;
    return;
  }
  float y = window_term(p, ra, rb, U, w.group, w.closes_group, w.group_len);
  if (!w.single) {
    y += result;
    result = y;
    if (!w.last) return;
  }
  if (w.split) {
    static_cast<float*>(p.partials)[at] = y;
  } else {
    store_float(p, ra, rb, y);
  }
}

}  // namespace epilogue

// Zeroes the accumulators [m16 tiles][n8 tiles][4] of the mma.sync kernels when a window opens
// (held in registers: fully unrolled).
template <int TilesA, int TilesB>
__device__ __forceinline__ void clear_accumulators(int32_t (&acc)[TilesA][TilesB][4]) {
#pragma unroll
  for (int i = 0; i < TilesA; ++i)
#pragma unroll
    for (int j = 0; j < TilesB; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[i][j][q] = 0;
}

}  // namespace apq::cuda
