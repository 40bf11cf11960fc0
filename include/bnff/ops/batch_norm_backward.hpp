// bnff: batch-norm backward, optionally through a fused ReLU, from x and the
// saved statistics: one reduction sweep and one dx sweep per channel.
#pragma once

#include <xsimd/xsimd.hpp>

#include <array>
#include <type_traits>

#include "bnff/config.hpp"
#include "bnff/ops/bn_activation.hpp"
#include "bnff/ops/bn_checks.hpp"
#include "bnff/ops/bn_grad_mode.hpp"
#include "bnff/ops/bn_tasks.hpp"
#include "bnff/simd/fma.hpp"
#include "bnff/simd/store_policy.hpp"
#include "bnff/simd/sum_lanes.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff {

namespace detail {

// The two sweeps of batch_norm_backward (arguments already checked). Store is
// simd::temporal_stores or simd::streaming_stores; the bits are the same.
template <class Activation, class GradMode, class Store, class Arch, class T>
void bn_backward_sweeps(const tensor_view<const T>& x, const tensor_view<const T>& dz, const T* mean, const T* invstd,
                        const T* scale, const T* beta, const tensor_view<T>& dx, T* dgamma, T* dbeta) {
  using batch = xsimd::batch<T, Arch>;
  const index_t plane = x.plane();
  const double m = double(x.n()) * double(plane);
  // Blocks of one flush chunk: sum_lanes then flushes once per block.
  const index_t block = simd::sum_flush_batches * index_t(batch::size);
  const std::array<tensor_view<const T>, 2> inputs{x, dz};
  for_each_channel(x.c(), [&](index_t c) {
    const T mean_c = mean[c];
    const batch vmean(mean_c), vscale(scale[c]), vbeta(beta[c]);
    std::array<double, 2> sums{0.0, 0.0};  // sum(dy), sum(dy * xc)
    for_each_channel_block(inputs, c, block, [&](index_t n, index_t b0, index_t b1) {
      const T* xp = x.plane_ptr(n, c) + b0;
      const T* dzp = dz.plane_ptr(n, c) + b0;
      // Padded lanes: x = mean and dz = 0, so xc = dy = 0 adds nothing.
      simd::sum_lanes<2, T, Arch>(b1 - b0, sums, [&](auto lanes, auto& acc) {
        const batch xc = lanes.load(xp, mean_c) - vmean;
        const batch dy = Activation::backward(simd::fma(xc, vscale, vbeta), lanes.load(dzp, T(0)));
        acc[0] += dy;
        acc[1] = simd::fma(dy, xc, acc[1]);
      });
    });
    const double istd = double(invstd[c]), sc = double(scale[c]);
    const double sum_dy = sums[0], sum_dy_xhat = sums[1] * istd;
    if (dbeta) dbeta[c] = T(sum_dy);
    if (dgamma) dgamma[c] = T(sum_dy_xhat);
    const batch k0(T(sc * sum_dy / m)), k1(T(sc * istd * sum_dy_xhat / m));
    for (index_t n = 0; n < x.n(); ++n) {
      const T* xp = x.plane_ptr(n, c);
      const T* dzp = dz.plane_ptr(n, c);
      T* dxp = dx.plane_ptr(n, c);
      Store::template for_each<T, Arch>(plane, dxp, [&](auto lanes, auto) {
        const batch xc = lanes.load(xp) - vmean;
        const batch dy = Activation::backward(simd::fma(xc, vscale, vbeta), lanes.load(dzp));
        const batch g = simd::fms(vscale, dy, simd::fma(xc, k1, k0));
        if constexpr (GradMode::reads_output)
          lanes.store(dxp, GradMode::combine(lanes.load(dxp), g));
        else
          lanes.store(dxp, g);
      });
    }
    Store::finish();
  });
}

}  // namespace detail

// Gradients of z = Activation(BN(x)) given dz, with the batch statistics
// depending on x (training mode). Per channel c, with m = N * H * W:
//   xc = x - mean,  y = xc * scale + beta   (the forward's value, recomputed)
//   dy = dz * [y > 0] for bn_relu, dz for bn_identity   (no mask is stored)
//   dbeta = sum(dy),  dgamma = sum(dy * xc) * invstd     (one sweep over x, dz)
//   dx = scale * dy - (xc * invstd * scale * dgamma / m + scale * dbeta / m)   (second sweep)
// which is scale * (dy - dbeta / m - xhat * dgamma / m). GradMode grad_overwrite
// writes dx, grad_accumulate adds to it. The second sweep finds the channel in
// cache when N * H * W * 2 elements fit in L2, so main memory sees x and dz once.
// mean, invstd, scale come from batch_norm_finalize (beta is the forward's).
// dgamma and dbeta may be empty (not computed). Reductions run per channel in a
// fixed order: the same bits for any thread count. dx may be exactly x or dz
// (in place) with grad_overwrite; otherwise it must not overlap any input.
template <class Activation = bn_identity, class GradMode = grad_overwrite, class Arch = xsimd::default_arch, class T>
void batch_norm_backward(tensor_view<const detail::nondeduced_t<T>> x, tensor_view<const detail::nondeduced_t<T>> dz,
                         vector_view<const detail::nondeduced_t<T>> mean,
                         vector_view<const detail::nondeduced_t<T>> invstd,
                         vector_view<const detail::nondeduced_t<T>> scale,
                         vector_view<const detail::nondeduced_t<T>> beta, tensor_view<T> dx, vector_view<T> dgamma,
                         vector_view<T> dbeta) {
  constexpr const char* where = "batch_norm_backward";
  detail::check_planes(where, "x", x);
  detail::check_like(where, "dz", dz, x.shape());
  detail::check_like(where, "dx", dx, x.shape());
  const index_t channels = x.c();
  detail::check_channels(where, "mean", mean, channels);
  detail::check_channels(where, "invstd", invstd, channels);
  detail::check_channels(where, "scale", scale, channels);
  detail::check_channels(where, "beta", beta, channels);
  detail::check_channels(where, "dgamma", dgamma, channels, true);
  detail::check_channels(where, "dbeta", dbeta, channels, true);
  if constexpr (GradMode::reads_output) {
    detail::check_disjoint(where, "dx", dx, "x", x);
    detail::check_disjoint(where, "dx", dx, "dz", dz);
  } else {
    detail::check_in_place_or_disjoint(where, "dx", dx, "x", x);
    detail::check_in_place_or_disjoint(where, "dx", dx, "dz", dz);
  }
  const char* vec_names[4] = {"mean", "invstd", "scale", "beta"};
  const vector_view<const T> vecs[4] = {mean, invstd, scale, beta};
  for (int i = 0; i < 4; ++i) {
    detail::check_disjoint(where, "dx", dx, vec_names[i], vecs[i]);
    detail::check_disjoint(where, "dgamma", dgamma, vec_names[i], vecs[i]);
    detail::check_disjoint(where, "dbeta", dbeta, vec_names[i], vecs[i]);
  }
  detail::check_disjoint(where, "dgamma", dgamma, "x", x);
  detail::check_disjoint(where, "dgamma", dgamma, "dz", dz);
  detail::check_disjoint(where, "dgamma", dgamma, "dx", dx);
  detail::check_disjoint(where, "dbeta", dbeta, "x", x);
  detail::check_disjoint(where, "dbeta", dbeta, "dz", dz);
  detail::check_disjoint(where, "dbeta", dbeta, "dx", dx);
  detail::check_disjoint(where, "dbeta", dbeta, "dgamma", dgamma);

  detail::with_store_policy<T>(dx.size(), dx.data() == x.data() || dx.data() == dz.data(), [&](auto store) {
    // Accumulating reads dx anyway: streaming its stores would save nothing.
    using Store = std::conditional_t<GradMode::reads_output, simd::temporal_stores, decltype(store)>;
    detail::bn_backward_sweeps<Activation, GradMode, Store, Arch, T>(
        x, dz, mean.data(), invstd.data(), scale.data(), beta.data(), dx, dgamma.empty() ? nullptr : dgamma.data(),
        dbeta.empty() ? nullptr : dbeta.data());
  });
}

}  // namespace bnff
