// bnff: moments of one contiguous block, computed while it is in cache.
#pragma once

#include "bnff/config.hpp"
#include "bnff/stats/moments.hpp"

namespace bnff {

// (count, mean, M2) of x[0, len). Two passes over the block, both from cache:
// the mean first, then the squared deviations from it, so no digits cancel
// however large |mean| / std is. Deterministic: same input, same bits.
template <class T>
moments block_moments(const T* x, index_t len) noexcept {
  if (len <= 0) return {};
  double sum = 0;
  for (index_t i = 0; i < len; ++i) sum += double(x[i]);
  const double mean = sum / double(len);
  double m2 = 0;
  for (index_t i = 0; i < len; ++i) {
    const double d = double(x[i]) - mean;
    m2 += d * d;
  }
  return {double(len), mean, m2};
}

}  // namespace bnff
