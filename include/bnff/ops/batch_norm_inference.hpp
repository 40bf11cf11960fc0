// bnff: inference-mode batch norm: scale and shift from the running
// statistics once, then one affine (+ReLU) sweep per call.
#pragma once

#include <xsimd/xsimd.hpp>

#include "bnff/config.hpp"
#include "bnff/ops/batch_norm_apply.hpp"
#include "bnff/ops/bn_activation.hpp"
#include "bnff/ops/bn_checks.hpp"
#include "bnff/stats/bn_channel_params.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff {

// scale[c] = gamma[c] / sqrt(running_var[c] + eps),
// shift[c] = beta[c] - running_mean[c] * scale[c]   (in double, rounded once).
// Outputs must not overlap each other or the inputs.
template <class T>
void batch_norm_inference_params(vector_view<const detail::nondeduced_t<T>> gamma,
                                 vector_view<const detail::nondeduced_t<T>> beta,
                                 vector_view<const detail::nondeduced_t<T>> running_mean,
                                 vector_view<const detail::nondeduced_t<T>> running_var, double eps,
                                 vector_view<T> scale, vector_view<T> shift) {
  constexpr const char* where = "batch_norm_inference_params";
  const index_t c = gamma.size();
  check_arg(c > 0, where, "gamma", "one value per channel (at least one)", "0 elements");
  detail::check_channels(where, "beta", beta, c);
  detail::check_channels(where, "running_mean", running_mean, c);
  detail::check_channels(where, "running_var", running_var, c);
  detail::check_eps(where, eps);
  detail::check_channels(where, "scale", scale, c);
  detail::check_channels(where, "shift", shift, c);
  const char* in_names[4] = {"gamma", "beta", "running_mean", "running_var"};
  const vector_view<const T> ins[4] = {gamma, beta, running_mean, running_var};
  for (int i = 0; i < 4; ++i) {
    detail::check_disjoint(where, "scale", scale, in_names[i], ins[i]);
    detail::check_disjoint(where, "shift", shift, in_names[i], ins[i]);
  }
  detail::check_disjoint(where, "shift", shift, "scale", scale);
  for (index_t i = 0; i < c; ++i) {
    const bn_channel_params p =
        bn_params_from_running(double(running_mean[i]), double(running_var[i]), double(gamma[i]), double(beta[i]), eps);
    scale[i] = T(p.scale);
    shift[i] = T(p.shift);
  }
}

// y = Activation(x * scale[c] + shift[c]): inference BN (+ReLU) as one sweep,
// with scale and shift from batch_norm_inference_params. Same shape, slice
// and in-place rules as batch_norm_apply.
template <class Activation = bn_identity, class Arch = xsimd::default_arch, class T>
void batch_norm_apply_affine(tensor_view<const detail::nondeduced_t<T>> x, tensor_view<T> y,
                             vector_view<const detail::nondeduced_t<T>> scale,
                             vector_view<const detail::nondeduced_t<T>> shift) {
  constexpr const char* where = "batch_norm_apply_affine";
  detail::check_planes(where, "x", x);
  detail::check_like(where, "y", y, x.shape());
  detail::check_channels(where, "scale", scale, x.c());
  detail::check_channels(where, "shift", shift, x.c());
  detail::check_in_place_or_disjoint(where, "y", y, "x", x);
  detail::check_disjoint(where, "y", y, "scale", scale);
  detail::check_disjoint(where, "y", y, "shift", shift);
  detail::bn_apply<Activation, Arch, T>(x, y, nullptr, scale.data(), shift.data());
}

}  // namespace bnff
