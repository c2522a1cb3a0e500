// The flat arguments of the emulators' ctypes entry points (tests/emulated_kernel.py): what
// gemm_cuda.cpp receives, as a GemmProblem for the production host plan (gemm_plan.cpp).
#pragma once

#include "gemm_plan.h"

#include <cstdint>
#include <cstdio>
#include <string>

namespace emu {

// What gemm_cuda.cpp receives, flattened (no ptrs for apq_plan_gemm):
//   ints:   M N K x_bits w_bits group_size out_type bias_type
//   ptrs:   x_planes w_planes x_rowsum x_scale x_offset w_rowsum w_scale w_offset bias out
//   device: arch sm_count smem_per_block max_grid_x max_grid_y max_grid_z
inline apq::cuda::GemmProblem problem_of(const int64_t* ints, void* const* ptrs) {
  using namespace apq::cuda;
  GemmProblem problem;
  problem.M = ints[0];
  problem.N = ints[1];
  problem.K = ints[2];
  problem.x_bits = static_cast<int>(ints[3]);
  problem.w_bits = static_cast<int>(ints[4]);
  problem.group_size = ints[5];
  problem.out_type = static_cast<ElemType>(ints[6]);
  problem.bias_type = static_cast<ElemType>(ints[7]);
  if (ptrs != nullptr) {
    problem.x_planes = static_cast<const uint32_t*>(ptrs[0]);
    problem.w_planes = static_cast<const uint32_t*>(ptrs[1]);
    problem.x_rowsum = static_cast<const int32_t*>(ptrs[2]);
    problem.x_scale = static_cast<const float*>(ptrs[3]);
    problem.x_offset = static_cast<const float*>(ptrs[4]);
    problem.w_rowsum = static_cast<const int32_t*>(ptrs[5]);
    problem.w_scale = static_cast<const float*>(ptrs[6]);
    problem.w_offset = static_cast<const float*>(ptrs[7]);
    problem.bias = ptrs[8];
    problem.out = ptrs[9];
  }
  return problem;
}

inline apq::cuda::DeviceLimits limits_of(const int64_t* device) {
  return {static_cast<int>(device[0]), static_cast<int>(device[1]), device[2], device[3], device[4], device[5]};
}

inline int fail(char* error, int error_len, int rc, const std::string& why) {
  std::snprintf(error, static_cast<size_t>(error_len), "%s", why.c_str());
  return rc;
}

}  // namespace emu
