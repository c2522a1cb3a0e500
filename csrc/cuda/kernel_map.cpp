#include "kernel_map.h"

#include "../ops.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/util/Exception.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <sstream>

namespace apq::cuda {

namespace {

// Rows: the GPUs (arch, 0 = any), the stacked activation tiles (M * x_bits) and bit widths the
// entry serves, and the variants in order of preference: the first row that matches, then its
// first variant that can run the call (the wide tile's fp32 results of K-groups need more
// shared memory than some GPUs give a block; a grid too large on y goes to x when swapped).
// Decode (a few tokens) puts the weights on the MMA's 16-row side, the activations in one block
// column, and splits K until the SMs are busy (split-K plans one split when the output tiles
// alone fill them); from 256 stacked rows on, plain order. sm_90 runs the BGMMA kernel from
// 129 stacked rows on (256 stacked rows of a per block; below, swap-AB fills the tiles better).
// Beyond 256 stacked rows, where x_bits * w_bits >= 16, the integer-MMA kernel comes first (its
// wgmma form IGMMA on sm_90, IMMA elsewhere): per 16 x 8 outputs and 256 bits of K it issues 8
// u8 MMAs (or their share of a wgmma) where the b1 kernels issue
// x_bits * w_bits b1 MMAs (more with idle plane slots), and on sm_80 an m16n8k32 u8 MMA and an
// m16n8k256 b1 MMA take the same tensor-core time (A100: 624 int8 / 4992 binary dense TOPS,
// i.e. 2048 u8 and 16384 b1 MACs per SM and clock). Its steady state issues 5.6 other
// instructions per MMA (plane expansion; bench/results/sass-mix.md) against 0.9 - 1.9 for the
// b1 kernels, so the tensor-core break-even near 8 is not taken: 16 is a static estimate, NOT
// MEASURED on any GPU (sm_90 publishes no b1 rate at all).
struct TableRow {
  int arch;
  int64_t min_stacked_m;  // exclusive
  int64_t max_stacked_m;
  int min_bit_product;    // x_bits * w_bits
  const char* preference[8];  // nullptr ends the list
};
constexpr int64_t kAnyM = std::numeric_limits<int64_t>::max();
constexpr TableRow kTable[] = {
    {0, 0, 32, 0, {"narrow,swap,splitk", "wide,swap,splitk"}},
    {0, 256, kAnyM, 16,
     {"igmma,noswap,splitk", "imma,noswap,splitk", "bgmma,noswap", "wide,noswap,splitk", "narrow,noswap,splitk",
      "wide,swap,splitk", "narrow,swap,splitk"}},
    {90, 0, 128, 0, {"wide,swap,splitk", "narrow,swap,splitk"}},
    {90, 0, kAnyM, 0,
     {"bgmma,noswap", "wide,noswap,splitk", "narrow,noswap,splitk", "wide,swap,splitk", "narrow,swap,splitk"}},
    {0, 0, 256, 0, {"wide,swap,splitk", "narrow,swap,splitk"}},
    {0, 0, kAnyM, 0, {"wide,noswap,splitk", "narrow,noswap,splitk", "wide,swap,splitk", "narrow,swap,splitk"}},
};

const KernelVariant& table_choice(const GemmShapeKey& key, const RefusalFn& refusal) {
  const int64_t stacked_m = key.M * key.x_bits;
  const TableRow* row = &kTable[0];
  while ((row->arch != 0 && row->arch != key.arch) || stacked_m <= row->min_stacked_m ||
         stacked_m > row->max_stacked_m || key.x_bits * key.w_bits < row->min_bit_product)
    ++row;
  for (const char* name : row->preference) {
    if (name == nullptr) break;
    const KernelVariant& v = *find_variant(name);
    if (refusal(v).empty()) return v;
  }
  const KernelVariant& first = *find_variant(row->preference[0]);
  TORCH_CHECK(false, "apq: no CUDA bit-plane GEMM kernel can run this call; ", first.name, ": ", refusal(first));
}

int64_t m_bucket(int64_t M) {
  int64_t b = 1;
  while (b < M) b *= 2;
  return b;
}

std::string cache_key(const GemmShapeKey& k) {
  std::ostringstream s;
  s << "sm" << k.arch << ":m" << m_bucket(k.M) << ":n" << k.N << ":k" << k.K << ":x" << k.x_bits << ":w"
    << k.w_bits << (k.grouped ? ":g" : ":c");
  return s.str();
}

std::filesystem::path cache_path() {
  if (const char* p = std::getenv("APQ_AUTOTUNE_CACHE"); p && *p) return p;
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home ? home : ".") / ".cache" / "apq_torch" / "autotune.txt";
}

struct AutotuneCache {
  std::mutex mutex;
  std::filesystem::path loaded;  // the file `entries` were read from
  bool valid = false;
  std::map<std::string, const KernelVariant*> entries;

  // (Re)reads the file when none was read yet or the configured path changed.
  void load_locked() {
    const auto path = cache_path();
    if (valid && path == loaded) return;
    entries.clear();
    loaded = path;
    valid = true;
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string key, value, extra;
      // A line is "<key> <variant>"; unknown or torn lines are ignored.
      if (fields >> key >> value && !(fields >> extra)) {
        if (const KernelVariant* v = find_variant(value)) entries[key] = v;
      }
    }
  }

  void append_locked(const std::string& key, const KernelVariant& v) {
    entries[key] = &v;
    std::error_code ec;
    std::filesystem::create_directories(loaded.parent_path(), ec);
    const std::string line = key + " " + v.name + "\n";
    const int fd = ::open(loaded.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) return;  // an unwritable cache only costs a re-measurement next time
    [[maybe_unused]] const ssize_t n = ::write(fd, line.data(), line.size());  // one append: atomic for a line
    ::close(fd);
  }
};

AutotuneCache& autotune_cache() {
  static AutotuneCache cache;
  return cache;
}

bool autotune_enabled() {
  const char* v = std::getenv("APQ_AUTOTUNE");
  return v && std::string(v) == "1";
}

}  // namespace

DeviceLimits device_limits(const cudaDeviceProp& prop) {
  return {prop.major * 10 + prop.minor, prop.multiProcessorCount, static_cast<int64_t>(prop.sharedMemPerBlockOptin),
          prop.maxGridSize[0], prop.maxGridSize[1], prop.maxGridSize[2]};
}

const KernelVariant& choose_kernel(const GemmShapeKey& key, bool capturing, const RefusalFn& refusal,
                                   const TimeFn& time_candidate) {
  if (const char* forced = std::getenv("APQ_GEMM_KERNEL"); forced && *forced) {
    const KernelVariant* v = find_variant(forced);
    TORCH_CHECK(v != nullptr, "APQ_GEMM_KERNEL must be one of ", variant_names(), "; got '", forced, "'");
    const std::string why = refusal(*v);
    TORCH_CHECK(why.empty(), "APQ_GEMM_KERNEL=", forced, " cannot run this call: ", why);
    return *v;
  }
  if (!autotune_enabled()) return table_choice(key, refusal);
  AutotuneCache& cache = autotune_cache();
  const std::string k = cache_key(key);
  std::lock_guard<std::mutex> lock(cache.mutex);
  cache.load_locked();
  if (auto it = cache.entries.find(k); it != cache.entries.end() && refusal(*it->second).empty()) return *it->second;
  if (capturing) return table_choice(key, refusal);
  const KernelVariant* best = &table_choice(key, refusal);
  double best_time = time_candidate(*best);
  for (const KernelVariant& v : kVariants) {
    if (&v == best || !refusal(v).empty()) continue;  // a variant that cannot launch is no candidate
    const double t = time_candidate(v);
    if (t < best_time) best = &v, best_time = t;
  }
  cache.append_locked(k, *best);
  return *best;
}

}  // namespace apq::cuda

namespace apq {

std::string cuda_kernel_choice(int64_t M, int64_t N, int64_t K, int64_t x_bits, int64_t w_bits, bool grouped) {
  // The current GPU when there is one, else an A100's limits (sm_80).
  const cuda::DeviceLimits device =
      at::cuda::is_available() ? cuda::device_limits(*at::cuda::getCurrentDeviceProperties()) : cuda::DeviceLimits{};
  cuda::GemmProblem problem;
  problem.M = M, problem.N = N, problem.K = K;
  problem.x_bits = static_cast<int>(x_bits), problem.w_bits = static_cast<int>(w_bits);
  problem.group_size = grouped ? 128 : 0;  // the shared-memory need depends only on there being groups
  problem.out_type = cuda::ElemType::Float32;
  const cuda::GemmShapeKey key{device.arch, M, N, K, problem.x_bits, problem.w_bits, grouped};
  auto refusal = [&](const cuda::KernelVariant& v) { return cuda::plan_launch(problem, v, device).refusal; };
  return cuda::choose_kernel(key, /*capturing=*/true, refusal, nullptr).name;
}

}  // namespace apq
