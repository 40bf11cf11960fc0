// bnff: convolution forward with the batch statistics of its output (conv-with-stat-accumulation).
#pragma once

#include <vector>

#include "bnff/fusion/channel_stats_epilogue.hpp"
#include "bnff/ops/conv2d_forward.hpp"

namespace bnff {

// The statistics partition of the output of `problem`: one moments partial per
// (output channel, image, block), blocks aligned with the engine's column tiles.
// Merge a channel's partials with merge_channel(partition, partials, k).
template <class T, class Arch = xsimd::default_arch>
stats_partition conv2d_stats_partition(const conv2d_problem& problem) {
  problem.validate("conv2d_stats_partition");
  const conv2d_plan<T, Arch> plan(problem);
  return stats_partition{problem.n, problem.k, plan.plane, plan.tile};
}

namespace detail {

template <class T, class Arch>
void check_partials(const char* where, const conv2d_problem& pb, const tensor_view<T>& y,
                    const vector_view<moments>& partials, const vector_view<T>& workspace) {
  const index_t need = conv2d_stats_partition<T, Arch>(pb).size();
  check_arg(partials.size() >= need, where, "partials",
            detail::concat(">= ", need, " elements (conv2d_stats_partition)"), partials.size());
  check_no_alias(where, "partials", partials, y, "y");
  check_no_alias(where, "partials", partials, workspace, "workspace");
}

}  // namespace detail

// y = conv(x, w) as conv2d_forward (no bias: a BN follows), and
// partials[partition.slot(k, n, b)] = block_moments of block b of y[n, k], with
// partition = conv2d_stats_partition(problem). Partials are computed from each
// output block right after it is finished, while it is in cache; they equal
// block_moments over the finished y with the same partition, bit for bit.
template <class T, class Arch = xsimd::default_arch>
void conv2d_forward_stats(const conv2d_problem& problem, tensor_view<const T> x, tensor_view<const T> w,
                          tensor_view<T> y, vector_view<moments> partials, vector_view<T> workspace) {
  constexpr const char* where = "conv2d_forward_stats";
  detail::check_conv2d_forward<T, Arch>(where, problem, x, w, y, workspace);
  detail::check_partials<T, Arch>(where, problem, y, partials, workspace);
  const conv2d_plan<T, Arch> plan(problem);
  const channel_stats_epilogue<T, Arch> epilogue{{}, conv2d_stats_partition<T, Arch>(problem), partials.data()};
  detail::conv2d_forward_run(plan, x, w, y, identity_prologue{}, epilogue, workspace.data());
}

// As above, with the workspace allocated once for this call (outside every loop).
template <class T, class Arch = xsimd::default_arch>
void conv2d_forward_stats(const conv2d_problem& problem, tensor_view<const T> x, tensor_view<const T> w,
                          tensor_view<T> y, vector_view<moments> partials) {
  problem.validate("conv2d_forward_stats");
  std::vector<T> ws(std::size_t(conv2d_forward_workspace_size<T, Arch>(problem)));
  conv2d_forward_stats<T, Arch>(problem, x, w, y, partials, vector_view<T>(ws.data(), index_t(ws.size())));
}

}  // namespace bnff
