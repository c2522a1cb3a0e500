// Register recovery of stacked bit planes: which plane of which real row each accumulator
// row of a thread holds ("slots"), and the shift-add over them.
//
// In the m16n8k256 C fragment a thread holds rows g and g + 8 of each of its warp's m16 tiles
// and columns 2t and 2t + 1 of each n8 tile (g = lane / 4, t = lane % 4). With MmaA m16 tiles
// and MmaB n8 tiles a thread thus owns 2 * MmaA stacked A rows, "A slots" (slot 2i + h: tile
// i, row g + 8h), and 2 * MmaB stacked B rows, "B slots" (slot 2j + c: tile j, column 2t + c).
// Slot s holds plane s % bits of the thread's real row s / bits; with Slots % bits != 0 the
// last slots are idle (their shared-memory rows are zero). A thread therefore owns every plane
// pair of each of its outputs, and U = sum_p sum_q C[p][q] << (p + q) needs no other thread:
// Horner along each axis, C[s] += 2 * C[s + 1] wherever slot s + 1 is the next plane of slot
// s's row, leaves U in the slot pair of planes (0, 0). Bits stay runtime values: the slot
// roles are bit masks computed once per kernel.
#pragma once

#include <apq/sm80_b1_primitives.hpp>

#include <cstdint>

namespace apq::ext {

struct SlotMap {
  int bits;        // planes per real row
  int rows;        // real rows per lane: slots / bits
  uint32_t next;   // bit s: slot s + 1 holds the next plane of slot s's real row
  uint32_t first;  // bit s: slot s holds plane 0 of a real row (an output's home)

  template <int Slots>
  __device__ __forceinline__ static SlotMap of(int bits) {
    SlotMap m{bits, Slots / bits, 0u, 0u};
    const int used = m.rows * bits;
    int plane = 0;  // of slot s, counted along (no division by the runtime bit count)
#pragma unroll
    for (int s = 0; s < Slots; ++s) {
      if (s < used && plane == 0) m.first |= 1u << s;
      if (s < used && plane != bits - 1) m.next |= 1u << s;
      plane = plane + 1 == bits ? 0 : plane + 1;
    }
    return m;
  }
  __device__ __forceinline__ bool is_used(int s) const { return s < rows * bits; }
  __device__ __forceinline__ int plane(int s) const { return s % bits; }
  __device__ __forceinline__ int row(int s) const { return s / bits; }
};

// In-place shift-add over a thread's accumulators, acc(sa, sb) -> int32_t& by slots. Afterwards
// acc(sa, sb) with bit sa of a.first and bit sb of b.first holds U of that output; the int32 sums
// must not overflow (the K-window guarantees it).
// The shift factors derive from the masks where the recovery runs (ext::opaque): hoisted out
// of the main loop they would hold SlotsA + SlotsB registers across it.
template <int SlotsA, int SlotsB, class Acc>
__device__ __forceinline__ void recover_in_registers(Acc&& acc, const SlotMap& a, const SlotMap& b) {
  const uint32_t next_a = opaque(a.next), next_b = opaque(b.next);
  if (b.bits > 1) {
#pragma unroll
    for (int sb = SlotsB - 2; sb >= 0; --sb) {
      const int32_t shift = static_cast<int32_t>((next_b >> sb) & 1u) << 1;  // 2 or 0
#pragma unroll
      for (int sa = 0; sa < SlotsA; ++sa) acc(sa, sb) += acc(sa, sb + 1) * shift;
    }
  }
  if (a.bits > 1) {
#pragma unroll
    for (int sa = SlotsA - 2; sa >= 0; --sa) {
      const int32_t shift = static_cast<int32_t>((next_a >> sa) & 1u) << 1;
#pragma unroll
      for (int sb = 0; sb < SlotsB; ++sb) acc(sa, sb) += acc(sa + 1, sb) * shift;
    }
  }
}

}  // namespace apq::ext
