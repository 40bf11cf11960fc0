// bnff baseline: normalize as its own sweep, x -> y, from mean and variance.
#pragma once

#include <xsimd/xsimd.hpp>

#include <cmath>

#include "bnff/config.hpp"
#include "bnff/ops/bn_checks.hpp"
#include "bnff/ops/bn_tasks.hpp"
#include "bnff/simd/fma.hpp"
#include "bnff/simd/store_policy.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff::detail {

template <class T>
void unfused_batch_norm_normalize_check(tensor_view<const bnff::detail::nondeduced_t<T>> x, tensor_view<T> y,
                                        vector_view<const bnff::detail::nondeduced_t<T>> mean,
                                        vector_view<const bnff::detail::nondeduced_t<T>> var,
                                        vector_view<const bnff::detail::nondeduced_t<T>> gamma,
                                        vector_view<const bnff::detail::nondeduced_t<T>> beta, double eps) {
  constexpr const char* where = "unfused::batch_norm_normalize";
  bnff::detail::check_planes(where, "x", x);
  bnff::detail::check_like(where, "y", y, x.shape());
  bnff::detail::check_channels(where, "mean", mean, x.c());
  bnff::detail::check_channels(where, "var", var, x.c());
  bnff::detail::check_channels(where, "gamma", gamma, x.c());
  bnff::detail::check_channels(where, "beta", beta, x.c());
  bnff::detail::check_eps(where, eps);
  bnff::detail::check_in_place_or_disjoint(where, "y", y, "x", x);
  const char* names[4] = {"mean", "var", "gamma", "beta"};
  const vector_view<const T> params[4] = {mean, var, gamma, beta};
  for (int i = 0; i < 4; ++i) bnff::detail::check_disjoint(where, "y", y, names[i], params[i]);
}

template <class Arch, class T>
void unfused_batch_norm_normalize_run(tensor_view<const bnff::detail::nondeduced_t<T>> x, tensor_view<T> y,
                                      vector_view<const bnff::detail::nondeduced_t<T>> mean,
                                      vector_view<const bnff::detail::nondeduced_t<T>> var,
                                      vector_view<const bnff::detail::nondeduced_t<T>> gamma,
                                      vector_view<const bnff::detail::nondeduced_t<T>> beta, double eps) {
  using batch = xsimd::batch<T, Arch>;
  bnff::detail::with_store_policy<T>(y.size(), y.data() == x.data(), [&](auto store) {
    using Store = decltype(store);
    bnff::detail::for_each_plane(
        x.n(), x.c(), x.plane(),
        [&](index_t n, index_t c) {
          const T* xp = x.plane_ptr(n, c);
          T* yp = y.plane_ptr(n, c);
          const batch vmean(mean[c]), s(T(double(gamma[c]) / std::sqrt(double(var[c]) + eps))), b(beta[c]);
          Store::template for_each<T, Arch>(
              x.plane(), yp, [&](auto lanes, auto) { lanes.store(yp, simd::fma(lanes.load(xp) - vmean, s, b)); });
        },
        [] { Store::finish(); });
  });
}

}  // namespace bnff::detail

namespace bnff::unfused {

// y = (x - mean[c]) / sqrt(var[c] + eps) * gamma[c] + beta[c]. y may be exactly x.
template <class Arch = xsimd::default_arch, class T>
void batch_norm_normalize(tensor_view<const bnff::detail::nondeduced_t<T>> x, tensor_view<T> y,
                          vector_view<const bnff::detail::nondeduced_t<T>> mean,
                          vector_view<const bnff::detail::nondeduced_t<T>> var,
                          vector_view<const bnff::detail::nondeduced_t<T>> gamma,
                          vector_view<const bnff::detail::nondeduced_t<T>> beta, double eps) {
  bnff::detail::unfused_batch_norm_normalize_check<T>(x, y, mean, var, gamma, beta, eps);
  bnff::detail::unfused_batch_norm_normalize_run<Arch, T>(x, y, mean, var, gamma, beta, eps);
}

}  // namespace bnff::unfused
