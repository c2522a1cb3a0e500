// CPU pack, unpack and quantize_pack: codes <-> bit planes, with per-group row sums.
#include "../checks.h"
#include "../format.h"
#include "../ops.h"
#include "kernel_select.h"
#include "quantize_rows.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

namespace apq {
namespace {

// Packs one row of K byte codes into row r of `planes`.
void pack_row(const uint8_t* row, int64_t r, int64_t K, Tensor& planes) {
  const int64_t bits = planes.size(0), R = planes.size(1), row_qwords = planes.size(2) / 2;
  auto* dst = reinterpret_cast<uint64_t*>(planes.data_ptr<int32_t>()) + r * row_qwords;
  cpu::pack_kernels().pack_row(row, K, bits, dst, R * row_qwords, row_qwords);
}

}  // namespace

std::tuple<Tensor, Tensor> pack_cpu(const Tensor& codes, int64_t bits, int64_t group_size) {
  check_pack_args(codes, bits, group_size);
  check_codes_range(codes, bits);
  const int64_t R = codes.size(0), K = codes.size(1);
  const Tensor bytes = codes.to(at::kByte).contiguous();
  Tensor planes = at::empty({bits, R, padded_words(K)}, codes.options().dtype(at::kInt));
  Tensor rowsum = at::empty({R, num_groups(K, group_size)}, codes.options().dtype(at::kInt));
  const uint8_t* src = bytes.data_ptr<uint8_t>();
  const int64_t G = rowsum.size(1), span = group_size == 0 ? K : group_size;
  at::parallel_for(0, R, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      pack_row(src + r * K, r, K, planes);
      cpu::group_sums(src + r * K, K, span, G, rowsum.data_ptr<int32_t>() + r * G);
    }
  });
  return {planes, rowsum};
}

Tensor unpack_cpu(const Tensor& planes, int64_t K) {
  constexpr const char* op = "apq::unpack";
  check_K(K, op);
  check_planes(planes, K, op, "planes");
  const int64_t bits = planes.size(0), R = planes.size(1), W = planes.size(2);
  Tensor codes = at::empty({R, K}, planes.options());
  const uint32_t* src = reinterpret_cast<const uint32_t*>(planes.data_ptr<int32_t>());
  int32_t* dst = codes.data_ptr<int32_t>();
  at::parallel_for(0, R, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t k = 0; k < K; ++k) {
        int32_t u = 0;
        for (int64_t i = 0; i < bits; ++i) {
          u |= static_cast<int32_t>((src[(i * R + r) * W + k / 32] >> (k % 32)) & 1u) << i;
        }
        dst[r * K + k] = u;
      }
    }
  });
  return codes;
}

std::tuple<Tensor, Tensor, Tensor, Tensor> quantize_pack_cpu(
    const Tensor& x, int64_t bits, std::string_view format, int64_t group_size,
    const std::optional<Tensor>& hadamard, double clip) {
  const Format fmt = check_quantize_pack_args(x, bits, format, group_size, hadamard, clip);
  const int64_t M = x.size(0), K = x.size(1);
  const auto opts = x.options();
  Tensor planes = at::empty({bits, M, padded_words(K)}, opts.dtype(at::kInt));
  Tensor rowsum = at::empty({M, num_groups(K, group_size)}, opts.dtype(at::kInt));
  Tensor scale = at::empty({M}, opts.dtype(at::kFloat));
  Tensor offset = at::empty({M}, opts.dtype(at::kFloat));
  cpu::quantize_rows(x, bits, fmt, group_size, cpu::RowRotation(hadamard, K), clip, scale.data_ptr<float>(),
                     offset.data_ptr<float>(), rowsum.data_ptr<int32_t>(),
                     [&](int64_t m, const uint8_t* codes) { pack_row(codes, m, K, planes); });
  return {planes, rowsum, scale, offset};
}

}  // namespace apq
