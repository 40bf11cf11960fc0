// bnff: batch-norm apply, optionally fused with ReLU: one sweep, x -> y.
#pragma once

#include <xsimd/xsimd.hpp>

#include "bnff/config.hpp"
#include "bnff/ops/bn_activation.hpp"
#include "bnff/ops/bn_checks.hpp"
#include "bnff/ops/bn_tasks.hpp"
#include "bnff/simd/fma.hpp"
#include "bnff/simd/store_policy.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff {

namespace detail {

// y = Activation((x - center[c]) * scale[c] + offset[c]), center = 0 when null.
// Training passes (mean, scale, beta): a constant channel then maps to exactly
// beta, and x - mean loses nothing to cancellation however large |mean| / std.
// Inference passes (null, scale, shift): one FMA per element. Store is
// simd::temporal_stores or simd::streaming_stores; the bits are the same.
template <class Activation, class Store, class Arch, class T>
void bn_apply_sweep(const tensor_view<const T>& x, const tensor_view<T>& y, const T* center, const T* scale,
                    const T* offset) {
  using batch = xsimd::batch<T, Arch>;
  const index_t plane = x.plane();
  for_each_plane(
      x.n(), x.c(), plane,
      [&](index_t n, index_t c) {
        const T* xp = x.plane_ptr(n, c);
        T* yp = y.plane_ptr(n, c);
        const batch m(center ? center[c] : T(0)), s(scale[c]), o(offset[c]);
        Store::template for_each<T, Arch>(plane, yp, [&](auto lanes, auto) {
          lanes.store(yp, Activation::forward(simd::fma(lanes.load(xp) - m, s, o)));
        });
      },
      [] { Store::finish(); });
}

// The store policy for y's size, then the sweep.
template <class Activation, class Arch, class T>
void bn_apply(const tensor_view<const T>& x, const tensor_view<T>& y, const T* center, const T* scale,
              const T* offset) {
  with_store_policy<T>(y.size(), y.data() == x.data(), [&](auto store) {
    bn_apply_sweep<Activation, decltype(store), Arch, T>(x, y, center, scale, offset);
  });
}

}  // namespace detail

// y = Activation((x - mean[c]) * scale[c] + beta[c]) with scale = gamma * invstd
// from batch_norm_finalize; Activation is bn_identity or bn_relu (ReLU fused:
// the normalized tensor never exists). x and y have the same shape, contiguous
// planes, and may be channel slices; y may be exactly x (in place) but must not
// partially overlap it.
template <class Activation = bn_identity, class Arch = xsimd::default_arch, class T>
void batch_norm_apply(tensor_view<const detail::nondeduced_t<T>> x, tensor_view<T> y,
                      vector_view<const detail::nondeduced_t<T>> mean, vector_view<const detail::nondeduced_t<T>> scale,
                      vector_view<const detail::nondeduced_t<T>> beta) {
  constexpr const char* where = "batch_norm_apply";
  detail::check_planes(where, "x", x);
  detail::check_like(where, "y", y, x.shape());
  detail::check_channels(where, "mean", mean, x.c());
  detail::check_channels(where, "scale", scale, x.c());
  detail::check_channels(where, "beta", beta, x.c());
  detail::check_in_place_or_disjoint(where, "y", y, "x", x);
  detail::check_disjoint(where, "y", y, "mean", mean);
  detail::check_disjoint(where, "y", y, "scale", scale);
  detail::check_disjoint(where, "y", y, "beta", beta);
  detail::bn_apply<Activation, Arch, T>(x, y, mean.data(), scale.data(), beta.data());
}

}  // namespace bnff
