// bnff: one channel's batch-norm parameters from its statistics, in double.
#pragma once

#include <cmath>

#include "bnff/stats/moments.hpp"

namespace bnff {

// What normalizing a channel takes, PyTorch semantics:
//   invstd = 1 / sqrt(var + eps),  scale = gamma * invstd,  shift = beta - mean * scale,
// so that  y = (x - mean) * scale + beta = x * scale + shift.
struct bn_channel_params {
  double mean = 0, invstd = 0, scale = 0, shift = 0;
};

// From a channel's batch moments: normalizes with the biased variance M2 / count.
// count = 1 gives variance 0 (each output is beta).
inline bn_channel_params bn_params_from_moments(const moments& m, double gamma, double beta, double eps) noexcept {
  const double invstd = 1.0 / std::sqrt(m.variance() + eps);
  const double scale = gamma * invstd;
  return {m.mean, invstd, scale, beta - m.mean * scale};
}

// From running statistics (inference).
inline bn_channel_params bn_params_from_running(double running_mean, double running_var, double gamma, double beta,
                                                double eps) noexcept {
  const double invstd = 1.0 / std::sqrt(running_var + eps);
  const double scale = gamma * invstd;
  return {running_mean, invstd, scale, beta - running_mean * scale};
}

}  // namespace bnff
