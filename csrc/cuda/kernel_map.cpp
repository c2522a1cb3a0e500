#include "kernel_map.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/util/Exception.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

namespace apq::cuda {

const char* tile_config_name(TileConfig c) {
  switch (c) {
    case TileConfig::Large: return "large";
    case TileConfig::Skinny: return "skinny";
    case TileConfig::Bgmma: return "bgmma";
  }
  return "?";
}

std::string describe(const KernelChoice& c) {
  return std::string(tile_config_name(c.tile)) + (c.swap_ab ? ",swap" : ",noswap");
}

namespace {

// Rows: the largest stacked activation tile (M * x_bits) the entry serves, for the mma.sync
// kernel of sm_80 ... sm_90 (sm_90 leaves it for the BGMMA kernel from kBgmmaMinStackedM
// stacked rows on, see table_choice). Decode (a few tokens) puts the weights on the MMA's
// 16-row side so the b1 tiles are full; from 128 stacked rows on, plain order.
struct TableRow {
  int64_t max_stacked_m;
  KernelChoice choice;
};
constexpr TableRow kTable[] = {
    {32, {TileConfig::Skinny, true}},
    {128, {TileConfig::Large, true}},
    {INT64_MAX, {TileConfig::Large, false}},
};

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
  if (const char* p = std::getenv("APQ_AUTOTUNE_CACHE")) return p;
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home ? home : ".") / ".cache" / "apq_torch" / "autotune.txt";
}

constexpr TileConfig kAllTiles[] = {TileConfig::Large, TileConfig::Skinny, TileConfig::Bgmma};
// From this many stacked activation rows on, sm_90 runs the BGMMA kernel (256 stacked rows
// of a per block; below, the mma.sync table rows with swap-AB fill the tiles better).
constexpr int64_t kBgmmaMinStackedM = 129;

bool parse_choice(const std::string& text, KernelChoice& out) {
  for (TileConfig t : kAllTiles) {
    for (bool swap : {false, true}) {
      if (text == describe({t, swap})) {
        out = {t, swap};
        return true;
      }
    }
  }
  return false;
}

struct AutotuneCache {
  std::mutex mutex;
  bool loaded = false;
  std::map<std::string, KernelChoice> entries;

  void load_locked() {
    if (loaded) return;
    loaded = true;
    std::ifstream in(cache_path());
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string key, value, extra;
      KernelChoice c;
      // A line is "<key> <choice>"; unknown or torn lines are ignored.
      if (fields >> key >> value && !(fields >> extra) && parse_choice(value, c)) entries[key] = c;
    }
  }

  void append_locked(const std::string& key, const KernelChoice& c) {
    entries[key] = c;
    const auto path = cache_path();
    std::error_code ec;
    std::filesystem::create_directories(path.parent_path(), ec);
    const std::string line = key + " " + describe(c) + "\n";
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
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

KernelChoice table_choice(const GemmShapeKey& key) {
  const int64_t stacked_m = key.M * key.x_bits;
  if (key.arch == 90 && stacked_m >= kBgmmaMinStackedM) return {TileConfig::Bgmma, false};
  for (const TableRow& row : kTable) {
    if (stacked_m <= row.max_stacked_m) return row.choice;
  }
  return kTable[std::size(kTable) - 1].choice;
}

KernelChoice choose_kernel(const GemmShapeKey& key, bool capturing,
                           const std::function<double(KernelChoice)>& time_candidate) {
  if (const char* forced = std::getenv("APQ_GEMM_KERNEL"); forced && *forced) {
    KernelChoice c;
    TORCH_CHECK(parse_choice(forced, c), "APQ_GEMM_KERNEL must be one of large,noswap large,swap ",
                "skinny,noswap skinny,swap bgmma,noswap bgmma,swap (sm_90 only); got '", forced, "'");
    return c;
  }
  if (!autotune_enabled()) return table_choice(key);
  AutotuneCache& cache = autotune_cache();
  const std::string k = cache_key(key);
  std::lock_guard<std::mutex> lock(cache.mutex);
  cache.load_locked();
  if (auto it = cache.entries.find(k); it != cache.entries.end()) return it->second;
  if (capturing) return table_choice(key);
  KernelChoice best = table_choice(key);
  double best_time = time_candidate(best);
  for (TileConfig t : kAllTiles) {
    if (t == TileConfig::Bgmma && key.arch != 90) continue;  // wgmma b1: sm_90a only
    for (bool swap : {false, true}) {
      const KernelChoice c{t, swap};
      if (c.tile == best.tile && c.swap_ab == best.swap_ab) continue;
      const double s = time_candidate(c);
      if (s < best_time) best = c, best_time = s;
    }
  }
  cache.append_locked(k, best);
  return best;
}

}  // namespace apq::cuda

namespace apq {

std::string cuda_kernel_choice(int64_t M, int64_t N, int64_t K, int64_t x_bits, int64_t w_bits, bool grouped) {
  // The current GPU's architecture when there is one, else the sm_80 table row.
  const cudaDeviceProp* prop = at::cuda::is_available() ? at::cuda::getCurrentDeviceProperties() : nullptr;
  const int arch = prop ? prop->major * 10 + prop->minor : 80;
  const cuda::GemmShapeKey key{arch, M, N, K, static_cast<int>(x_bits), static_cast<int>(w_bits), grouped};
  return cuda::describe(cuda::choose_kernel(key, /*capturing=*/true, nullptr));
}

}  // namespace apq
