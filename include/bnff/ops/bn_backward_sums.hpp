// bnff: the batch-norm backward split at its reductions, for synchronized BN: the
// per-channel sums as the flat buffer of stats/partials_buffer.hpp (2C + 1 doubles:
// sum(dy), sum(dy * (x - mean)) per channel, then the count), the parameter
// gradients from a rank's own sums, and dx from the sums of the global batch.
//   local sums -> SUM all-reduce (any communicator) -> bn_backward_dx_from_sums
// bn_relu_conv2d_backward and batch_norm_backward take a hook that runs the
// middle step between their reductions and their dx sweep.
#pragma once

#include <array>

#include "bnff/ops/bn_backward_dx.hpp"
#include "bnff/stats/partials_buffer.hpp"

namespace bnff {

namespace detail {

inline void check_sums_buffer(const char* where, vector_view<const double> sums, index_t channels) {
  check_arg(sums.size() >= bn_backward_sums_size(channels), where, "sums",
            concat(">= ", bn_backward_sums_size(channels), " doubles (bn_backward_sums_size)"), sums.size());
}

// The count of a sums buffer the dx sweep may divide by: at least the local count.
inline void check_sums_count(const char* where, double count, double local_count) {
  check_arg(count >= local_count && std::isfinite(count), where, "sums",
            concat("a count >= this shard's ", local_count, " elements per channel in the last slot"), count);
}

}  // namespace detail

// sums[2c] = sum(dy), sums[2c + 1] = sum(dy * (x - mean)) of every channel c, from
// the partials of bn_relu_backward_epilogue (conv2d_backward_data_bn_relu) merged in
// partition order (bn_backward_finalize's order and bits), and
// sums[2C] = images * plane, the elements per channel they cover.
inline void export_bn_backward_sums(const stats_partition& partition, vector_view<const bn_backward_partial> partials,
                                    vector_view<double> sums) {
  constexpr const char* where = "export_bn_backward_sums";
  const index_t channels = partition.channels;
  check_arg(channels > 0, where, "partition", "at least one channel", channels);
  check_arg(partials.size() >= partition.size(), where, "partials", detail::concat(">= ", partition.size()),
            partials.size());
  detail::check_sums_buffer(where, sums, channels);
  detail::check_buffer_disjoint(where, "sums", sums, "partials", partials);
  for (index_t c = 0; c < channels; ++c) {
    const bn_backward_partial s = merge_bn_backward_channel(partition, partials.data(), c);
    sums[2 * c] = s.sum_dy;
    sums[2 * c + 1] = s.sum_dy_xc;
  }
  sums[2 * channels] = double(partition.images) * double(partition.plane);
}

// dgamma[c] = sums[2c + 1] * invstd[c],  dbeta[c] = sums[2c]  (bn_backward_finalize's
// formula). From a rank's own sums, before they are all-reduced, these are the
// rank's share of the parameter gradients: data-parallel training then averages
// them across ranks with every other parameter gradient (as PyTorch's SyncBatchNorm
// and DDP do). From the global sums they are the gradients of the summed losses.
template <class T>
void bn_backward_params_from_sums(vector_view<const double> sums, vector_view<const detail::nondeduced_t<T>> invstd,
                                  vector_view<T> dgamma, vector_view<T> dbeta) {
  constexpr const char* where = "bn_backward_params_from_sums";
  const index_t channels = invstd.size();
  check_arg(channels > 0, where, "invstd", "one value per channel (at least one)", "0 elements");
  detail::check_sums_buffer(where, sums, channels);
  detail::check_conv_vector(where, "dgamma", dgamma, channels);
  detail::check_conv_vector(where, "dbeta", dbeta, channels);
  detail::check_buffer_disjoint(where, "dgamma", dgamma, "sums", sums);
  detail::check_buffer_disjoint(where, "dbeta", dbeta, "sums", sums);
  detail::check_buffer_disjoint(where, "dgamma", dgamma, "invstd", invstd);
  detail::check_buffer_disjoint(where, "dbeta", dbeta, "invstd", invstd);
  detail::check_buffer_disjoint(where, "dbeta", dbeta, "dgamma", dgamma);
  for (index_t c = 0; c < channels; ++c) {
    dgamma[c] = T(sums[2 * c + 1] * double(invstd[c]));
    dbeta[c] = T(sums[2 * c]);
  }
}

namespace detail {

// dx from a sums buffer (arguments already checked): the dbeta and dgamma of the
// sums rounded to T as bn_backward_finalize stores them, so that a rank's own sums
// give exactly bn_backward_dx's bits.
template <class T, class Arch, class GradMode>
void bn_backward_dx_from_sums_run(const tensor_view<const T>& x, const tensor_view<const T>& dy, const T* mean,
                                  const T* invstd, const T* scale, const double* sums, const tensor_view<T>& dx) {
  const index_t channels = x.c();
  bn_backward_dx_sweep_sums<GradMode, Arch, T>(
      x, dy, mean, invstd, [scale](index_t c) { return double(scale[c]); },
      [sums, invstd](index_t c) {
        return std::array<double, 2>{double(T(sums[2 * c])), double(T(sums[2 * c + 1] * double(invstd[c])))};
      },
      sums[2 * channels], dx);
}

}  // namespace detail

// dx = scale * (dy - dbeta / m - xhat * dgamma / m),  xhat = (x - mean) * invstd, with
// dbeta = sums[2c], dgamma = sums[2c + 1] * invstd[c] and m = sums[2C]: bn_backward_dx
// over sums that may cover more elements than x holds (x is this rank's shard of the
// global batch, the sums were all-reduced over every rank's). mean, invstd and scale
// must be the global batch's (from merged statistics). sums[2C] must be at least
// N * H * W of x. GradMode, views and aliasing as bn_backward_dx.
template <class T, class Arch = xsimd::default_arch, class GradMode = grad_overwrite>
void bn_backward_dx_from_sums(tensor_view<const T> x, tensor_view<const T> dy, vector_view<const T> mean,
                              vector_view<const T> invstd, vector_view<const T> scale, vector_view<const double> sums,
                              tensor_view<T> dx, GradMode = {}) {
  constexpr const char* where = "bn_backward_dx_from_sums";
  check_arg(!x.empty() && x.plane_contiguous(), where, "x", "non-empty, contiguous H x W planes", x.strides());
  detail::check_conv_tensor(where, "dy", dy, x.shape());
  detail::check_conv_tensor(where, "dx", dx, x.shape());
  const index_t channels = x.c();
  const char* names[3] = {"mean", "invstd", "scale"};
  const vector_view<const T> vecs[3] = {mean, invstd, scale};
  for (int i = 0; i < 3; ++i) {
    detail::check_conv_vector(where, names[i], vecs[i], channels);
    detail::check_no_alias(where, "dx", dx, vecs[i], names[i]);
  }
  detail::check_sums_buffer(where, sums, channels);
  detail::check_sums_count(where, sums[2 * channels], double(x.n()) * double(x.plane()));
  detail::check_disjoint(where, "dx", dx, "sums", sums);
  detail::check_no_alias(where, "dx", dx, x, "x");
  const bool in_place = dx.data() == dy.data() && dx.strides() == dy.strides();
  check_arg(!overlaps(dx, dy) || (in_place && !GradMode::reads_output), where, "dx",
            "exactly dy (when overwriting) or no overlap with 'dy'", "overlapping memory");
  detail::bn_backward_dx_from_sums_run<T, Arch, GradMode>(x, dy, mean.data(), invstd.data(), scale.data(), sums.data(),
                                                          dx);
}

}  // namespace bnff
