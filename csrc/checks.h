// Argument validation shared by every device: each failure names the op and the argument.
#pragma once

#include <ATen/core/Tensor.h>

#include <initializer_list>
#include <optional>
#include <string_view>

namespace apq {

using at::Tensor;

constexpr int64_t kMaxBits = 8;
constexpr int64_t kBlockBits = 256;  // K is padded to one m16n8k256 step
constexpr int64_t kWordsPerBlock = kBlockBits / 32;
constexpr int64_t kGroupQuantum = 64;  // group_size is a multiple of one 64-bit CPU word

// int32 words per packed row: K padded to a multiple of 256 bits.
inline int64_t padded_words(int64_t K) { return (K + kBlockBits - 1) / kBlockBits * kWordsPerBlock; }

// Number of K-groups; group_size 0 means one group spanning the whole row.
inline int64_t num_groups(int64_t K, int64_t group_size) {
  return group_size == 0 ? 1 : (K + group_size - 1) / group_size;
}

void check_bits(int64_t bits, const char* op, const char* name);
void check_K(int64_t K, const char* op);
void check_group_size(int64_t group_size, const char* op);

// int32 [bits, rows, padded_words(K)], contiguous, bits in 1..8.
void check_planes(const Tensor& planes, int64_t K, const char* op, const char* name);

// dtype, exact sizes and contiguity of a metadata tensor (row sums, scales, offsets).
void check_tensor(const Tensor& t, const char* op, const char* name, at::ScalarType dtype,
                  std::initializer_list<int64_t> sizes);

// Every tensor on the device of the first one.
void check_same_device(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> tensors);

// Checks of a qmatmul call: returns nothing, throws with the offending argument's name.
void check_qmatmul_args(const char* op, const Tensor& x_planes, const Tensor& x_rowsum,
                        const Tensor& x_scale, const Tensor& x_offset, const Tensor& w_planes,
                        const Tensor& w_rowsum, const Tensor& w_scale, const Tensor& w_offset,
                        int64_t K, int64_t group_size, const std::optional<Tensor>& bias,
                        at::ScalarType out_dtype);

// The weight side of qmatmul / linear: planes, row sums, scales, offsets, bias, one device.
void check_weight_args(const char* op, const Tensor& w_planes, const Tensor& w_rowsum,
                       const Tensor& w_scale, const Tensor& w_offset, int64_t K, int64_t group_size,
                       const std::optional<Tensor>& bias);

// Checks of a gemm call, including that the exact int32 result cannot overflow.
void check_gemm_args(const char* op, const Tensor& x_planes, const Tensor& w_planes, int64_t K);

// linear: K, x floating with last dimension K, a_bits/a_format, w_planes, group size, and
// the optional Hadamard mix of the fused transform, the clipping ratio.
void check_linear_args(const char* op, const Tensor& x, const Tensor& w_planes, int64_t K, int64_t group_size,
                       int64_t a_bits, std::string_view a_format, const std::optional<Tensor>& hadamard,
                       double a_clip);

// pack: bits, group size, integer 2-D codes with K >= 1. Returns nothing.
void check_pack_args(const Tensor& codes, int64_t bits, int64_t group_size);

// pack's value check: codes in [0, 2^bits). Reads the tensor (a host sync on CUDA).
void check_codes_range(const Tensor& codes, int64_t bits);

// Activation input of quantize_pack / linear: floating, last dimension K.
void check_activation(const Tensor& x, int64_t K, const char* op, const char* name, bool need_2d);

// quantize_pack: bits, format, group size, x float 2-D contiguous with K >= 1, and the
// optional Hadamard mix of the fused transform (check_hadamard_mix).
enum class Format : int;
Format check_quantize_pack_args(const Tensor& x, int64_t bits, std::string_view format, int64_t group_size,
                                const std::optional<Tensor>& hadamard, double clip);

// An activation clipping ratio (argument `name`): finite, in (0, 1].
void check_clip(double clip, const char* op, const char* name);

// The mix of a Walsh-Hadamard transform of rows of n values (argument `name`): fp32 [m, m],
// contiguous, on the device of `x`, with n = m * P and P a power of two.
void check_hadamard_mix(const Tensor& mix, const Tensor& x, int64_t n, const char* op, const char* name);

// hadamard: x float with at least one dimension, and its mix; returns n = x.size(-1).
int64_t check_hadamard_args(const Tensor& x, const Tensor& mix, const char* op);

}  // namespace apq
