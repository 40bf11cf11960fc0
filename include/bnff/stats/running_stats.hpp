// bnff: PyTorch's running-statistics update for one channel.
#pragma once

#include "bnff/stats/moments.hpp"

namespace bnff {

// running_mean = (1 - momentum) * running_mean + momentum * mean
// running_var  = (1 - momentum) * running_var  + momentum * M2 / (count - 1)
// The running variance tracks the unbiased variance, so count must be >= 2
// (callers check; with count < 2 the result is not finite).
inline void update_running_stats(const moments& m, double momentum, double& running_mean,
                                 double& running_var) noexcept {
  running_mean = (1 - momentum) * running_mean + momentum * m.mean;
  running_var = (1 - momentum) * running_var + momentum * (m.m2 / (m.count - 1));
}

}  // namespace bnff
