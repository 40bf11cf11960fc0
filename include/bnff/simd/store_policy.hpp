// bnff: how an element-wise sweep writes its output (types, not flags).
#pragma once

#include <xsimd/xsimd.hpp>

#include <cstdint>

#include "bnff/config.hpp"
#include "bnff/simd/for_each_lanes.hpp"
#include "bnff/simd/lanes.hpp"
#include "bnff/simd/store_stream.hpp"

namespace bnff::simd {

// Ordinary stores: the output stays in cache for whoever reads it next.
struct temporal_stores {
  // body(lanes, slot) over [0, len) exactly as for_each_lanes.
  template <class T, class Arch, class Body>
  static BNFF_ALWAYS_INLINE void for_each(index_t len, const T* /*out*/, Body&& body) {
    for_each_lanes<T, Arch>(len, body);
  }
  static void finish() noexcept {}
};

// Streaming stores for outputs larger than the caches: no read for ownership,
// so a sweep that reads one tensor and writes another moves two tensors' worth
// of bytes instead of three. The range is cut at the output's alignment: a
// partial head, aligned full runs written with store_stream, a partial tail.
// The element order of the sweep does not change, only how the bytes travel.
struct streaming_stores {
  template <class T, class Arch, class Body>
  static BNFF_ALWAYS_INLINE void for_each(index_t len, const T* out, Body&& body) {
    constexpr index_t w = index_t(xsimd::batch<T, Arch>::size);
    constexpr auto align = std::uintptr_t(Arch::alignment());
    const auto misalign = std::uintptr_t(out) % align;
    index_t head = misalign == 0 ? 0 : index_t((align - misalign) / sizeof(T));
    if (head > len) head = len;
    // An address that is not a multiple of sizeof(T) never aligns: plain stores then.
    if (std::uintptr_t(out) % sizeof(T) != 0) head = len;
    if (head > 0) {
      for_each_lanes<T, Arch>(head, [&](auto lanes, auto s) { body(lanes, s); });
      if (head == len) return;
    }
    index_t i = head;
    for (; i + w <= len; i += w) body(streaming_lanes<T, Arch>{i}, slot<0>{});
    if (i < len) body(partial_lanes<T, Arch>{i, len - i}, slot<0>{});
  }
  // Make the streamed data visible before the task reports completion.
  static void finish() noexcept { stream_fence(); }
};

}  // namespace bnff::simd
