// bnff: the batch-norm input gradient from a stored dy and finished reductions: one
// sweep over x and dy (the reductions came from a convolution's epilogue).
#pragma once

#include <cmath>
#include <xsimd/xsimd.hpp>

#include "bnff/conv/conv2d_checks.hpp"
#include "bnff/fusion/bn_relu_backward_epilogue.hpp"
#include "bnff/ops/bn_grad_mode.hpp"
#include "bnff/ops/unfused/batch_norm_backward_dx_pass.hpp"
#include "bnff/parallel/parallel.hpp"

namespace bnff {

// dgamma[c] = sum(dy * xhat) = sum(dy * (x - mean)) * invstd[c],  dbeta[c] = sum(dy),
// from the partials of bn_relu_backward_epilogue merged in partition order (in double).
template <class T>
void bn_backward_finalize(const stats_partition& partition, vector_view<const bn_backward_partial> partials,
                          vector_view<const T> invstd, vector_view<T> dgamma, vector_view<T> dbeta) {
  constexpr const char* where = "bn_backward_finalize";
  const index_t channels = partition.channels;
  check_arg(partials.size() >= partition.size(), where, "partials", detail::concat(">= ", partition.size()),
            partials.size());
  detail::check_conv_vector(where, "invstd", invstd, channels);
  detail::check_conv_vector(where, "dgamma", dgamma, channels);
  detail::check_conv_vector(where, "dbeta", dbeta, channels);
  detail::check_no_alias(where, "dgamma", dgamma, invstd, "invstd");
  detail::check_no_alias(where, "dbeta", dbeta, invstd, "invstd");
  detail::check_no_alias(where, "dbeta", dbeta, dgamma, "dgamma");
  for (index_t c = 0; c < channels; ++c) {
    const bn_backward_partial s = merge_bn_backward_channel(partition, partials.data(), c);
    dgamma[c] = T(s.sum_dy_xc * double(invstd[c]));
    dbeta[c] = T(s.sum_dy);
  }
}

namespace detail {

// dx from scale and the finished reductions (arguments already checked).
template <class T, class Arch, class GradMode>
void bn_backward_dx_run(const tensor_view<const T>& x, const tensor_view<const T>& dy, const T* mean, const T* invstd,
                        const T* scale, const T* dgamma, const T* dbeta, const tensor_view<T>& dx) {
  bn_backward_dx_sweep<GradMode, Arch, T>(
      x, dy, mean, invstd, [scale](index_t c) { return double(scale[c]); }, dbeta, dgamma, dx);
}

}  // namespace detail

// dx = scale * (dy - dbeta / m - xhat * dgamma / m),  xhat = (x - mean) * invstd,  m = N * H * W
// (the batch-norm input gradient, training mode). GradMode grad_overwrite overwrites dx,
// grad_accumulate adds to it (a DenseNet concatenation sums the gradients of every later layer).
// x, dy, dx: N x C x H x W views (channel slices allowed). dx may be exactly dy when
// overwriting; otherwise dx must not overlap x or dy.
template <class T, class Arch = xsimd::default_arch, class GradMode = grad_overwrite>
void bn_backward_dx(tensor_view<const T> x, tensor_view<const T> dy, vector_view<const T> mean,
                    vector_view<const T> invstd, vector_view<const T> scale, vector_view<const T> dgamma,
                    vector_view<const T> dbeta, tensor_view<T> dx, GradMode = {}) {
  constexpr const char* where = "bn_backward_dx";
  check_arg(!x.empty() && x.plane_contiguous(), where, "x", "non-empty, contiguous H x W planes", x.strides());
  detail::check_conv_tensor(where, "dy", dy, x.shape());
  detail::check_conv_tensor(where, "dx", dx, x.shape());
  const index_t channels = x.c();
  const char* names[5] = {"mean", "invstd", "scale", "dgamma", "dbeta"};
  const vector_view<const T> vecs[5] = {mean, invstd, scale, dgamma, dbeta};
  for (int i = 0; i < 5; ++i) {
    detail::check_conv_vector(where, names[i], vecs[i], channels);
    detail::check_no_alias(where, "dx", dx, vecs[i], names[i]);
  }
  detail::check_no_alias(where, "dx", dx, x, "x");
  const bool in_place = dx.data() == dy.data() && dx.strides() == dy.strides();
  check_arg(!overlaps(dx, dy) || (in_place && !GradMode::reads_output), where, "dx",
            "exactly dy (when overwriting) or no overlap with 'dy'", "overlapping memory");
  detail::bn_backward_dx_run<T, Arch, GradMode>(x, dy, mean.data(), invstd.data(), scale.data(), dgamma.data(),
                                                dbeta.data(), dx);
}

}  // namespace bnff
