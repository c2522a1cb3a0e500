// Host entry points of the apq ops, one set per device. Schemas: torch_bindings.cpp.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <string_view>
#include <tuple>

namespace apq {

using at::Tensor;

std::tuple<Tensor, Tensor> pack_cpu(const Tensor& codes, int64_t bits, int64_t group_size);
Tensor unpack_cpu(const Tensor& planes, int64_t K);
std::tuple<Tensor, Tensor, Tensor, Tensor> quantize_pack_cpu(
    const Tensor& x, int64_t bits, std::string_view format, int64_t group_size,
    const std::optional<Tensor>& hadamard, double clip);
Tensor gemm_cpu(const Tensor& x_planes, const Tensor& w_planes, int64_t K);
Tensor qmatmul_cpu(const Tensor& x_planes, const Tensor& x_rowsum, const Tensor& x_scale,
                   const Tensor& x_offset, const Tensor& w_planes, const Tensor& w_rowsum,
                   const Tensor& w_scale, const Tensor& w_offset, int64_t K, int64_t group_size,
                   const std::optional<Tensor>& bias, at::ScalarType out_dtype);
Tensor linear_cpu(const Tensor& x, const Tensor& w_planes, const Tensor& w_rowsum,
                  const Tensor& w_scale, const Tensor& w_offset, int64_t K, int64_t group_size,
                  int64_t a_bits, std::string_view a_format, const std::optional<Tensor>& bias,
                  const std::optional<Tensor>& hadamard, double a_clip);
Tensor hadamard_cpu(const Tensor& x, const Tensor& mix);

// The CPU kernel setting ("auto", "avx512", "vnni" or "portable"); "" only queries.
std::string cpu_kernel(std::string_view request);

// The CPU kernel that runs a product of M rows ("avx512", "vnni" or "portable").
std::string cpu_kernel_choice(int64_t M, int64_t x_bits, int64_t w_bits, int64_t group_size);

// The fused CUDA kernel the mapping picks for a shape, as "<tile>,<swap|noswap>" ("" without
// CUDA). Reads APQ_GEMM_KERNEL and the autotune cache but never measures.
std::string cuda_kernel_choice(int64_t M, int64_t N, int64_t K, int64_t x_bits, int64_t w_bits, bool grouped);

#ifdef APQ_WITH_CUDA
std::tuple<Tensor, Tensor> pack_cuda(const Tensor& codes, int64_t bits, int64_t group_size);
Tensor unpack_cuda(const Tensor& planes, int64_t K);
std::tuple<Tensor, Tensor, Tensor, Tensor> quantize_pack_cuda(
    const Tensor& x, int64_t bits, std::string_view format, int64_t group_size,
    const std::optional<Tensor>& hadamard, double clip);
Tensor gemm_cuda(const Tensor& x_planes, const Tensor& w_planes, int64_t K);
Tensor qmatmul_cuda(const Tensor& x_planes, const Tensor& x_rowsum, const Tensor& x_scale,
                    const Tensor& x_offset, const Tensor& w_planes, const Tensor& w_rowsum,
                    const Tensor& w_scale, const Tensor& w_offset, int64_t K, int64_t group_size,
                    const std::optional<Tensor>& bias, at::ScalarType out_dtype);
Tensor linear_cuda(const Tensor& x, const Tensor& w_planes, const Tensor& w_rowsum,
                   const Tensor& w_scale, const Tensor& w_offset, int64_t K, int64_t group_size,
                   int64_t a_bits, std::string_view a_format, const std::optional<Tensor>& bias,
                   const std::optional<Tensor>& hadamard, double a_clip);
Tensor hadamard_cuda(const Tensor& x, const Tensor& mix);
#endif

}  // namespace apq
