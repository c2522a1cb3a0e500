#pragma once

#include "cpu_kernels.h"

#include <cstdint>

namespace apq::cpu {

// The kernel of one product: exactly one of the two is set.
struct KernelChoice {
  const Kernels* popcount;
  const Int8Kernels* int8;
  const char* name() const { return int8 ? int8->name : popcount->name; }
};

// The kernel for M rows of x_bits-bit activations times w_bits-bit weights in groups of
// group_size (0: per channel): the one APQ_CPU_KERNEL or apq::_cpu_kernel forces, else the
// kernel map's choice (kernel_select.cpp) among those this CPU runs.
KernelChoice choose_kernel(int64_t M, int64_t x_bits, int64_t w_bits, int64_t group_size);

// The popcount kernels that pack planes: the forced ones, else the fastest available.
const Kernels& pack_kernels();

}  // namespace apq::cpu
