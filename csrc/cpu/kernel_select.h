#pragma once

#include "cpu_kernels.h"

namespace apq::cpu {

// The popcount kernels in use: APQ_CPU_KERNEL (auto | avx512 | portable) at first use,
// changeable at run time through apq::_cpu_kernel.
const Kernels& active_kernels();

}  // namespace apq::cpu
