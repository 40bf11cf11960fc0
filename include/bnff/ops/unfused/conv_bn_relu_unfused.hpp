// bnff: the unfused forward a conventional framework runs, one sweep per step:
// conv, statistics, BN apply, ReLU. Each pass is bnff's own standalone kernel
// (batch_norm_stats_partials, batch_norm_apply_affine, unfused::relu) and the
// convolution is the same engine as the fused operations, so a benchmark of
// fused against unfused measures the sweeps that fusion removes and nothing else.
#pragma once

#include <xsimd/xsimd.hpp>

#include "bnff/ops/batch_norm_inference.hpp"
#include "bnff/ops/batch_norm_stats.hpp"
#include "bnff/ops/conv2d_forward_stats.hpp"
#include "bnff/ops/unfused/batch_norm_relu_pass.hpp"

namespace bnff::unfused {

// conv, then a statistics pass over y (the partition of the fused epilogue, so the
// partials are the same bits). partials: at least conv2d_stats_partition(problem).size().
template <class T, class Arch = xsimd::default_arch>
void conv2d_forward_stats(const conv2d_problem& problem, tensor_view<const T> x, tensor_view<const T> w,
                          tensor_view<T> y, vector_view<moments> partials, vector_view<T> workspace) {
  const stats_partition part = conv2d_stats_partition<T, Arch>(problem);
  check_arg(partials.size() >= part.size(), "unfused::conv2d_forward_stats", "partials",
            detail::concat(">= ", part.size(), " elements (conv2d_stats_partition)"), partials.size());
  conv2d_forward<T, Arch>(problem, x, w, vector_view<const T>{}, y, workspace);
  batch_norm_stats_partials<Arch>(tensor_view<const T>(y), part, vector_view<moments>(partials.data(), part.size()));
}

// BN apply pass (x -> z), ReLU pass (z -> z, in place), conv (z -> y), statistics pass over y.
// z: a tensor shaped like x, the stored normalized and activated input a fused run never writes.
template <class T, class Arch = xsimd::default_arch>
void bn_relu_conv2d_forward_stats(const conv2d_problem& problem, tensor_view<const T> x, vector_view<const T> scale,
                                  vector_view<const T> shift, tensor_view<const T> w, tensor_view<T> y,
                                  vector_view<moments> partials, tensor_view<T> z, vector_view<T> workspace) {
  batch_norm_apply_affine<bn_identity, Arch, T>(x, z, scale, shift);
  unfused::relu<Arch, T>(tensor_view<const T>(z), z);
  unfused::conv2d_forward_stats<T, Arch>(problem, tensor_view<const T>(z), w, y, partials, workspace);
}

}  // namespace bnff::unfused
