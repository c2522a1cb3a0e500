// Host model of the sm_90 asynchronous machinery, after the PTX ISA: mbarrier objects
// (arrival count, transaction count, phase parity), TMA tensor copies (tensor map, box,
// out-of-bounds zero fill, 128/64/32-byte swizzle; completion on an mbarrier), and the
// warpgroup MMA queue (wgmma.mma_async / commit_group / wait_group). Used by the stand-ins in
// apq/sm90_*.hpp of this folder. Written from the ISA, not from the kernel's own helpers:
//   - a TMA copy may land late: when `lazy`, its bytes reach shared memory only when some
//     thread first waits on its barrier (or at the latest possible point), so a consumer that
//     reads a stage without waiting sees stale bytes;
//   - a wgmma reads its A registers and B shared memory, and writes its accumulators, only
//     when a wait_group retires it, so reading accumulators early, reusing A registers or
//     giving a stage back before the wait all show up as wrong results.
#pragma once

#include <cuda.h>

#include <barrier>
#include <bit>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace emu90 {

[[noreturn]] inline void fail(const std::string& what) { throw std::runtime_error("sm90 emulator: " + what); }

// ---- shared memory: one block's buffer; "shared addresses" are offsets into it ----
struct SharedMemory {
  uint8_t* base = nullptr;
  size_t bytes = 0;
  uint32_t address(const void* p) const {
    const auto* q = static_cast<const uint8_t*>(p);
    if (q < base || q >= base + bytes) fail("pointer outside shared memory");
    return static_cast<uint32_t>(q - base);
  }
  uint8_t* at(uint32_t address, size_t n) const {
    if (address + n > bytes) fail("shared access past the end of shared memory");
    return base + address;
  }
};

// Address swizzle of the 128/64/32-byte modes (CuTe Swizzle<3|2|1, 4, 3> on byte addresses):
// the 16-byte chunk bits [4, 4 + b) are XORed with bits [7, 7 + b).
inline uint32_t swizzle(uint32_t address, int swizzle_bytes) {
  const int b = swizzle_bytes == 128 ? 3 : swizzle_bytes == 64 ? 2 : swizzle_bytes == 32 ? 1 : 0;
  return address ^ (((address >> 7) & ((1u << b) - 1)) << 4);
}

// ---- tensor maps: the encoder stores these fields in the opaque CUtensorMap ----
struct TensorMap {
  static constexpr uint64_t kMagic = 0x61707174656e736full;
  uint64_t magic;
  const uint8_t* base;
  uint32_t rank, elem_bytes, swizzle_bytes;
  uint64_t dims[5];
  uint64_t strides[5];  // bytes; strides[0] = elem_bytes
  uint16_t box[5];
};
static_assert(sizeof(TensorMap) <= sizeof(CUtensorMap));

// cuTensorMapEncodeTiled with the driver's argument checks that matter here.
inline CUresult encode_tensor_map(CUtensorMap* out, CUtensorMapDataType type, cuuint32_t rank, void* address,
                                  const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box,
                                  const cuuint32_t* element_strides, CUtensorMapInterleave interleave,
                                  CUtensorMapSwizzle swizzle_mode, CUtensorMapL2promotion, CUtensorMapFloatOOBfill fill) {
  TensorMap m{};
  m.magic = TensorMap::kMagic;
  m.base = static_cast<const uint8_t*>(address);
  m.rank = rank;
  switch (type) {
    case CU_TENSOR_MAP_DATA_TYPE_UINT8: m.elem_bytes = 1; break;
    case CU_TENSOR_MAP_DATA_TYPE_UINT16: m.elem_bytes = 2; break;
    case CU_TENSOR_MAP_DATA_TYPE_UINT32: case CU_TENSOR_MAP_DATA_TYPE_INT32: m.elem_bytes = 4; break;
    case CU_TENSOR_MAP_DATA_TYPE_UINT64: case CU_TENSOR_MAP_DATA_TYPE_INT64: m.elem_bytes = 8; break;
    default: return CUDA_ERROR_INVALID_VALUE;
  }
  switch (swizzle_mode) {
    case CU_TENSOR_MAP_SWIZZLE_NONE: m.swizzle_bytes = 0; break;
    case CU_TENSOR_MAP_SWIZZLE_32B: m.swizzle_bytes = 32; break;
    case CU_TENSOR_MAP_SWIZZLE_64B: m.swizzle_bytes = 64; break;
    case CU_TENSOR_MAP_SWIZZLE_128B: m.swizzle_bytes = 128; break;
    default: return CUDA_ERROR_INVALID_VALUE;
  }
  if (rank < 1 || rank > 5 || reinterpret_cast<uintptr_t>(address) % 16 != 0 ||
      interleave != CU_TENSOR_MAP_INTERLEAVE_NONE || fill != CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE)
    return CUDA_ERROR_INVALID_VALUE;
  m.strides[0] = m.elem_bytes;
  for (cuuint32_t i = 0; i < rank; ++i) {
    if (dims[i] == 0 || dims[i] > (uint64_t{1} << 32) || box[i] == 0 || box[i] > 256 || element_strides[i] != 1)
      return CUDA_ERROR_INVALID_VALUE;
    m.dims[i] = dims[i];
    m.box[i] = static_cast<uint16_t>(box[i]);
    if (i > 0) {
      if (strides[i - 1] % 16 != 0 || strides[i - 1] >= (uint64_t{1} << 40)) return CUDA_ERROR_INVALID_VALUE;
      m.strides[i] = strides[i - 1];
    }
  }
  const uint64_t inner_bytes = uint64_t{box[0]} * m.elem_bytes;
  if (inner_bytes % 16 != 0 || (m.swizzle_bytes != 0 && inner_bytes > m.swizzle_bytes)) return CUDA_ERROR_INVALID_VALUE;
  std::memset(out, 0, sizeof(*out));
  std::memcpy(out, &m, sizeof(m));
  return CUDA_SUCCESS;
}

// ---- the machine of one block ----
struct PendingCopy {
  TensorMap map;
  uint32_t dst;
  int32_t coords[5];
  uint32_t bytes;
};

struct Mbarrier {
  uint32_t count = 0, pending = 0;
  int64_t tx = 0;
  uint64_t phase = 0;  // completed phases; the current one has parity phase & 1
  std::vector<PendingCopy> copies;  // issued, not landed
};

struct GmmaOp {
  const uint32_t* a;  // the issuing thread's 4 A registers, read when the op retires
  uint32_t* d;        // its 32 (b1) or 64 (u8) accumulators, written when the op retires
  uint64_t desc_b;
  bool accumulate;
  // m64n64k256 .b1 AND-popc, A from registers; or m64n128k32 .u8.u8, A through desc_a
  enum class Kind { B1_64x64x256_RS, U8_64x128x32_SS } kind = Kind::B1_64x64x256_RS;
  uint64_t desc_a = 0;
};

struct Warpgroup {
  std::barrier<> sync{128};
  std::vector<GmmaOp> ops[128];          // issued, not retired, per thread
  std::vector<size_t> commits[128];      // op counts at each commit_group, not retired
};

class Machine {
 public:
  Machine(SharedMemory smem, uint64_t seed, bool lazy_tma) : smem_(smem), rng_(seed), lazy_(lazy_tma) {}

  const SharedMemory& smem() const { return smem_; }

  // -- mbarrier --
  void init(uint32_t bar, uint32_t count) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (count == 0) fail("mbarrier.init with count 0");
    if (bar % 8 != 0) fail("mbarrier not 8-byte aligned");
    barriers_[bar] = Mbarrier{count, count, 0, 0, {}};
    std::memcpy(smem_.at(bar, 8), &kCookie, 8);  // the object's bytes: ordinary stores must not touch them
  }
  void arrive(uint32_t bar, uint32_t tx_bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    Mbarrier& b = barrier(bar);
    if (b.pending == 0) fail("mbarrier.arrive on a barrier with no pending arrivals");
    b.tx += tx_bytes;
    --b.pending;
    complete_if_done(b);
  }
  // try_wait.parity until it succeeds: the phase of parity `parity` has completed when the
  // current phase has the other parity. Lazily issued copies on this barrier land first.
  void wait(uint32_t bar, uint32_t parity) {
    std::unique_lock<std::mutex> lock(mutex_);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (true) {
      Mbarrier& b = barrier(bar);
      if ((b.phase & 1) != (parity & 1)) return;
      land_all(b);
      if ((b.phase & 1) != (parity & 1)) return;
      if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) fail("deadlock: an mbarrier phase never completed");
    }
  }

  // -- TMA: cp.async.bulk.tensor.Nd.shared.global.mbarrier::complete_tx::bytes --
  void tma_load(const CUtensorMap* desc, uint32_t bar, uint32_t dst, const int32_t* coords, uint32_t rank) {
    PendingCopy c{};
    std::memcpy(&c.map, desc, sizeof(c.map));
    if (c.map.magic != TensorMap::kMagic) fail("TMA with a tensor map the emulated encoder did not write");
    if (c.map.rank != rank) fail("TMA with a tensor map of another rank");
    if (dst % 128 != 0) fail("TMA shared destination not 128-byte aligned");
    c.dst = dst;
    c.bytes = c.map.elem_bytes;
    for (uint32_t i = 0; i < c.map.rank; ++i) {
      c.coords[i] = coords[i];
      c.bytes *= c.map.box[i];
    }
    std::lock_guard<std::mutex> lock(mutex_);
    Mbarrier& b = barrier(bar);
    if (lazy_ && std::bernoulli_distribution(0.5)(rng_)) {
      b.copies.push_back(c);
      cv_.notify_all();  // a thread already waiting on the barrier lands it
    } else {
      land(b, c);
    }
  }

  // -- wgmma.mma_async (A from registers, B K-major through a descriptor) --
  static void issue(Warpgroup& wg, int thread, const GmmaOp& op) { wg.ops[thread].push_back(op); }
  static void commit(Warpgroup& wg, int thread) { wg.commits[thread].push_back(wg.ops[thread].size()); }
  // wait_group n: retires all but the n most recent committed groups, warpgroup-wide.
  // Every thread of the warpgroup makes the same calls, so they all take the same branch.
  void wait_group(Warpgroup& wg, int thread, int n) {
    std::vector<size_t>& commits = wg.commits[thread];
    if (commits.size() <= static_cast<size_t>(n)) return;
    wg.sync.arrive_and_wait();  // every thread has issued its ops and stopped touching registers
    const size_t retire = commits[commits.size() - 1 - n];
    for (size_t k = 0; k < retire; ++k) execute(wg, thread, k);
    wg.sync.arrive_and_wait();  // all reads of other threads' A registers are done
    std::vector<GmmaOp>& ops = wg.ops[thread];
    ops.erase(ops.begin(), ops.begin() + static_cast<std::ptrdiff_t>(retire));
    std::vector<size_t> rest;
    for (size_t i = commits.size() - n; i < commits.size(); ++i) rest.push_back(commits[i] - retire);
    commits = rest;
  }

  // bar.sync id, threads (created on first use).
  void named_barrier(uint32_t id, uint32_t threads) {
    std::barrier<>* b;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto& slot = named_[id];
      if (!slot.barrier) {
        slot.barrier = std::make_unique<std::barrier<>>(threads);
        slot.threads = threads;
      } else if (slot.threads != threads) {
        fail("bar.sync with a different thread count for the same barrier");
      }
      b = slot.barrier.get();
    }
    b->arrive_and_wait();
  }

 private:
  Mbarrier& barrier(uint32_t bar) {
    auto it = barriers_.find(bar);
    if (it == barriers_.end()) fail("mbarrier used before mbarrier.init");
    if (std::memcmp(smem_.at(bar, 8), &kCookie, 8) != 0) fail("an mbarrier's shared memory was overwritten");
    return it->second;
  }
  static constexpr uint64_t kCookie = 0x6d62617272696572ull;
  void complete_if_done(Mbarrier& b) {
    if (b.pending == 0 && b.tx == 0) {
      ++b.phase;
      b.pending = b.count;
      cv_.notify_all();
    }
  }
  void land_all(Mbarrier& b) {
    std::vector<PendingCopy> copies;
    copies.swap(b.copies);
    for (const PendingCopy& c : copies) land(b, c);
  }
  // The box, row by row of its innermost dimension, out-of-bounds elements as zeros, into
  // shared memory at dst in box order with the map's swizzle; then complete_tx.
  void land(Mbarrier& b, const PendingCopy& c) {
    const TensorMap& m = c.map;
    uint32_t index[5] = {};
    for (uint32_t linear = 0; linear * m.elem_bytes < c.bytes; ++linear) {
      bool inside = true;
      uint64_t offset = 0;
      for (uint32_t d = 0; d < m.rank; ++d) {
        const int64_t coord = int64_t{c.coords[d]} + index[d];
        inside = inside && coord >= 0 && static_cast<uint64_t>(coord) < m.dims[d];
        offset += static_cast<uint64_t>(coord) * m.strides[d];
      }
      const uint32_t dst = swizzle(c.dst + linear * m.elem_bytes, m.swizzle_bytes);
      uint8_t* out = smem_.at(dst, m.elem_bytes);
      if (inside) {
        std::memcpy(out, m.base + offset, m.elem_bytes);
      } else {
        std::memset(out, 0, m.elem_bytes);
      }
      for (uint32_t d = 0; d < m.rank && ++index[d] == m.box[d]; ++d) index[d] = 0;
    }
    b.tx -= c.bytes;
    complete_if_done(b);
  }

  // Bits 32 w .. 32 w + 31 of row n of the K-major B operand: the matrix descriptor (start,
  // leading and stride byte offsets, layout type) and the canonical K-major layouts of the
  // PTX ISA: rows of an 8-row core-matrix group are (swizzle width) bytes apart (16 without
  // swizzle), 8-row groups SBO apart, the two 128-bit halves of K 16 bytes (swizzled) or LBO
  // (no swizzle) apart.
  uint32_t b_word(uint64_t desc, int n, int w) const {
    const uint32_t start = static_cast<uint32_t>(desc & 0x3FFF) << 4;
    const uint32_t lbo = static_cast<uint32_t>((desc >> 16) & 0x3FFF) << 4;
    const uint32_t sbo = static_cast<uint32_t>((desc >> 32) & 0x3FFF) << 4;
    const int base_offset = static_cast<int>((desc >> 49) & 7);
    const int layout = static_cast<int>(desc >> 62);
    if (base_offset != 0) fail("matrix descriptor base offset is not emulated");
    const int swizzle_bytes = layout == 1 ? 128 : layout == 2 ? 64 : layout == 3 ? 32 : 0;
    const int half = w / 4, word = w % 4;
    uint32_t address = start + (n / 8) * sbo + 4 * word;
    address += swizzle_bytes ? (n % 8) * swizzle_bytes + 16 * half : (n % 8) * 16 + half * lbo;
    uint32_t v;
    std::memcpy(&v, smem_.at(swizzle(address, swizzle_bytes), 4), 4);
    return v;
  }

  // One retired m64n64k256 .b1 AND-popc op, for the accumulators of `thread`. A fragment
  // (ISA "wgmma .m64nNk256 register fragment layout for matrix A"): the thread of warp w,
  // lane 4g + t holds rows 16w + g (registers 0, 2) and 16w + g + 8 (1, 3), bits 32t ..
  // 32t + 31 of the first 128 (registers 0, 1) and of the second (2, 3). D fragment:
  // register 4j + 2h + e is row 16w + g + 8h, column 8j + 2t + e.
  void execute(Warpgroup& wg, int thread, size_t k) const {
    const GmmaOp& op = wg.ops[thread][k];
    for (int other = 0; other < 128; ++other) {
      if (wg.ops[other].size() <= k || wg.ops[other][k].desc_b != op.desc_b ||
          wg.ops[other][k].accumulate != op.accumulate || wg.ops[other][k].kind != op.kind ||
          wg.ops[other][k].desc_a != op.desc_a)
        fail("the threads of a warpgroup issued different wgmmas");
    }
    if (op.kind == GmmaOp::Kind::U8_64x128x32_SS) return execute_u8(op, thread);
    const int w = thread / 32, lane = thread % 32, g = lane / 4, t = lane % 4;
    uint32_t a_row[2][8];
    for (int h = 0; h < 2; ++h) {
      const int row = 16 * w + g + 8 * h;
      for (int word = 0; word < 8; ++word) {
        const int owner = 32 * (row / 16) + 4 * (row % 8) + word % 4;
        a_row[h][word] = wg.ops[owner][k].a[(row % 16) / 8 + 2 * (word / 4)];
      }
    }
    for (int r = 0; r < 32; ++r) {
      const int h = (r / 2) % 2, n = 8 * (r / 4) + 2 * t + r % 2;
      uint32_t sum = 0;
      for (int word = 0; word < 8; ++word) sum += std::popcount(a_row[h][word] & b_word(op.desc_b, n, word));
      op.d[r] = (op.accumulate ? op.d[r] : 0u) + sum;
    }
  }

  // One retired m64n128k32 .u8.u8 op (A and B K-major through descriptors: 32 bytes of K per
  // row, read like the b1 op's 256 bits) for the accumulators of `thread`; D register
  // 4j + 2h + e is row 16w + g + 8h, column 8j + 2t + e (ISA "wgmma .m64nNk32 register
  // fragment layout for accumulator D").
  void execute_u8(const GmmaOp& op, int thread) const {
    const int w = thread / 32, lane = thread % 32, g = lane / 4, t = lane % 4;
    for (int r = 0; r < 64; ++r) {
      const int h = (r / 2) % 2, n = 8 * (r / 4) + 2 * t + r % 2, m = 16 * w + g + 8 * h;
      uint32_t sum = 0;  // s32 accumulation wraps (no .satfinite)
      for (int word = 0; word < 8; ++word) {
        const uint32_t a = b_word(op.desc_a, m, word), b = b_word(op.desc_b, n, word);
        for (int byte = 0; byte < 4; ++byte) sum += (a >> (8 * byte) & 0xFFu) * (b >> (8 * byte) & 0xFFu);
      }
      op.d[r] = (op.accumulate ? op.d[r] : 0u) + sum;
    }
  }

  SharedMemory smem_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::map<uint32_t, Mbarrier> barriers_;
  struct NamedBarrier {
    std::unique_ptr<std::barrier<>> barrier;
    uint32_t threads = 0;
  };
  std::map<uint32_t, NamedBarrier> named_;
  std::mt19937_64 rng_;
  bool lazy_;
};

// What each emulated thread needs besides emu::ctx (set by the launcher).
struct ThreadState {
  Machine* machine = nullptr;
  Warpgroup* warpgroup = nullptr;  // its warpgroup's wgmma queue
};
inline thread_local ThreadState state;

}  // namespace emu90
