// bnff baseline: the per-channel mean as its own sweep over x, as a
// conventional framework computes it before a separate variance sweep.
#pragma once

#include <xsimd/xsimd.hpp>

#include <array>
#include <type_traits>

#include "bnff/config.hpp"
#include "bnff/ops/bn_checks.hpp"
#include "bnff/ops/bn_tasks.hpp"
#include "bnff/simd/sum_lanes.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff::detail {

template <class T>
void unfused_batch_norm_mean_check(tensor_view<const bnff::detail::nondeduced_t<T>> x, vector_view<T> mean) {
  constexpr const char* where = "unfused::batch_norm_mean";
  bnff::detail::check_planes(where, "x", x);
  bnff::detail::check_channels(where, "mean", mean, x.c());
  bnff::detail::check_disjoint(where, "mean", mean, "x", x);
}

template <class Arch, class T>
void unfused_batch_norm_mean_run(tensor_view<const bnff::detail::nondeduced_t<T>> x, vector_view<T> mean) {
  const double m = double(x.n()) * double(x.plane());
  reduce_channel_groups<1>(
      x,
      [&](index_t n, index_t c, std::array<double, 1>& sum) {
        const T* xp = x.plane_ptr(n, c);
        simd::sum_lanes<1, T, Arch>(x.plane(), sum, [&](auto lanes, auto& acc) { acc[0] += lanes.load(xp, T(0)); });
      },
      [&](index_t c, const std::array<double, 1>& sum) { mean[c] = T(sum[0] / m); });
}

}  // namespace bnff::detail

namespace bnff::unfused {

// mean[c] = sum(x[:, c]) / (N * H * W), summed in double per channel.
template <class Arch = xsimd::default_arch, class T>
void batch_norm_mean(tensor_view<const bnff::detail::nondeduced_t<T>> x, vector_view<T> mean) {
  bnff::detail::unfused_batch_norm_mean_check<T>(x, mean);
  bnff::detail::unfused_batch_norm_mean_run<Arch, T>(x, mean);
}

}  // namespace bnff::unfused
