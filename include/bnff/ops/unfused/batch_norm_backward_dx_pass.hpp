// bnff baseline: the batch-norm input gradient as its own sweep over x and dy.
#pragma once

#include <xsimd/xsimd.hpp>

#include <array>
#include <type_traits>

#include "bnff/config.hpp"
#include "bnff/ops/bn_checks.hpp"
#include "bnff/ops/bn_grad_mode.hpp"
#include "bnff/ops/bn_tasks.hpp"
#include "bnff/simd/fma.hpp"
#include "bnff/simd/store_policy.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff::detail {

template <class T>
void unfused_batch_norm_backward_dx_check(
    tensor_view<const bnff::detail::nondeduced_t<T>> x, tensor_view<const bnff::detail::nondeduced_t<T>> dy,
    vector_view<const bnff::detail::nondeduced_t<T>> mean, vector_view<const bnff::detail::nondeduced_t<T>> invstd,
    vector_view<const bnff::detail::nondeduced_t<T>> gamma, vector_view<const bnff::detail::nondeduced_t<T>> sum_dy,
    vector_view<const bnff::detail::nondeduced_t<T>> sum_dy_xhat, tensor_view<T> dx) {
  constexpr const char* where = "unfused::batch_norm_backward_dx";
  bnff::detail::check_planes(where, "x", x);
  bnff::detail::check_like(where, "dy", dy, x.shape());
  bnff::detail::check_like(where, "dx", dx, x.shape());
  const char* names[5] = {"mean", "invstd", "gamma", "sum_dy", "sum_dy_xhat"};
  const vector_view<const T> params[5] = {mean, invstd, gamma, sum_dy, sum_dy_xhat};
  for (int i = 0; i < 5; ++i) bnff::detail::check_channels(where, names[i], params[i], x.c());
  bnff::detail::check_disjoint(where, "dx", dx, "x", x);
  bnff::detail::check_in_place_or_disjoint(where, "dx", dx, "dy", dy);
  for (int i = 0; i < 5; ++i) bnff::detail::check_disjoint(where, "dx", dx, names[i], params[i]);
}

// The batch-norm input-gradient sweep, the one implementation every dx caller runs
// (bn_backward_dx, the fused backward, this pass): per channel, with k = scale_of(c),
//   dx = k * dy - ((x - mean) * k1 + k0),  k0 = k * sum_dy / m,  k1 = k * invstd * sum_dy_xhat / m.
// Large outputs are streamed unless GradMode reads dx (accumulating reads it anyway).
// sums_of(c) gives {sum_dy, sum_dy_xhat} in double; m is the count the sums cover
// (N * H * W of x, or the global count when the sums were synchronized across processes).
template <class GradMode, class Arch, class T, class ScaleOf, class SumsOf>
void bn_backward_dx_sweep_sums(const tensor_view<const T>& x, const tensor_view<const T>& dy, const T* mean,
                               const T* invstd, ScaleOf scale_of, SumsOf sums_of, double m, const tensor_view<T>& dx) {
  using batch = xsimd::batch<T, Arch>;
  bnff::detail::with_store_policy<T>(dx.size(), dx.data() == dy.data(), [&](auto store) {
    using Store = std::conditional_t<GradMode::reads_output, simd::temporal_stores, decltype(store)>;
    bnff::detail::for_each_plane(
        x.n(), x.c(), x.plane(),
        [&](index_t n, index_t c) {
          const T* xp = x.plane_ptr(n, c);
          const T* dyp = dy.plane_ptr(n, c);
          T* dxp = dx.plane_ptr(n, c);
          const double istd = double(invstd[c]), k = scale_of(c);
          const auto sums = sums_of(c);
          const batch vmean(mean[c]), vk = batch(T(k)), k0 = batch(T(k * sums[0] / m)),
                                      k1 = batch(T(k * istd * sums[1] / m));
          Store::template for_each<T, Arch>(x.plane(), dxp, [&](auto lanes, auto) {
            const batch g = simd::fms(vk, lanes.load(dyp), simd::fma(lanes.load(xp) - vmean, k1, k0));
            if constexpr (GradMode::reads_output)
              lanes.store(dxp, GradMode::combine(lanes.load(dxp), g));
            else
              lanes.store(dxp, g);
          });
        },
        [] { Store::finish(); });
  });
}

// The sweep above with T sums of this x's own N * H * W elements.
template <class GradMode, class Arch, class T, class ScaleOf>
void bn_backward_dx_sweep(const tensor_view<const T>& x, const tensor_view<const T>& dy, const T* mean, const T* invstd,
                          ScaleOf scale_of, const T* sum_dy, const T* sum_dy_xhat, const tensor_view<T>& dx) {
  bn_backward_dx_sweep_sums<GradMode, Arch, T>(
      x, dy, mean, invstd, scale_of,
      [sum_dy, sum_dy_xhat](index_t c) {
        return std::array<double, 2>{double(sum_dy[c]), double(sum_dy_xhat[c])};
      },
      double(x.n()) * double(x.plane()), dx);
}

// The pass's dx (arguments already checked): scale = gamma * invstd, in double.
template <class Arch, class T>
void unfused_batch_norm_backward_dx_run(const tensor_view<const T>& x, const tensor_view<const T>& dy,
                                        vector_view<const T> mean, vector_view<const T> invstd,
                                        vector_view<const T> gamma, vector_view<const T> sum_dy,
                                        vector_view<const T> sum_dy_xhat, const tensor_view<T>& dx) {
  const T* g = gamma.data();
  const T* is = invstd.data();
  bn_backward_dx_sweep<grad_overwrite, Arch, T>(
      x, dy, mean.data(), is, [g, is](index_t c) { return double(g[c]) * double(is[c]); }, sum_dy.data(),
      sum_dy_xhat.data(), dx);
}

}  // namespace bnff::detail

namespace bnff::unfused {

// dx = gamma * invstd * (dy - sum_dy / m - xhat * sum_dy_xhat / m),
// xhat = (x - mean) * invstd, m = N * H * W. dx may be exactly dy (in place).
template <class Arch = xsimd::default_arch, class T>
void batch_norm_backward_dx(tensor_view<const bnff::detail::nondeduced_t<T>> x,
                            tensor_view<const bnff::detail::nondeduced_t<T>> dy,
                            vector_view<const bnff::detail::nondeduced_t<T>> mean,
                            vector_view<const bnff::detail::nondeduced_t<T>> invstd,
                            vector_view<const bnff::detail::nondeduced_t<T>> gamma,
                            vector_view<const bnff::detail::nondeduced_t<T>> sum_dy,
                            vector_view<const bnff::detail::nondeduced_t<T>> sum_dy_xhat, tensor_view<T> dx) {
  bnff::detail::unfused_batch_norm_backward_dx_check<T>(x, dy, mean, invstd, gamma, sum_dy, sum_dy_xhat, dx);
  bnff::detail::unfused_batch_norm_backward_dx_run<Arch, T>(x, dy, mean, invstd, gamma, sum_dy, sum_dy_xhat, dx);
}

}  // namespace bnff::unfused
