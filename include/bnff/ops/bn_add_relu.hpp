// bnff: the end of a residual block, batch-norm apply + residual add + ReLU in one
// sweep, and its backward in two sweeps:
//   forward:  y = max(0, (x - mean) * scale + beta + skip)      (read x, skip; write y)
//   backward: g = dy * [y > 0] written as the skip's gradient, with the per-channel
//             sums of g and g * (x - mean) in the same sweep  (read dy, y, x; write g),
//             then dx from x and g                               (read x, g; write dx).
// The conventional order runs BN apply, add and ReLU as three sweeps forward, and
// ReLU backward, the BN reductions and dx as three sweeps backward.
#pragma once

#include <xsimd/xsimd.hpp>

#include <array>

#include "bnff/config.hpp"
#include "bnff/ops/bn_activation.hpp"
#include "bnff/ops/bn_backward_dx.hpp"
#include "bnff/ops/bn_checks.hpp"
#include "bnff/ops/bn_grad_mode.hpp"
#include "bnff/ops/bn_tasks.hpp"
#include "bnff/simd/fma.hpp"
#include "bnff/simd/store_policy.hpp"
#include "bnff/simd/sum_lanes.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff {

// y = max(0, (x - mean[c]) * scale[c] + beta[c] + skip), scale = gamma * invstd from
// batch_norm_finalize. x, skip, y: the same shape, contiguous planes (channel slices
// allowed); y must not overlap x or skip.
template <class Arch = xsimd::default_arch, class T>
void bn_add_relu_forward(tensor_view<const detail::nondeduced_t<T>> x, tensor_view<const detail::nondeduced_t<T>> skip,
                         tensor_view<T> y, vector_view<const detail::nondeduced_t<T>> mean,
                         vector_view<const detail::nondeduced_t<T>> scale,
                         vector_view<const detail::nondeduced_t<T>> beta) {
  constexpr const char* where = "bn_add_relu_forward";
  detail::check_planes(where, "x", x);
  detail::check_like(where, "skip", skip, x.shape());
  detail::check_planes(where, "skip", skip);
  detail::check_like(where, "y", y, x.shape());
  detail::check_channels(where, "mean", mean, x.c());
  detail::check_channels(where, "scale", scale, x.c());
  detail::check_channels(where, "beta", beta, x.c());
  detail::check_disjoint(where, "y", y, "x", x);
  detail::check_disjoint(where, "y", y, "skip", skip);
  detail::check_disjoint(where, "y", y, "mean", mean);
  detail::check_disjoint(where, "y", y, "scale", scale);
  detail::check_disjoint(where, "y", y, "beta", beta);
  using batch = xsimd::batch<T, Arch>;
  const index_t plane = x.plane();
  detail::with_store_policy<T>(y.size(), false, [&](auto store) {
    using Store = decltype(store);
    detail::for_each_plane(
        x.n(), x.c(), plane,
        [&](index_t n, index_t c) {
          const T* xp = x.plane_ptr(n, c);
          const T* sp = skip.plane_ptr(n, c);
          T* yp = y.plane_ptr(n, c);
          const batch m(mean[c]), s(scale[c]), o(beta[c]);
          Store::template for_each<T, Arch>(plane, yp, [&](auto lanes, auto) {
            lanes.store(yp, bn_relu::forward(simd::fma(lanes.load(xp) - m, s, o) + lanes.load(sp)));
          });
        },
        [] { Store::finish(); });
  });
}

// The gradients of y = max(0, BN(x) + skip) (training mode: the batch statistics depend on x),
// given dy and the forward's output y (its sign is the ReLU mask, which the skip shares):
//   d_skip = g = dy * [y > 0]                               (overwritten)
//   dbeta = sum(g),  dgamma = sum(g * (x - mean)) * invstd  (per channel, in double, fixed order)
//   dx = scale * (g - dbeta / m - xhat * dgamma / m)        (GradMode: overwrite or add into dx)
// mean, invstd, scale: the forward's (batch_norm_finalize). d_skip must not overlap x, y or dy
// (it may not be exactly dy either: dy is read after the first writes); dx must not overlap
// any other tensor.
template <class Arch = xsimd::default_arch, class GradMode = grad_overwrite, class T>
void bn_add_relu_backward(tensor_view<const detail::nondeduced_t<T>> x, tensor_view<const detail::nondeduced_t<T>> y,
                          tensor_view<const detail::nondeduced_t<T>> dy,
                          vector_view<const detail::nondeduced_t<T>> mean,
                          vector_view<const detail::nondeduced_t<T>> invstd,
                          vector_view<const detail::nondeduced_t<T>> scale, tensor_view<T> d_skip, tensor_view<T> dx,
                          vector_view<T> dgamma, vector_view<T> dbeta, GradMode mode = {}) {
  constexpr const char* where = "bn_add_relu_backward";
  detail::check_planes(where, "x", x);
  detail::check_like(where, "y", y, x.shape());
  detail::check_planes(where, "y", y);
  detail::check_like(where, "dy", dy, x.shape());
  detail::check_planes(where, "dy", dy);
  detail::check_like(where, "d_skip", d_skip, x.shape());
  detail::check_planes(where, "d_skip", d_skip);
  detail::check_like(where, "dx", dx, x.shape());
  detail::check_channels(where, "mean", mean, x.c());
  detail::check_channels(where, "invstd", invstd, x.c());
  detail::check_channels(where, "scale", scale, x.c());
  detail::check_channels(where, "dgamma", dgamma, x.c());
  detail::check_channels(where, "dbeta", dbeta, x.c());
  detail::check_disjoint(where, "d_skip", d_skip, "x", x);
  detail::check_disjoint(where, "d_skip", d_skip, "y", y);
  detail::check_disjoint(where, "d_skip", d_skip, "dy", dy);
  detail::check_disjoint(where, "dx", dx, "x", x);
  detail::check_disjoint(where, "dx", dx, "y", y);
  detail::check_disjoint(where, "dx", dx, "dy", dy);
  detail::check_disjoint(where, "dx", dx, "d_skip", d_skip);
  const char* names[3] = {"mean", "invstd", "scale"};
  const vector_view<const T> vecs[3] = {mean, invstd, scale};
  for (int i = 0; i < 3; ++i) {
    detail::check_disjoint(where, "dgamma", dgamma, names[i], vecs[i]);
    detail::check_disjoint(where, "dbeta", dbeta, names[i], vecs[i]);
  }
  detail::check_disjoint(where, "dbeta", dbeta, "dgamma", dgamma);

  using batch = xsimd::batch<T, Arch>;
  detail::reduce_channel_groups<2>(
      x,
      [&](index_t n, index_t c, std::array<double, 2>& sums) {
        const T mean_c = mean[c];
        const batch vmean(mean_c);
        const T* xp = x.plane_ptr(n, c);
        const T* yp = y.plane_ptr(n, c);
        const T* dyp = dy.plane_ptr(n, c);
        T* gp = d_skip.plane_ptr(n, c);
        // Padded lanes: y = 0 masks g to 0 and x = mean, so they add nothing (and are not stored).
        simd::sum_lanes<2, T, Arch>(x.plane(), sums, [&](auto lanes, auto& acc) {
          const batch g = bn_relu::backward(lanes.load(yp, T(0)), lanes.load(dyp, T(0)));
          lanes.store(gp, g);
          acc[0] += g;
          acc[1] = simd::fma(g, lanes.load(xp, mean_c) - vmean, acc[1]);
        });
      },
      [&](index_t c, const std::array<double, 2>& sums) {
        dbeta[c] = T(sums[0]);
        dgamma[c] = T(sums[1] * double(invstd[c]));
      });
  bn_backward_dx<T, Arch>(x, tensor_view<const T>(d_skip), mean, invstd, scale, vector_view<const T>(dgamma),
                          vector_view<const T>(dbeta), dx, mode);
}

}  // namespace bnff

namespace bnff::unfused {

// y = a + b, one sweep (the residual add of a conventional framework). y may be exactly a or b.
template <class Arch = xsimd::default_arch, class T>
void add(tensor_view<const bnff::detail::nondeduced_t<T>> a, tensor_view<const bnff::detail::nondeduced_t<T>> b,
         tensor_view<T> y) {
  constexpr const char* where = "unfused::add";
  bnff::detail::check_planes(where, "a", a);
  bnff::detail::check_like(where, "b", b, a.shape());
  bnff::detail::check_planes(where, "b", b);
  bnff::detail::check_like(where, "y", y, a.shape());
  bnff::detail::check_in_place_or_disjoint(where, "y", y, "a", a);
  bnff::detail::check_in_place_or_disjoint(where, "y", y, "b", b);
  const bool in_place = y.data() == a.data() || y.data() == b.data();
  bnff::detail::with_store_policy<T>(y.size(), in_place, [&](auto store) {
    using Store = decltype(store);
    bnff::detail::for_each_plane(
        a.n(), a.c(), a.plane(),
        [&](index_t n, index_t c) {
          const T* ap = a.plane_ptr(n, c);
          const T* bp = b.plane_ptr(n, c);
          T* yp = y.plane_ptr(n, c);
          Store::template for_each<T, Arch>(
              a.plane(), yp, [&](auto lanes, auto) { lanes.store(yp, lanes.load(ap) + lanes.load(bp)); });
        },
        [] { Store::finish(); });
  });
}

}  // namespace bnff::unfused
