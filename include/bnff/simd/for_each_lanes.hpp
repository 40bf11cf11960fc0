// bnff: the one loop every SIMD kernel of bnff runs over a contiguous range.
#pragma once

#include <xsimd/xsimd.hpp>

#include <type_traits>
#include <utility>

#include "bnff/config.hpp"
#include "bnff/simd/lanes.hpp"

namespace bnff::simd {

// Compile-time accumulator slot handed to a loop body.
template <int I>
using slot = std::integral_constant<int, I>;

}  // namespace bnff::simd

// In bnff::detail, not a nested simd::detail that would shadow it for other code in bnff::simd.
namespace bnff::detail {

template <class T, class Arch, class Body, int... U>
BNFF_ALWAYS_INLINE void simd_unrolled_step(index_t i, Body& body, std::integer_sequence<int, U...>) {
  constexpr index_t w = index_t(xsimd::batch<T, Arch>::size);
  (body(simd::full_lanes<T, Arch>{i + U * w}, simd::slot<U>{}), ...);
}

}  // namespace bnff::detail

namespace bnff::simd {

// Calls body(lanes, slot) over the elements [0, len), in this fixed order:
//   - Unroll full batches at a time, slot<0> .. slot<Unroll - 1>, so a
//     reduction can keep Unroll independent accumulators (hiding add/FMA latency);
//   - the remaining full batches, each with slot<0>;
//   - the tail (len % W elements) once, as partial_lanes with slot<0>.
// The order and the slots depend only on len, never on the address, so a
// reduction gives the same bits wherever the data sits.
template <class T, class Arch = xsimd::default_arch, int Unroll = 1, class Body>
BNFF_ALWAYS_INLINE void for_each_lanes(index_t len, Body&& body) {
  static_assert(Unroll >= 1, "Unroll must be positive");
  constexpr index_t w = index_t(xsimd::batch<T, Arch>::size);
  index_t i = 0;
  if constexpr (Unroll > 1) {
    for (; i + Unroll * w <= len; i += Unroll * w)
      bnff::detail::simd_unrolled_step<T, Arch>(i, body, std::make_integer_sequence<int, Unroll>{});
  }
  for (; i + w <= len; i += w) body(full_lanes<T, Arch>{i}, slot<0>{});
  if (i < len) body(partial_lanes<T, Arch>{i, len - i}, slot<0>{});
}

}  // namespace bnff::simd
