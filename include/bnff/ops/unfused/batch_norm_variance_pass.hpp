// bnff baseline: the per-channel biased variance as a second sweep over x,
// given the mean from the first.
#pragma once

#include <xsimd/xsimd.hpp>

#include <array>

#include "bnff/config.hpp"
#include "bnff/ops/bn_checks.hpp"
#include "bnff/ops/bn_tasks.hpp"
#include "bnff/simd/fma.hpp"
#include "bnff/simd/sum_lanes.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff::detail {

template <class T>
void unfused_batch_norm_variance_check(tensor_view<const bnff::detail::nondeduced_t<T>> x,
                                       vector_view<const bnff::detail::nondeduced_t<T>> mean, vector_view<T> var) {
  constexpr const char* where = "unfused::batch_norm_variance";
  bnff::detail::check_planes(where, "x", x);
  bnff::detail::check_channels(where, "mean", mean, x.c());
  bnff::detail::check_channels(where, "var", var, x.c());
  bnff::detail::check_disjoint(where, "var", var, "x", x);
  bnff::detail::check_disjoint(where, "var", var, "mean", mean);
}

template <class Arch, class T>
void unfused_batch_norm_variance_run(tensor_view<const bnff::detail::nondeduced_t<T>> x,
                                     vector_view<const bnff::detail::nondeduced_t<T>> mean, vector_view<T> var) {
  using batch = xsimd::batch<T, Arch>;
  const double m = double(x.n()) * double(x.plane());
  reduce_channel_groups<1>(
      x,
      [&](index_t n, index_t c, std::array<double, 1>& sum) {
        const T mean_c = mean[c];
        const batch vmean(mean_c);
        const T* xp = x.plane_ptr(n, c);
        // Padded lanes load the mean: their deviation is 0.
        simd::sum_lanes<1, T, Arch>(x.plane(), sum, [&](auto lanes, auto& acc) {
          const batch d = lanes.load(xp, mean_c) - vmean;
          acc[0] = simd::fma(d, d, acc[0]);
        });
      },
      [&](index_t c, const std::array<double, 1>& sum) { var[c] = T(sum[0] / m); });
}

}  // namespace bnff::detail

namespace bnff::unfused {

// var[c] = sum((x[:, c] - mean[c])^2) / (N * H * W), summed in double per channel.
template <class Arch = xsimd::default_arch, class T>
void batch_norm_variance(tensor_view<const bnff::detail::nondeduced_t<T>> x,
                         vector_view<const bnff::detail::nondeduced_t<T>> mean, vector_view<T> var) {
  bnff::detail::unfused_batch_norm_variance_check<T>(x, mean, var);
  bnff::detail::unfused_batch_norm_variance_run<Arch, T>(x, mean, var);
}

}  // namespace bnff::unfused
