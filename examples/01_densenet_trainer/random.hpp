// Reproducible random numbers for the trainer: the same seed gives the same
// weights, data and batch order on every platform and standard library.
//
// std::mt19937_64 is fully specified by the standard, but the distributions
// (normal, uniform, std::shuffle) are not, so the few we need are written here.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <bnff/config.hpp>

namespace trainer {

// splitmix64: mixes a seed and a stream tag into an independent generator seed,
// so every parameter tensor, image and epoch draws from its own stream.
inline std::uint64_t mix_seed(std::uint64_t seed, std::uint64_t tag) noexcept {
  std::uint64_t z = seed + 0x9e3779b97f4a7c15ull * (tag + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform in [0, 1) from the top 53 bits.
inline double uniform01(std::mt19937_64& gen) { return double(gen() >> 11) * 0x1.0p-53; }

inline double uniform(std::mt19937_64& gen, double lo, double hi) { return lo + (hi - lo) * uniform01(gen); }

// Uniform integer in [0, n) without modulo bias (rejection of the short last bucket).
inline std::uint64_t uniform_index(std::mt19937_64& gen, std::uint64_t n) {
  const std::uint64_t limit = ~std::uint64_t(0) - (~std::uint64_t(0) % n);
  for (;;) {
    const std::uint64_t r = gen();
    if (r < limit) return r % n;
  }
}

// Standard normal by Box-Muller (one value per call: simple and stateless).
inline double standard_normal(std::mt19937_64& gen) {
  const double u1 = 1.0 - uniform01(gen);  // (0, 1]: log stays finite
  const double u2 = uniform01(gen);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// A random permutation of [0, n) by Fisher-Yates.
inline std::vector<bnff::index_t> permutation(bnff::index_t n, std::mt19937_64& gen) {
  std::vector<bnff::index_t> p(static_cast<std::size_t>(n));
  for (bnff::index_t i = 0; i < n; ++i) p[std::size_t(i)] = i;
  for (bnff::index_t i = n - 1; i > 0; --i) {
    const auto j = bnff::index_t(uniform_index(gen, std::uint64_t(i) + 1));
    std::swap(p[std::size_t(i)], p[std::size_t(j)]);
  }
  return p;
}

}  // namespace trainer
