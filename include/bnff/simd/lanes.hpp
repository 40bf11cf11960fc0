// bnff: a run of SIMD lanes inside a contiguous range, full or partial.
//
// Kernels are written once against these two types: the body loads and
// stores through the run it is given and never asks which kind it has.
// partial_lanes is the tail policy of every bnff kernel (masked: the missing
// lanes are padded on load and left alone on store), so no kernel carries a
// scalar remainder loop of its own.
#pragma once

#include <xsimd/xsimd.hpp>

#include "bnff/config.hpp"
#include "bnff/simd/load_partial.hpp"
#include "bnff/simd/store_partial.hpp"
#include "bnff/simd/store_stream.hpp"

namespace bnff::simd {

// The W elements [offset, offset + W).
template <class T, class Arch>
struct full_lanes {
  using batch = xsimd::batch<T, Arch>;
  index_t offset;

  // `fill` only matters for a partial run; kept here so bodies read the same for both.
  BNFF_ALWAYS_INLINE batch load(const T* p, T /*fill*/ = T(0)) const noexcept {
    return batch::load_unaligned(p + offset);
  }
  BNFF_ALWAYS_INLINE void store(T* p, const batch& v) const noexcept { v.store_unaligned(p + offset); }
};

// The last `count` < W elements [offset, offset + count): loads pad with `fill`
// (choose it neutral for the reduction at hand), stores write only the valid lanes.
template <class T, class Arch>
struct partial_lanes {
  using batch = xsimd::batch<T, Arch>;
  index_t offset, count;

  BNFF_ALWAYS_INLINE batch load(const T* p, T fill = T(0)) const noexcept {
    return load_partial<Arch>(p + offset, count, fill);
  }
  BNFF_ALWAYS_INLINE void store(T* p, const batch& v) const noexcept { store_partial(p + offset, v, count); }
};

// The W elements [offset, offset + W) of a range whose output is aligned here:
// loads as full_lanes, stores streamed past the caches (store_stream).
template <class T, class Arch>
struct streaming_lanes {
  using batch = xsimd::batch<T, Arch>;
  index_t offset;

  BNFF_ALWAYS_INLINE batch load(const T* p, T /*fill*/ = T(0)) const noexcept {
    return batch::load_unaligned(p + offset);
  }
  BNFF_ALWAYS_INLINE void store(T* p, const batch& v) const noexcept { store_stream(p + offset, v); }
};

}  // namespace bnff::simd
