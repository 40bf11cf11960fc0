// bnff: several running sums over one contiguous range, accumulated in T and
// flushed into double, in a fixed order.
#pragma once

#include <xsimd/xsimd.hpp>

#include <array>

#include "bnff/config.hpp"
#include "bnff/simd/for_each_lanes.hpp"
#include "bnff/simd/reduce_add.hpp"

namespace bnff::simd {

// Batches accumulated in T before flushing into double: with 4 accumulators a
// float lane adds at most 16 terms, so the error stays near 1e-6 of the sum of
// magnitudes, however long the range.
constexpr index_t sum_flush_batches = 64;

}  // namespace bnff::simd

namespace bnff::detail {

template <class B, std::size_t K>
BNFF_ALWAYS_INLINE void simd_flush_sums(const std::array<B, K> (&acc)[4], std::array<double, K>& out) noexcept {
  for (std::size_t k = 0; k < K; ++k)
    out[k] += simd::reduce_add_double((acc[0][k] + acc[1][k]) + (acc[2][k] + acc[3][k]));
}

}  // namespace bnff::detail

namespace bnff::simd {

// Adds K sums over [0, len) into out. body(lanes, acc) adds one run's terms
// into acc (std::array of K batches), e.g. acc[0] += dy; acc[1] = fma(dy, xc, acc[1]).
// lanes address the whole range; padded lanes of the tail must contribute 0
// (load them with a neutral fill). Four accumulators per sum hide the add
// latency. The order depends only on len, so the bits do too.
template <std::size_t K, class T, class Arch = xsimd::default_arch, class Body>
BNFF_ALWAYS_INLINE void sum_lanes(index_t len, std::array<double, K>& out, Body&& body) {
  using batch = xsimd::batch<T, Arch>;
  constexpr index_t chunk = sum_flush_batches * index_t(batch::size);
  for (index_t c0 = 0; c0 < len; c0 += chunk) {
    std::array<batch, K> acc[4];
    for (auto& a : acc) a.fill(batch(T(0)));
    for_each_lanes<T, Arch, 4>(len - c0 < chunk ? len - c0 : chunk, [&](auto lanes, auto s) {
      lanes.offset += c0;
      body(lanes, acc[s]);
    });
    bnff::detail::simd_flush_sums(acc, out);
  }
}

}  // namespace bnff::simd
