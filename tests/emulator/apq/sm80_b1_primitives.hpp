// Emulated stand-ins for cutlass_ext/apq/sm80_b1_primitives.hpp (same names, same
// contracts). The MMA reads its operand and result layouts from CuTe's MMA_Traits of
// SM80_16x8x256_S32U1U1S32_TN_ANDPOPC, and ldmatrix follows the PTX ISA definition, so the
// kernel's own fragment addressing is checked against independent sources. cp.async lands
// late, as the PTX ISA allows: its destination reads as garbage from the issue until the
// cp.async.wait_group that completes its group, so a missing wait or a stage refilled too
// early gives wrong sums here; and a copy that would read outside the operands is reported.
#pragma once

#include <cute/atom/mma_traits_sm80.hpp>

#include <bit>
#include <cstdint>
#include <cstring>
#include <deque>
#include <stdexcept>
#include <vector>

namespace apq::ext {

// The warp-collective instructions post to a mailbox and read the other lanes' posts after
// one warp barrier. Two mailboxes alternate: a lane reuses one only after the barrier of the
// next collective, which no lane passes before it has read this one.
inline thread_local int collective_count = 0;
inline int next_mailbox() { return collective_count++ & 1; }

inline void ldmatrix_x4(const uint8_t* tile, uint32_t offset, uint32_t (&r)[4]) {
  emu::WarpExchange& w = *emu::ctx.warp;
  const int lane = emu::ctx.thread.x % 32, box = next_mailbox();
  w.address[box][lane] = tile + offset;
  emu::warp_sync();
  for (int q = 0; q < 4; ++q) {  // matrix q: rows from lanes 8q..8q+7
    const uint8_t* row = w.address[box][8 * q + lane / 4];
    std::memcpy(&r[q], row + 4 * (lane % 4), 4);
  }
}

// Where each A / B row's 256 bits live, read off CuTe's TV layouts once (value v of a lane is
// bit v % 32 of its register v / 32): word w (bits 32w ... 32w + 31) of row m is one register
// of one lane, LSB first, which the constructor checks bit by bit; and which (m, n) each C
// value of a lane is.
struct FragmentMaps {
  struct Word {
    uint8_t lane, reg;
  };
  Word a[16][8], b[8][8];
  uint8_t c_row[32][4], c_col[32][4];
  FragmentMaps() {
    using Traits = cute::MMA_Traits<cute::SM80_16x8x256_S32U1U1S32_TN_ANDPOPC>;
    bool seen_a[16][8] = {}, seen_b[8][8] = {};
    auto place = [](Word& word, bool& seen, int lane, int v, int k) {
      const Word at{static_cast<uint8_t>(lane), static_cast<uint8_t>(v / 32)};
      if (v % 32 != k % 32 || (seen && (word.lane != at.lane || word.reg != at.reg))) {
        throw std::logic_error("emulator: an m16n8k256 .b1 register does not hold 32 consecutive bits of a row");
      }
      word = at, seen = true;
    };
    for (int l = 0; l < 32; ++l) {
      for (int v = 0; v < 128; ++v) {
        const int idx = Traits::ALayout{}(l, v);  // m + 16 k
        place(a[idx % 16][idx / 16 / 32], seen_a[idx % 16][idx / 16 / 32], l, v, idx / 16);
      }
      for (int v = 0; v < 64; ++v) {
        const int idx = Traits::BLayout{}(l, v);  // n + 8 k
        place(b[idx % 8][idx / 8 / 32], seen_b[idx % 8][idx / 8 / 32], l, v, idx / 8);
      }
      for (int v = 0; v < 4; ++v) {
        const int idx = Traits::CLayout{}(l, v);  // m + 16 n
        c_row[l][v] = static_cast<uint8_t>(idx % 16), c_col[l][v] = static_cast<uint8_t>(idx / 16);
      }
    }
  }
  static const FragmentMaps& get() {
    static const FragmentMaps maps;  // thread-safe initialisation
    return maps;
  }
};

// An mma.sync's operands: every lane posts its A and B registers; returns the mailbox holding
// the whole warp's, readable after the warp barrier this passes.
inline int post_mma_operands(const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  emu::WarpExchange& w = *emu::ctx.warp;
  const int lane = emu::ctx.thread.x % 32, box = next_mailbox();
  for (int i = 0; i < 4; ++i) w.a[box][lane][i] = a[i];
  w.b[box][lane][0] = b0;
  w.b[box][lane][1] = b1;
  emu::warp_sync();
  return box;
}

inline void mma_and_popc(int32_t (&acc)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const FragmentMaps& maps = FragmentMaps::get();
  const emu::WarpExchange& w = *emu::ctx.warp;
  const int lane = emu::ctx.thread.x % 32, box = post_mma_operands(a, b0, b1);
  for (int v = 0; v < 4; ++v) {
    const int m = maps.c_row[lane][v], n = maps.c_col[lane][v];
    int32_t s = 0;
    for (int word = 0; word < 8; ++word) {
      const FragmentMaps::Word wa = maps.a[m][word], wb = maps.b[n][word];
      s += std::popcount(w.a[box][wa.lane][wa.reg] & w.b[box][wb.lane][wb.reg]);
    }
    acc[v] += s;
  }
}

inline uint32_t opaque(uint32_t value) { return value; }

inline uint64_t l2_policy(bool evict_first) { return evict_first ? 1 : 0; }  // a hint only

// This thread's copies in flight: the group being built and the committed ones, oldest first.
struct PendingCopy {
  uint8_t* smem;
  const uint32_t* gmem;
  int bytes;
};
struct CopyQueue {
  std::vector<PendingCopy> open;
  std::deque<std::vector<PendingCopy>> committed;
};
inline thread_local CopyQueue copy_queue;

// Shared addresses are offsets into the block's shared memory (emu::ctx.shared).
inline uint32_t shared_address(const void* smem) {
  return static_cast<uint32_t>(static_cast<const uint8_t*>(smem) - emu::ctx.shared);
}

inline void cp_async_16(uint32_t smem, const uint32_t* gmem, int src_bytes, uint64_t) {
  uint8_t* dst = emu::ctx.shared + smem;
  std::memset(dst, 0xA5, 16);  // what a premature read would see
  if (src_bytes > 0 && emu::ctx.reads != nullptr) {
    emu::ctx.reads->check(gmem, static_cast<size_t>(src_bytes));
  }
  copy_queue.open.push_back({dst, gmem, src_bytes});
}

inline void cp_async_16(uint32_t smem, const uint32_t* gmem, int src_bytes) { cp_async_16(smem, gmem, src_bytes, 0); }

inline void cp_async_fence() {
  copy_queue.committed.push_back(std::move(copy_queue.open));
  copy_queue.open.clear();
}

// cp.async.wait_group N: all but the newest N committed groups have landed.
template <int N>
inline void cp_async_wait() {
  while (copy_queue.committed.size() > static_cast<size_t>(N)) {
    for (const PendingCopy& c : copy_queue.committed.front()) {
      std::memset(c.smem, 0, 16);
      std::memcpy(c.smem, c.gmem, static_cast<size_t>(c.bytes));
    }
    copy_queue.committed.pop_front();
  }
}

}  // namespace apq::ext
