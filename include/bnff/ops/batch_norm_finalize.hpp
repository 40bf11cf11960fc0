// bnff: per-channel batch statistics -> the parameters apply and backward
// use, and PyTorch's running-statistics update.
#pragma once

#include "bnff/config.hpp"
#include "bnff/ops/bn_checks.hpp"
#include "bnff/stats/bn_channel_params.hpp"
#include "bnff/stats/moments.hpp"
#include "bnff/stats/running_stats.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff {

namespace detail {

template <class T>
void check_finalize(const char* where, vector_view<const moments> stats, vector_view<const T> gamma,
                    vector_view<const T> beta, double eps, vector_view<T> mean, vector_view<T> invstd,
                    vector_view<T> scale, vector_view<T> shift) {
  const index_t c = stats.size();
  check_arg(c > 0, where, "stats", "one moments per channel (at least one)", "0 elements");
  check_channels(where, "gamma", gamma, c);
  check_channels(where, "beta", beta, c);
  check_eps(where, eps);
  check_channels(where, "mean", mean, c, true);
  check_channels(where, "invstd", invstd, c, true);
  check_channels(where, "scale", scale, c, true);
  check_channels(where, "shift", shift, c, true);
  for (index_t i = 0; i < c; ++i)
    if (!(stats[i].count >= 1))
      fail_argument(where, "stats", "count >= 1 in every channel", concat("count ", stats[i].count, " in channel ", i));
  const char* out_names[4] = {"mean", "invstd", "scale", "shift"};
  const vector_view<T> outs[4] = {mean, invstd, scale, shift};
  for (int i = 0; i < 4; ++i) {
    check_disjoint(where, out_names[i], outs[i], "stats", stats);
    check_disjoint(where, out_names[i], outs[i], "gamma", gamma);
    check_disjoint(where, out_names[i], outs[i], "beta", beta);
    for (int j = 0; j < i; ++j) check_disjoint(where, out_names[i], outs[i], out_names[j], outs[j]);
  }
}

template <class T>
void store_params(index_t c, const bn_channel_params& p, vector_view<T> mean, vector_view<T> invstd,
                  vector_view<T> scale, vector_view<T> shift) noexcept {
  if (!mean.empty()) mean[c] = T(p.mean);
  if (!invstd.empty()) invstd[c] = T(p.invstd);
  if (!scale.empty()) scale[c] = T(p.scale);
  if (!shift.empty()) shift[c] = T(p.shift);
}

}  // namespace detail

// For every channel c, from stats[c] (count >= 1) and the affine parameters:
//   mean[c], invstd[c] = 1 / sqrt(M2 / count + eps), scale[c] = gamma[c] * invstd[c],
//   shift[c] = beta[c] - mean[c] * scale[c].
// Any of the four outputs may be empty (not computed). Computed in double,
// rounded once to T. A channel with count 1 has variance 0 (its outputs are beta).
// Outputs must not overlap each other or the inputs.
template <class T>
void batch_norm_finalize(vector_view<const moments> stats, vector_view<const detail::nondeduced_t<T>> gamma,
                         vector_view<const detail::nondeduced_t<T>> beta, double eps, vector_view<T> mean,
                         vector_view<T> invstd, vector_view<T> scale, vector_view<T> shift) {
  detail::check_finalize("batch_norm_finalize", stats, gamma, beta, eps, mean, invstd, scale, shift);
  for (index_t c = 0; c < stats.size(); ++c)
    detail::store_params(c, bn_params_from_moments(stats[c], double(gamma[c]), double(beta[c]), eps), mean, invstd,
                         scale, shift);
}

// As above, and updates the running statistics the PyTorch way:
//   running_mean = (1 - momentum) * running_mean + momentum * mean
//   running_var  = (1 - momentum) * running_var  + momentum * M2 / (count - 1)
// The running variance is the unbiased one, so every channel needs count >= 2
// (a bnff::error otherwise, before anything is written); momentum in [0, 1].
template <class T>
void batch_norm_finalize(vector_view<const moments> stats, vector_view<const detail::nondeduced_t<T>> gamma,
                         vector_view<const detail::nondeduced_t<T>> beta, double eps, double momentum,
                         vector_view<T> running_mean, vector_view<T> running_var, vector_view<T> mean,
                         vector_view<T> invstd, vector_view<T> scale, vector_view<T> shift) {
  constexpr const char* where = "batch_norm_finalize";
  detail::check_finalize(where, stats, gamma, beta, eps, mean, invstd, scale, shift);
  detail::check_momentum(where, momentum);
  const index_t channels = stats.size();
  detail::check_channels(where, "running_mean", running_mean, channels);
  detail::check_channels(where, "running_var", running_var, channels);
  for (index_t c = 0; c < channels; ++c)
    if (!(stats[c].count >= 2))
      fail_argument(where, "stats", "count >= 2 in every channel (the unbiased running variance divides by count - 1)",
                    detail::concat("count ", stats[c].count, " in channel ", c));
  const char* names[6] = {"running_mean", "running_var", "mean", "invstd", "scale", "shift"};
  const vector_view<T> outs[6] = {running_mean, running_var, mean, invstd, scale, shift};
  for (int i = 0; i < 2; ++i) {
    detail::check_disjoint(where, names[i], outs[i], "stats", stats);
    detail::check_disjoint(where, names[i], outs[i], "gamma", gamma);
    detail::check_disjoint(where, names[i], outs[i], "beta", beta);
    for (int j = 0; j < 6; ++j)
      if (j != i) detail::check_disjoint(where, names[i], outs[i], names[j], outs[j]);
  }

  for (index_t c = 0; c < channels; ++c) {
    detail::store_params(c, bn_params_from_moments(stats[c], double(gamma[c]), double(beta[c]), eps), mean, invstd,
                         scale, shift);
    double rm = double(running_mean[c]), rv = double(running_var[c]);
    update_running_stats(stats[c], momentum, rm, rv);
    running_mean[c] = T(rm);
    running_var[c] = T(rv);
  }
}

}  // namespace bnff
