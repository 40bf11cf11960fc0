// bnff: folding inference batch norm into the preceding convolution.
#pragma once

#include "bnff/config.hpp"
#include "bnff/ops/bn_checks.hpp"
#include "bnff/stats/bn_channel_params.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff {

// For y = conv(x, w) + b followed by z = (y - running_mean) * scale + beta,
// scale = gamma / sqrt(running_var + eps) (per output channel k):
//   z = conv(x, w * scale[k]) + (b[k] - running_mean[k]) * scale[k] + beta[k],
// so folded_weights[k, c, r, s] = weights[k, c, r, s] * scale[k] and
//    folded_bias[k] = (bias[k] - running_mean[k]) * scale[k] + beta[k]
// (bias empty: a convolution without bias, b = 0). Weights are K x C x R x S
// views; folded_weights may be exactly weights and folded_bias exactly bias
// (in place), nothing partially overlapping. Computed in double, rounded once.
template <class T>
void batch_norm_fold_into_conv(tensor_view<const detail::nondeduced_t<T>> weights,
                               vector_view<const detail::nondeduced_t<T>> bias,
                               vector_view<const detail::nondeduced_t<T>> gamma,
                               vector_view<const detail::nondeduced_t<T>> beta,
                               vector_view<const detail::nondeduced_t<T>> running_mean,
                               vector_view<const detail::nondeduced_t<T>> running_var, double eps,
                               tensor_view<T> folded_weights, vector_view<T> folded_bias) {
  constexpr const char* where = "batch_norm_fold_into_conv";
  check_arg(!weights.empty(), where, "weights", "a non-empty K x C x R x S view", "an empty view");
  const index_t k = weights.n();
  check_arg(!folded_weights.empty(), where, "folded_weights", "a non-empty view", "an empty view");
  check_equal(where, "folded_weights", weights.shape(), folded_weights.shape());
  detail::check_channels(where, "bias", bias, k, true);
  detail::check_channels(where, "gamma", gamma, k);
  detail::check_channels(where, "beta", beta, k);
  detail::check_channels(where, "running_mean", running_mean, k);
  detail::check_channels(where, "running_var", running_var, k);
  detail::check_eps(where, eps);
  detail::check_channels(where, "folded_bias", folded_bias, k);
  detail::check_in_place_or_disjoint(where, "folded_weights", folded_weights, "weights", weights);
  const bool bias_in_place = static_cast<const void*>(folded_bias.data()) == static_cast<const void*>(bias.data());
  if (!bias_in_place) detail::check_disjoint(where, "folded_bias", folded_bias, "bias", bias);
  const char* names[4] = {"gamma", "beta", "running_mean", "running_var"};
  const vector_view<const T> params[4] = {gamma, beta, running_mean, running_var};
  for (int i = 0; i < 4; ++i) {
    detail::check_disjoint(where, "folded_weights", folded_weights, names[i], params[i]);
    detail::check_disjoint(where, "folded_bias", folded_bias, names[i], params[i]);
  }
  detail::check_disjoint(where, "folded_weights", folded_weights, "bias", bias);
  detail::check_disjoint(where, "folded_bias", folded_bias, "weights", weights);
  detail::check_disjoint(where, "folded_bias", folded_bias, "folded_weights", folded_weights);

  for (index_t o = 0; o < k; ++o) {
    const bn_channel_params p =
        bn_params_from_running(double(running_mean[o]), double(running_var[o]), double(gamma[o]), double(beta[o]), eps);
    for (index_t c = 0; c < weights.c(); ++c)
      for (index_t r = 0; r < weights.h(); ++r)
        for (index_t s = 0; s < weights.w(); ++s) folded_weights(o, c, r, s) = T(double(weights(o, c, r, s)) * p.scale);
    const double b = bias.empty() ? 0.0 : double(bias[o]);
    folded_bias[o] = T((b - p.mean) * p.scale + double(beta[o]));
  }
}

}  // namespace bnff
