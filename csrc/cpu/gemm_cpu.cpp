// CPU gemm, qmatmul and linear. The kernel map (kernel_select.h) picks the popcount kernels
// or the int8 ones per product; x is laid out for that kernel (from canonical planes, or
// straight from quantization in linear), the product runs parallel over output blocks, with
// the exact int32 or the affine/dequant epilogue of DESIGN.md §2.
#include "../checks.h"
#include "../format.h"
#include "../ops.h"
#include "kernel_select.h"
#include "quantize_rows.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <vector>

namespace apq {
namespace {

// Popcount output block of one parallel task; big enough to reuse planes from L2, small
// enough that decode shapes (M = 1) still split across threads.
constexpr int64_t kBlockRows = 64, kBlockCols = 64;
// Rows of one int8 task: its 32 channels are expanded once for all of them.
constexpr int64_t kInt8BlockRows = 256;

cpu::PlaneMatrix plane_matrix(const Tensor& planes) {
  return {reinterpret_cast<const uint64_t*>(planes.data_ptr<int32_t>()), planes.size(0),
          planes.size(1), planes.size(2) / 2};
}

cpu::GroupSpec group_spec(int64_t K, int64_t group_size) {
  return {K, group_size == 0 ? (K + 63) / 64 : group_size / 64, num_groups(K, group_size)};
}

// The x operand in the layout of the kernel that reads it: XPanels (popcount) or XBytes (int8).
struct XOperand {
  cpu::KernelChoice kernel;
  int64_t bits, rows, K;
  std::vector<uint64_t> panels;
  int64_t vectors = 0;  // of a panel row
  std::vector<int8_t> bytes;
  int64_t ld = 0;  // of a byte row

  XOperand(cpu::KernelChoice k, int64_t bits_, int64_t rows_, int64_t K_)
      : kernel(k), bits(bits_), rows(rows_), K(K_) {
    const int64_t nq = (K + 63) / 64;
    if (kernel.int8) {
      ld = nq * 64;
      bytes.resize(static_cast<size_t>(rows * ld));
    } else {
      vectors = (nq + kernel.popcount->lanes - 1) / kernel.popcount->lanes;
      panels.resize(static_cast<size_t>(rows * bits * vectors * kernel.popcount->lanes));
    }
  }

  cpu::XPanels xpanels() const { return {panels.data(), bits, rows, vectors}; }
  cpu::XBytes xbytes() const { return {bytes.data(), rows, ld, bits}; }

  // Row r of the panels from its planes (plane i at src + i * plane_stride), bits past K masked.
  void put_panel_row(int64_t r, const uint64_t* src, int64_t plane_stride) {
    const int64_t lanes = kernel.popcount->lanes, nq = (K + 63) / 64;
    const uint64_t tail_bits = K % 64 ? (uint64_t{1} << (K % 64)) - 1 : ~uint64_t{0};
    const int64_t row_words = bits * vectors * lanes, panel_rows_end = rows - rows % cpu::kMicroRows;
    const bool in_panel = r < panel_rows_end;
    const int64_t width = in_panel ? cpu::kMicroRows : 1, slot = in_panel ? r % cpu::kMicroRows : 0;
    uint64_t* base = panels.data() + (r - slot) * row_words;
    for (int64_t i = 0; i < bits; ++i) {
      for (int64_t q = 0; q < vectors * lanes; ++q) {
        const uint64_t word = q < nq ? src[i * plane_stride + q] & (q == nq - 1 ? tail_bits : ~uint64_t{0}) : 0;
        base[((i * vectors + q / lanes) * width + slot) * lanes + q % lanes] = word;
      }
    }
  }

  // Row r from its K byte codes.
  void put_codes(int64_t r, const uint8_t* codes) {
    if (kernel.int8) {
      int8_t* dst = bytes.data() + r * ld;
      for (int64_t k = 0; k < K; ++k) dst[k] = cpu::code_byte(codes[k], bits);
      for (int64_t k = K; k < ld; ++k) dst[k] = 0;
    } else {
      thread_local std::vector<uint64_t> row_planes;
      const int64_t nq = (K + 63) / 64;
      row_planes.resize(static_cast<size_t>(bits * nq));
      kernel.popcount->pack_row(codes, K, bits, row_planes.data(), nq, nq);
      put_panel_row(r, row_planes.data(), nq);
    }
  }

  // Every row from canonical planes.
  void put_planes(const cpu::PlaneMatrix& x) {
    at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
      if (kernel.int8) {
        kernel.int8->bytes_from_planes(x, K, r0, r1, bytes.data(), ld);
      } else {
        for (int64_t r = r0; r < r1; ++r) put_panel_row(r, x.data + r * x.row_qwords, x.rows * x.row_qwords);
      }
    });
  }
};

// Runs the popcount product of x and w into `sink`, parallel over blocks.
void product_popcount(const XOperand& xo, const cpu::PlaneMatrix& w, int64_t group_size, cpu::TileSink& sink) {
  const cpu::Kernels& kernels = *xo.kernel.popcount;
  const cpu::XPanels x = xo.xpanels();
  const int64_t K = xo.K, G = num_groups(K, group_size);
  const cpu::GroupSpec groups = group_spec(K, group_size);
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

// Runs the int8 product of x and w with epilogue `ep`, parallel over blocks of 32 channels.
void product_int8(const XOperand& xo, const cpu::PlaneMatrix& w, int64_t group_size, const cpu::Epilogue& ep) {
  const cpu::Int8Kernels& kernels = *xo.kernel.int8;
  const cpu::XBytes x = xo.xbytes();
  const cpu::GroupSpec groups = group_spec(xo.K, group_size);
  const int64_t row_blocks = (x.rows + kInt8BlockRows - 1) / kInt8BlockRows;
  const int64_t col_blocks = (w.rows + cpu::kInt8BlockCols - 1) / cpu::kInt8BlockCols;
  // Work of a task in byte multiply-adds; expanding its weights costs about 4 rows per plane.
  const int64_t task_work = (std::min(x.rows, kInt8BlockRows) + 4 * w.bits) * cpu::kInt8BlockCols * xo.K;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 22) / task_work);
  at::parallel_for(0, row_blocks * col_blocks, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t m0 = b / col_blocks * kInt8BlockRows, n0 = b % col_blocks * cpu::kInt8BlockCols;
      kernels.product(x, w, groups, m0, std::min(m0 + kInt8BlockRows, x.rows), n0,
                      std::min(n0 + cpu::kInt8BlockCols, w.rows), ep);
    }
  });
}

// gemm on the popcount kernels: they write the exact int32 product of one group directly
// (TileSink::exact_out); consume is never reached.
struct ExactSink final : cpu::TileSink {
  void consume(int64_t, int64_t, int64_t, int64_t, int64_t, const int64_t*) override {
    TORCH_INTERNAL_ASSERT(false, "apq::gemm: kernels write exact results directly");
  }
};

// The popcount kernels' affine epilogue:
// y[m, n] = sx[m] * sum_g sw[n, g] * (U_g + zw * Sx_g[m] + zx[m] * Sw_g[n] + zx[m] * zw * |g|) + bias[n],
// in double so the affine terms cancel without rounding error.
template <typename out_t>
struct AffineSink final : cpu::TileSink {
  const cpu::Epilogue* ep;
  std::vector<double> group_len;
  out_t* out;
  int64_t N;

  void consume(int64_t m0, int64_t mrows, int64_t n0, int64_t ncols, int64_t stride,
               const int64_t* U) override {
    const int64_t G = static_cast<int64_t>(group_len.size());
    for (int64_t i = 0; i < mrows; ++i) {
      const int64_t m = m0 + i;
      const double zx = ep->x_offset[m];
      for (int64_t j = 0; j < ncols; ++j) {
        const int64_t n = n0 + j;
        const int64_t* u = U + (i * stride + j) * G;
        double acc = 0.0;
        for (int64_t g = 0; g < G; ++g) {
          const double zw = ep->w_offset[n * G + g];
          const double sum = static_cast<double>(u[g]) + zw * ep->x_rowsum[m * G + g] +
                             zx * (ep->w_rowsum[n * G + g] + zw * group_len[g]);
          acc += static_cast<double>(ep->w_scale[n * G + g]) * sum;
        }
        const double y = static_cast<double>(ep->x_scale[m]) * acc + (ep->bias ? ep->bias[n] : 0.0);
        out[m * N + n] = static_cast<out_t>(static_cast<float>(y));
      }
    }
  }
};

// qmatmul's product and epilogue for an x operand with its row sums, scales and offsets.
Tensor affine_product(const XOperand& x, const int32_t* x_rowsum, const float* x_scale,
                      const float* x_offset, const Tensor& w_planes, const Tensor& w_rowsum,
                      const Tensor& w_scale, const Tensor& w_offset, int64_t group_size,
                      const std::optional<Tensor>& bias, at::ScalarType out_dtype) {
  const int64_t M = x.rows, N = w_planes.size(1), K = x.K, G = num_groups(K, group_size);
  const auto opts = w_planes.options();
  Tensor out = at::empty({M, N}, opts.dtype(out_dtype));
  if (M == 0 || N == 0) return out;
  const Tensor bias_f = bias.has_value() ? bias->to(at::kFloat).contiguous() : Tensor();
  const Tensor y = x.kernel.int8 && out_dtype != at::kFloat ? at::empty({M, N}, opts.dtype(at::kFloat)) : out;
  const cpu::Epilogue ep{nullptr, x.kernel.int8 ? y.data_ptr<float>() : nullptr, N, x_rowsum, x_scale,
                         x_offset, w_rowsum.data_ptr<int32_t>(), w_scale.data_ptr<float>(),
                         w_offset.data_ptr<float>(), bias_f.defined() ? bias_f.data_ptr<float>() : nullptr};
  const cpu::PlaneMatrix w = plane_matrix(w_planes);
  if (x.kernel.int8) {
    product_int8(x, w, group_size, ep);
    if (!y.is_same(out)) out.copy_(y);
    return out;
  }
  std::vector<double> group_len(static_cast<size_t>(G));
  for (int64_t g = 0; g < G; ++g) {
    group_len[g] = static_cast<double>(group_size == 0 ? K : std::min(group_size, K - g * group_size));
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out_dtype, "qmatmul_cpu", [&] {
    AffineSink<scalar_t> sink;
    sink.ep = &ep;
    sink.group_len = std::move(group_len);
    sink.out = out.data_ptr<scalar_t>();
    sink.N = N;
    product_popcount(x, w, group_size, sink);
  });
  return out;
}

}  // namespace

Tensor gemm_cpu(const Tensor& x_planes, const Tensor& w_planes, int64_t K) {
  check_gemm_args("apq::gemm", x_planes, w_planes, K);
  const int64_t M = x_planes.size(1), N = w_planes.size(1);
  Tensor out = at::empty({M, N}, x_planes.options());
  if (M == 0 || N == 0) return out;
  XOperand x(cpu::choose_kernel(M, x_planes.size(0), w_planes.size(0), 0), x_planes.size(0), M, K);
  x.put_planes(plane_matrix(x_planes));
  if (x.kernel.int8) {
    cpu::Epilogue ep{};
    ep.exact = out.data_ptr<int32_t>();
    ep.ld = N;
    product_int8(x, plane_matrix(w_planes), 0, ep);
  } else {
    ExactSink sink;
    sink.exact_out = out.data_ptr<int32_t>();
    sink.exact_ld = N;
    product_popcount(x, plane_matrix(w_planes), /*group_size=*/0, sink);
  }
  return out;
}

Tensor qmatmul_cpu(const Tensor& x_planes, const Tensor& x_rowsum, const Tensor& x_scale,
                   const Tensor& x_offset, const Tensor& w_planes, const Tensor& w_rowsum,
                   const Tensor& w_scale, const Tensor& w_offset, int64_t K, int64_t group_size,
                   const std::optional<Tensor>& bias, at::ScalarType out_dtype) {
  check_qmatmul_args("apq::qmatmul", x_planes, x_rowsum, x_scale, x_offset, w_planes, w_rowsum, w_scale,
                     w_offset, K, group_size, bias, out_dtype);
  const int64_t M = x_planes.size(1);
  XOperand x(cpu::choose_kernel(M, x_planes.size(0), w_planes.size(0), group_size), x_planes.size(0), M, K);
  x.put_planes(plane_matrix(x_planes));
  return affine_product(x, x_rowsum.data_ptr<int32_t>(), x_scale.data_ptr<float>(), x_offset.data_ptr<float>(),
                        w_planes, w_rowsum, w_scale, w_offset, group_size, bias, out_dtype);
}

// quantize_pack + qmatmul with x quantized straight into the chosen kernel's layout.
Tensor linear_cpu(const Tensor& x, const Tensor& w_planes, const Tensor& w_rowsum,
                  const Tensor& w_scale, const Tensor& w_offset, int64_t K, int64_t group_size,
                  int64_t a_bits, std::string_view a_format, const std::optional<Tensor>& bias,
                  const std::optional<Tensor>& hadamard, double a_clip) {
  constexpr const char* op = "apq::linear";
  check_linear_args(op, x, w_planes, K, group_size, a_bits, a_format, hadamard, a_clip);
  check_weight_args(op, w_planes, w_rowsum, w_scale, w_offset, K, group_size, bias);
  check_same_device(op, {{"x", &x}, {"w_planes", &w_planes}});
  const Format fmt = parse_format(a_format, a_bits, op, "a_format");
  const Tensor x2 = x.reshape({-1, K}).contiguous();
  const int64_t M = x2.size(0);
  XOperand xo(cpu::choose_kernel(M, a_bits, w_planes.size(0), group_size), a_bits, M, K);
  const auto opts = x.options();
  Tensor rowsum = at::empty({M, num_groups(K, group_size)}, opts.dtype(at::kInt));
  Tensor scale = at::empty({M}, opts.dtype(at::kFloat));
  Tensor offset = at::empty({M}, opts.dtype(at::kFloat));
  cpu::quantize_rows(x2, a_bits, fmt, group_size, cpu::RowRotation(hadamard, K), a_clip, scale.data_ptr<float>(),
                     offset.data_ptr<float>(), rowsum.data_ptr<int32_t>(),
                     [&](int64_t m, const uint8_t* codes) { xo.put_codes(m, codes); });
  const Tensor y = affine_product(xo, rowsum.data_ptr<int32_t>(), scale.data_ptr<float>(), offset.data_ptr<float>(),
                                  w_planes, w_rowsum, w_scale, w_offset, group_size, bias, x.scalar_type());
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = w_planes.size(1);
  return y.view(out_shape);
}

}  // namespace apq
