// SGD with momentum and weight decay (PyTorch's torch.optim.SGD semantics) and
// the learning-rate schedule.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <bnff/error.hpp>
#include <bnff/parallel/parallel.hpp>

#include "parameters.hpp"

namespace trainer {

struct sgd_settings {
  double lr = 0.1, momentum = 0.9, weight_decay = 1e-4;
};

// One SGD step, element-wise (PyTorch, dampening 0, no Nesterov):
//   g = grad + weight_decay * value        (weight decay only where p.decay)
//   momentum = mu * momentum + g           (zero-initialized buffer: the first step stores g, as PyTorch does)
//   value -= lr * momentum
inline void sgd_step(parameter& p, double lr, const sgd_settings& s) {
  bnff::check_equal("sgd_step", "grad.size", p.value.size(), p.grad.size());
  bnff::check_equal("sgd_step", "momentum.size", p.value.size(), p.momentum.size());
  const float lr_f = float(lr), mu = float(s.momentum), wd = p.decay ? float(s.weight_decay) : 0.0f;
  const bnff::index_t size = p.size(), chunk = 4096;
  float* v = p.value.data();
  const float* g = p.grad.data();
  float* m = p.momentum.data();
  bnff::parallel_for((size + chunk - 1) / chunk, [&](bnff::index_t t) {
    const bnff::index_t end = std::min(size, (t + 1) * chunk);
    for (bnff::index_t i = t * chunk; i < end; ++i) {
      const float d = g[i] + wd * v[i];
      m[i] = mu * m[i] + d;
      v[i] -= lr_f * m[i];
    }
  });
}

// Cosine decay per step, without restarts (Loshchilov and Hutter):
//   lr(t) = base * (1 + cos(pi * t / total)) / 2,  t = 0 .. total - 1.
// The schedule depends only on the step and the planned total (--epochs), so
// stopping early with --steps or resuming does not change it.
struct cosine_schedule {
  double base = 0.1;
  std::uint64_t total = 1;
  double at(std::uint64_t step) const {
    const double t = double(step < total ? step : total) / double(total);
    return base * 0.5 * (1.0 + std::cos(3.141592653589793 * t));
  }
};

}  // namespace trainer
