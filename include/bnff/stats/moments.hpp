// bnff: (count, mean, M2) moments and Chan's merge, the unit of exchange for
// per-channel statistics between blocks, threads, images and processes.
#pragma once

#include <cmath>

#include "bnff/config.hpp"

namespace bnff {

// Moments of a set of values: how many, their mean, and M2 = sum((x - mean)^2).
// Kept in double so merging many partials loses nothing a float tensor carries.
struct moments {
  double count = 0.0;
  double mean = 0.0;
  double m2 = 0.0;

  // Biased (population) variance, what BN normalizes with.
  double variance() const noexcept { return count > 0 ? m2 / count : 0.0; }
  // Unbiased (sample) variance, what PyTorch's running_var tracks.
  double unbiased_variance() const noexcept { return count > 1 ? m2 / (count - 1) : 0.0; }
};

namespace detail {

// x, rounded to double here. A product passed through this is never fused
// with a following add into an FMA, whatever -ffp-contract the including code
// is compiled with, so statistics get the same bits wherever they are computed
// (a convolution epilogue and the standalone kernel inline this differently).
inline double rounded(double x) noexcept {
  volatile double v = x;
  return v;
}

}  // namespace detail

// Chan, Golub and LeVeque's pairwise update:
//   n = na + nb, d = mean_b - mean_a,
//   mean = mean_a + d * nb / n,  M2 = M2_a + M2_b + d^2 * na * nb / n.
// Exact in exact arithmetic for any split, so any fixed merge order is valid;
// bnff always uses the same order, which makes results reproducible.
inline moments merge(const moments& a, const moments& b) noexcept {
  if (b.count == 0) return a;
  if (a.count == 0) return b;
  const double n = a.count + b.count;
  const double d = b.mean - a.mean;
  const double fb = b.count / n;
  return {n, a.mean + detail::rounded(d * fb), a.m2 + b.m2 + detail::rounded(d * d * a.count * fb)};
}

}  // namespace bnff
