// CPU gemm, qmatmul and linear: the bit-plane product of cpu_kernels.h, parallel over
// output blocks, with the exact int32 or the affine/dequant epilogue of DESIGN.md §2.
#include "../checks.h"
#include "../format.h"
#include "../ops.h"
#include "kernel_select.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <vector>

namespace apq {
namespace {

// Output block of one parallel task; big enough to reuse planes from L2, small enough
// that decode shapes (M = 1) still split across threads.
constexpr int64_t kBlockRows = 64, kBlockCols = 64;

cpu::PlaneMatrix plane_matrix(const Tensor& planes) {
  return {reinterpret_cast<const uint64_t*>(planes.data_ptr<int32_t>()), planes.size(0),
          planes.size(1), planes.size(2) / 2};
}

// Re-lays x's planes as the kernels' XPanels (cpu_kernels.h), masking the bits past K.
std::vector<uint64_t> pack_x_panels(const cpu::PlaneMatrix& x, int64_t K, int64_t lanes,
                                    int64_t* vectors) {
  const int64_t nq = (K + 63) / 64, nv = (nq + lanes - 1) / lanes;
  const uint64_t tail_bits = K % 64 ? (uint64_t{1} << (K % 64)) - 1 : ~uint64_t{0};
  const int64_t row_words = x.bits * nv * lanes, panel_rows_end = x.rows - x.rows % cpu::kMicroRows;
  std::vector<uint64_t> panels(static_cast<size_t>(x.rows * row_words));
  at::parallel_for(0, x.rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const bool in_panel = r < panel_rows_end;
      const int64_t width = in_panel ? cpu::kMicroRows : 1, slot = in_panel ? r % cpu::kMicroRows : 0;
      uint64_t* base = panels.data() + (r - slot) * row_words;
      for (int64_t i = 0; i < x.bits; ++i) {
        const uint64_t* src = x.data + (i * x.rows + r) * x.row_qwords;
        for (int64_t q = 0; q < nv * lanes; ++q) {
          const uint64_t word = q < nq ? src[q] & (q == nq - 1 ? tail_bits : ~uint64_t{0}) : 0;
          base[((i * nv + q / lanes) * width + slot) * lanes + q % lanes] = word;
        }
      }
    }
  });
  *vectors = nv;
  return panels;
}

// Runs the bit-plane product of x (M rows) and w (N rows) into `sink`, parallel over blocks.
void product(const Tensor& x_planes, const Tensor& w_planes, int64_t K, int64_t group_size,
             cpu::TileSink& sink) {
  const auto& kernels = cpu::active_kernels();
  const cpu::PlaneMatrix xm = plane_matrix(x_planes), w = plane_matrix(w_planes);
  int64_t vectors = 0;
  const std::vector<uint64_t> panels = pack_x_panels(xm, K, kernels.lanes, &vectors);
  const cpu::XPanels x{panels.data(), xm.bits, xm.rows, vectors};
  const int64_t G = num_groups(K, group_size);
  const cpu::GroupSpec groups{K, group_size == 0 ? (K + 63) / 64 : group_size / 64, G};
  const int64_t row_blocks = (x.rows + kBlockRows - 1) / kBlockRows;
  const int64_t col_blocks = (w.rows + kBlockCols - 1) / kBlockCols;
  // Small products run on one thread: waking the pool costs more than they do.
  const int64_t block_work = kBlockRows * kBlockCols * ((K + 63) / 64) * x.bits * w.bits;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 20) / block_work);
  at::parallel_for(0, row_blocks * col_blocks, grain, [&](int64_t b0, int64_t b1) {
    std::vector<int64_t> scratch(static_cast<size_t>(cpu::kMicroRows * cpu::kMicroCols * G));
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t m0 = b / col_blocks * kBlockRows, n0 = b % col_blocks * kBlockCols;
      kernels.product(x, w, groups, m0, std::min(m0 + kBlockRows, x.rows), n0,
                      std::min(n0 + kBlockCols, w.rows), sink, scratch.data());
    }
  });
}

// gemm wants the exact int32 product of one group, which the kernels write directly
// (TileSink::exact_out); consume is never reached.
struct ExactSink final : cpu::TileSink {
  void consume(int64_t, int64_t, int64_t, int64_t, int64_t, const int64_t*) override {
    TORCH_INTERNAL_ASSERT(false, "apq::gemm: kernels write exact results directly");
  }
};

// y[m, n] = sx[m] * sum_g sw[n, g] * (U_g + zw * Sx_g[m] + zx[m] * Sw_g[n] + zx[m] * zw * |g|) + bias[n],
// in double so the affine terms cancel without rounding error.
template <typename out_t>
struct AffineSink final : cpu::TileSink {
  const int32_t* x_rowsum;
  const float* x_scale;
  const float* x_offset;
  const int32_t* w_rowsum;
  const float* w_scale;
  const float* w_offset;
  const float* bias;  // nullptr: none
  std::vector<double> group_len;
  out_t* out;
  int64_t N;

  void consume(int64_t m0, int64_t mrows, int64_t n0, int64_t ncols, int64_t stride,
               const int64_t* U) override {
    const int64_t G = static_cast<int64_t>(group_len.size());
    for (int64_t i = 0; i < mrows; ++i) {
      const int64_t m = m0 + i;
      const double zx = x_offset[m];
      for (int64_t j = 0; j < ncols; ++j) {
        const int64_t n = n0 + j;
        const int64_t* u = U + (i * stride + j) * G;
        double acc = 0.0;
        for (int64_t g = 0; g < G; ++g) {
          const double zw = w_offset[n * G + g];
          const double sum = static_cast<double>(u[g]) + zw * x_rowsum[m * G + g] +
                             zx * (w_rowsum[n * G + g] + zw * group_len[g]);
          acc += static_cast<double>(w_scale[n * G + g]) * sum;
        }
        const double y = static_cast<double>(x_scale[m]) * acc + (bias ? bias[n] : 0.0);
        out[m * N + n] = static_cast<out_t>(static_cast<float>(y));
      }
    }
  }
};

Tensor qmatmul_impl(const char* op, const Tensor& x_planes, const Tensor& x_rowsum,
                    const Tensor& x_scale, const Tensor& x_offset, const Tensor& w_planes,
                    const Tensor& w_rowsum, const Tensor& w_scale, const Tensor& w_offset,
                    int64_t K, int64_t group_size, const std::optional<Tensor>& bias,
                    at::ScalarType out_dtype) {
  check_qmatmul_args(op, x_planes, x_rowsum, x_scale, x_offset, w_planes, w_rowsum, w_scale,
                     w_offset, K, group_size, bias, out_dtype);
  const int64_t M = x_planes.size(1), N = w_planes.size(1), G = num_groups(K, group_size);
  Tensor out = at::empty({M, N}, x_planes.options().dtype(out_dtype));
  if (M == 0 || N == 0) return out;
  const Tensor bias_f = bias.has_value() ? bias->to(at::kFloat).contiguous() : Tensor();
  std::vector<double> group_len(static_cast<size_t>(G));
  for (int64_t g = 0; g < G; ++g) {
    group_len[g] = static_cast<double>(group_size == 0 ? K : std::min(group_size, K - g * group_size));
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out_dtype, "qmatmul_cpu", [&] {
    AffineSink<scalar_t> sink;
    sink.x_rowsum = x_rowsum.data_ptr<int32_t>();
    sink.x_scale = x_scale.data_ptr<float>();
    sink.x_offset = x_offset.data_ptr<float>();
    sink.w_rowsum = w_rowsum.data_ptr<int32_t>();
    sink.w_scale = w_scale.data_ptr<float>();
    sink.w_offset = w_offset.data_ptr<float>();
    sink.bias = bias_f.defined() ? bias_f.data_ptr<float>() : nullptr;
    sink.group_len = std::move(group_len);
    sink.out = out.data_ptr<scalar_t>();
    sink.N = N;
    product(x_planes, w_planes, K, group_size, sink);
  });
  return out;
}

}  // namespace

Tensor gemm_cpu(const Tensor& x_planes, const Tensor& w_planes, int64_t K) {
  check_gemm_args("apq::gemm", x_planes, w_planes, K);
  const int64_t M = x_planes.size(1), N = w_planes.size(1);
  Tensor out = at::empty({M, N}, x_planes.options());
  if (M == 0 || N == 0) return out;
  ExactSink sink;
  sink.exact_out = out.data_ptr<int32_t>();
  sink.exact_ld = N;
  product(x_planes, w_planes, K, /*group_size=*/0, sink);
  return out;
}

Tensor qmatmul_cpu(const Tensor& x_planes, const Tensor& x_rowsum, const Tensor& x_scale,
                   const Tensor& x_offset, const Tensor& w_planes, const Tensor& w_rowsum,
                   const Tensor& w_scale, const Tensor& w_offset, int64_t K, int64_t group_size,
                   const std::optional<Tensor>& bias, at::ScalarType out_dtype) {
  return qmatmul_impl("apq::qmatmul", x_planes, x_rowsum, x_scale, x_offset, w_planes, w_rowsum,
                      w_scale, w_offset, K, group_size, bias, out_dtype);
}

Tensor linear_cpu(const Tensor& x, const Tensor& w_planes, const Tensor& w_rowsum,
                  const Tensor& w_scale, const Tensor& w_offset, int64_t K, int64_t group_size,
                  int64_t a_bits, std::string_view a_format, const std::optional<Tensor>& bias,
                  const std::optional<Tensor>& hadamard) {
  constexpr const char* op = "apq::linear";
  check_linear_args(op, x, w_planes, K, group_size, a_bits, a_format, hadamard);
  const auto [x_planes, x_rowsum, x_scale, x_offset] =
      quantize_pack_cpu(x.reshape({-1, K}).contiguous(), a_bits, a_format, group_size, hadamard);
  const Tensor y = qmatmul_impl(op, x_planes, x_rowsum, x_scale, x_offset, w_planes, w_rowsum,
                                w_scale, w_offset, K, group_size, bias, x.scalar_type());
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = w_planes.size(1);
  return y.view(out_shape);
}

}  // namespace apq
