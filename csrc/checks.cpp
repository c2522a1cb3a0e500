#include "checks.h"
#include "format.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <limits>
#include <sstream>

namespace apq {

namespace {
std::string sizes_str(std::initializer_list<int64_t> sizes) {
  std::ostringstream s;
  s << "[";
  bool first = true;
  for (int64_t v : sizes) {
    s << (first ? "" : ", ") << v;
    first = false;
  }
  s << "]";
  return s.str();
}
}  // namespace

void check_bits(int64_t bits, const char* op, const char* name) {
  TORCH_CHECK(bits >= 1 && bits <= kMaxBits, op, ": argument '", name,
              "' must be between 1 and 8 bits, got ", bits);
}

void check_K(int64_t K, const char* op) {
  TORCH_CHECK(K >= 1, op, ": argument 'K' must be >= 1, got ", K);
}

void check_group_size(int64_t group_size, const char* op) {
  TORCH_CHECK(group_size == 0 || (group_size > 0 && group_size % kGroupQuantum == 0), op,
              ": argument 'group_size' must be 0 (one group per row) or a positive multiple of ",
              kGroupQuantum, ", got ", group_size);
}

void check_planes(const Tensor& planes, int64_t K, const char* op, const char* name) {
  TORCH_CHECK(planes.dim() == 3, op, ": argument '", name,
              "' must be packed planes of shape [bits, rows, words], got ", planes.dim(),
              " dimensions");
  TORCH_CHECK(planes.scalar_type() == at::kInt, op, ": argument '", name, "' must be int32, got ",
              planes.scalar_type());
  check_bits(planes.size(0), op, (std::string(name) + ".size(0) (bits)").c_str());
  TORCH_CHECK(planes.size(2) == padded_words(K), op, ": argument '", name, "' has ",
              planes.size(2), " words per row but K=", K, " needs ", padded_words(K),
              " (K padded to a multiple of 256 bits)");
  TORCH_CHECK(planes.is_contiguous(), op, ": argument '", name, "' must be contiguous");
}

void check_tensor(const Tensor& t, const char* op, const char* name, at::ScalarType dtype,
                  std::initializer_list<int64_t> sizes) {
  TORCH_CHECK(t.scalar_type() == dtype, op, ": argument '", name, "' must be ", dtype, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.sizes().equals(c10::IntArrayRef(sizes)), op, ": argument '", name,
              "' must have shape ", sizes_str(sizes), ", got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), op, ": argument '", name, "' must be contiguous");
}

void check_same_device(const char* op,
                       std::initializer_list<std::pair<const char*, const Tensor*>> tensors) {
  const auto& [first_name, first] = *tensors.begin();
  for (const auto& [name, t] : tensors) {
    TORCH_CHECK(t->device() == first->device(), op, ": argument '", name, "' is on ",
                t->device(), " but '", first_name, "' is on ", first->device());
  }
}

void check_gemm_args(const char* op, const Tensor& x_planes, const Tensor& w_planes, int64_t K) {
  check_K(K, op);
  check_planes(x_planes, K, op, "x_planes");
  check_planes(w_planes, K, op, "w_planes");
  check_same_device(op, {{"x_planes", &x_planes}, {"w_planes", &w_planes}});
  const int64_t worst = ((int64_t{1} << x_planes.size(0)) - 1) * ((int64_t{1} << w_planes.size(0)) - 1);
  TORCH_CHECK(K <= std::numeric_limits<int32_t>::max() / worst, op, ": argument 'K'=", K,
              " is too large for an exact int32 result with ", x_planes.size(0), "-bit x and ",
              w_planes.size(0), "-bit w (worst case ", worst, "*K overflows int32); split K or use qmatmul");
}

void check_weight_args(const char* op, const Tensor& w_planes, const Tensor& w_rowsum,
                       const Tensor& w_scale, const Tensor& w_offset, int64_t K, int64_t group_size,
                       const std::optional<Tensor>& bias) {
  check_K(K, op);
  check_group_size(group_size, op);
  check_planes(w_planes, K, op, "w_planes");
  const int64_t N = w_planes.size(1), G = num_groups(K, group_size);
  check_tensor(w_rowsum, op, "w_rowsum", at::kInt, {N, G});
  check_tensor(w_scale, op, "w_scale", at::kFloat, {N, G});
  check_tensor(w_offset, op, "w_offset", at::kFloat, {N, G});
  check_same_device(op, {{"w_planes", &w_planes}, {"w_rowsum", &w_rowsum}, {"w_scale", &w_scale},
                         {"w_offset", &w_offset}});
  if (bias.has_value()) {
    TORCH_CHECK(at::isFloatingType(bias->scalar_type()), op,
                ": argument 'bias' must be a floating tensor, got ", bias->scalar_type());
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == N, op, ": argument 'bias' must have shape [",
                N, "], got ", bias->sizes());
    check_same_device(op, {{"w_planes", &w_planes}, {"bias", &*bias}});
  }
}

void check_qmatmul_args(const char* op, const Tensor& x_planes, const Tensor& x_rowsum,
                        const Tensor& x_scale, const Tensor& x_offset, const Tensor& w_planes,
                        const Tensor& w_rowsum, const Tensor& w_scale, const Tensor& w_offset,
                        int64_t K, int64_t group_size, const std::optional<Tensor>& bias,
                        at::ScalarType out_dtype) {
  check_K(K, op);
  check_group_size(group_size, op);
  check_planes(x_planes, K, op, "x_planes");
  check_planes(w_planes, K, op, "w_planes");
  const int64_t M = x_planes.size(1), G = num_groups(K, group_size);
  check_tensor(x_rowsum, op, "x_rowsum", at::kInt, {M, G});
  check_tensor(x_scale, op, "x_scale", at::kFloat, {M});
  check_tensor(x_offset, op, "x_offset", at::kFloat, {M});
  check_same_device(op, {{"x_planes", &x_planes}, {"x_rowsum", &x_rowsum}, {"x_scale", &x_scale},
                         {"x_offset", &x_offset}, {"w_planes", &w_planes}});
  check_weight_args(op, w_planes, w_rowsum, w_scale, w_offset, K, group_size, bias);
  TORCH_CHECK(out_dtype == at::kFloat || out_dtype == at::kHalf || out_dtype == at::kBFloat16, op,
              ": argument 'out_dtype' must be float32, float16 or bfloat16, got ", out_dtype);
}

void check_activation(const Tensor& x, int64_t K, const char* op, const char* name, bool need_2d) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kHalf ||
                  x.scalar_type() == at::kBFloat16,
              op, ": argument '", name, "' must be float32, float16 or bfloat16, got ",
              x.scalar_type());
  if (need_2d) {
    TORCH_CHECK(x.dim() == 2, op, ": argument '", name, "' must be 2-D [M, K], got ", x.dim(),
                " dimensions");
    TORCH_CHECK(x.is_contiguous(), op, ": argument '", name, "' must be contiguous");
  } else {
    TORCH_CHECK(x.dim() >= 1, op, ": argument '", name, "' must have at least one dimension");
  }
  TORCH_CHECK(x.size(-1) == K, op, ": argument '", name, "' must have last dimension K=", K,
              ", got ", x.size(-1));
}

void check_linear_args(const char* op, const Tensor& x, const Tensor& w_planes, int64_t K, int64_t group_size,
                       int64_t a_bits, std::string_view a_format, const std::optional<Tensor>& hadamard,
                       double a_clip) {
  check_K(K, op);
  check_activation(x, K, op, "x", /*need_2d=*/false);
  check_bits(a_bits, op, "a_bits");
  parse_format(a_format, a_bits, op, "a_format");
  check_planes(w_planes, K, op, "w_planes");
  check_group_size(group_size, op);
  if (hadamard.has_value()) check_hadamard_mix(*hadamard, x, K, op, "hadamard");
  check_clip(a_clip, op, "a_clip");
}

void check_hadamard_mix(const Tensor& mix, const Tensor& x, int64_t n, const char* op, const char* name) {
  TORCH_CHECK(mix.dim() == 2 && mix.size(0) == mix.size(1) && mix.size(0) >= 1, op, ": argument '", name,
              "' must be a square [m, m] matrix, got shape ", mix.sizes());
  TORCH_CHECK(mix.scalar_type() == at::kFloat, op, ": argument '", name, "' must be float32, got ",
              mix.scalar_type());
  TORCH_CHECK(mix.is_contiguous(), op, ": argument '", name, "' must be contiguous");
  check_same_device(op, {{"x", &x}, {name, &mix}});
  const int64_t m = mix.size(0), P = n / m;
  TORCH_CHECK(n % m == 0 && P >= 1 && (P & (P - 1)) == 0, op, ": argument '", name, "' is ", m, "x", m,
              ", but the transformed size ", n, " is not ", m, " times a power of two");
}

int64_t check_hadamard_args(const Tensor& x, const Tensor& mix, const char* op) {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) >= 1, op, ": argument 'x' must have a non-empty last dimension, got shape ",
              x.sizes());
  check_activation(x, x.size(-1), op, "x", /*need_2d=*/false);
  check_hadamard_mix(mix, x, x.size(-1), op, "mix");
  return x.size(-1);
}

void check_pack_args(const Tensor& codes, int64_t bits, int64_t group_size) {
  constexpr const char* op = "apq::pack";
  check_bits(bits, op, "bits");
  check_group_size(group_size, op);
  TORCH_CHECK(codes.dim() == 2, op, ": argument 'codes' must be 2-D [rows, K], got ", codes.dim(),
              " dimensions");
  TORCH_CHECK(at::isIntegralType(codes.scalar_type(), /*includeBool=*/false), op,
              ": argument 'codes' must be an integer tensor, got ", codes.scalar_type());
  TORCH_CHECK(codes.size(1) >= 1, op, ": argument 'codes' must have at least one column (K >= 1)");
}

void check_codes_range(const Tensor& codes, int64_t bits) {
  if (codes.numel() == 0) return;
  const auto [lo, hi] = at::aminmax(codes);
  const int64_t lo_v = lo.item<int64_t>(), hi_v = hi.item<int64_t>();
  TORCH_CHECK(lo_v >= 0 && hi_v < (int64_t{1} << bits), "apq::pack: argument 'codes' must hold unsigned ",
              bits, "-bit codes in [0, ", (int64_t{1} << bits) - 1, "], found values in [", lo_v, ", ",
              hi_v, "]");
}

void check_clip(double clip, const char* op, const char* name) {
  TORCH_CHECK(clip > 0.0 && clip <= 1.0, op, ": argument '", name, "' must be a clipping ratio in (0, 1], got ", clip);
}

Format check_quantize_pack_args(const Tensor& x, int64_t bits, std::string_view format, int64_t group_size,
                                const std::optional<Tensor>& hadamard, double clip) {
  constexpr const char* op = "apq::quantize_pack";
  check_bits(bits, op, "bits");
  const Format fmt = parse_format(format, bits, op, "format");
  check_group_size(group_size, op);
  TORCH_CHECK(x.dim() == 2, op, ": argument 'x' must be 2-D [M, K], got ", x.dim(), " dimensions");
  check_K(x.size(1), op);
  check_activation(x, x.size(1), op, "x", /*need_2d=*/true);
  if (hadamard.has_value()) check_hadamard_mix(*hadamard, x, x.size(1), op, "hadamard");
  check_clip(clip, op, "clip");
  return fmt;
}

Format parse_format(std::string_view name, int64_t bits, const char* op, const char* arg) {
  Format f;
  if (name == "unsigned") {
    f = Format::Unsigned;
  } else if (name == "signed") {
    f = Format::Signed;
  } else if (name == "bipolar") {
    f = Format::Bipolar;
  } else {
    TORCH_CHECK(false, op, ": argument '", arg,
                "' must be 'unsigned', 'signed' or 'bipolar', got '", name, "'");
  }
  TORCH_CHECK(f != Format::Signed || bits >= 2, op, ": argument '", arg,
              "'='signed' needs at least 2 bits (a 1-bit signed grid is {-1, 0}); use 'bipolar'");
  return f;
}

}  // namespace apq
