// bnff: the tail policy of the backward sweeps and epilogues (vector body, scalar remainder).
#pragma once

#include <xsimd/xsimd.hpp>

#include "bnff/config.hpp"

namespace bnff::fusion::detail {

// vec(i) for every full batch [i, i + width) of [0, len), then one(i) for each of the
// len % width elements left, in that order. The split depends on len alone, so a
// reduction built on it gives the same bits wherever the data sits.
template <class T, class Arch, class Vec, class One>
BNFF_ALWAYS_INLINE void for_each_batch(index_t len, Vec&& vec, One&& one) {
  constexpr index_t width = index_t(xsimd::batch<T, Arch>::size);
  index_t i = 0;
  for (; i + width <= len; i += width) vec(i);
  for (; i < len; ++i) one(i);
}

}  // namespace bnff::fusion::detail
