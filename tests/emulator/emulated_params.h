// BitplaneGemmParams from the flat argument arrays the ctypes callers pass (tests/
// emulated_kernel.py, run()): one place for the layout of those arrays.
//   ints: a_rows a_bits a_row_stride a_group_stride  b_rows b_bits b_row_stride b_group_stride
//         words K group_size G exact out_type out_stride_a out_stride_b bias_type bias_on_a
//   ptrs: a_planes a_rowsum a_scale a_offset  b_planes b_rowsum b_scale b_offset  out bias
#pragma once

#include "bitplane_gemm.h"

#include <cstdint>

namespace emu {

inline apq::cuda::BitplaneGemmParams params_from_args(const int64_t* ints, void* const* ptrs) {
  using namespace apq::cuda;
  BitplaneGemmParams p;
  auto side = [&](PlaneOperand& o, const int64_t* i, void* const* q) {
    o.rows = i[0];
    o.bits = static_cast<int>(i[1]);
    o.meta_row_stride = i[2];
    o.meta_group_stride = i[3];
    o.planes = static_cast<const uint32_t*>(q[0]);
    o.rowsum = static_cast<const int32_t*>(q[1]);
    o.scale = static_cast<const float*>(q[2]);
    o.offset = static_cast<const float*>(q[3]);
  };
  side(p.a, ints, ptrs);
  side(p.b, ints + 4, ptrs + 4);
  p.words = ints[8];
  p.K = ints[9];
  p.group_size = ints[10];
  p.G = ints[11];
  p.exact = ints[12] != 0;
  p.out_type = static_cast<ElemType>(ints[13]);
  p.out_stride_a = ints[14];
  p.out_stride_b = ints[15];
  p.bias_type = static_cast<ElemType>(ints[16]);
  p.bias_on_a = ints[17] != 0;
  p.out = ptrs[8];
  p.bias = ptrs[9];
  return p;
}

}  // namespace emu
