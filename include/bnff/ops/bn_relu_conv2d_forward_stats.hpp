// bnff: BN apply + ReLU, then convolution, with the batch statistics of its output
// (normalize-ReLU-conv and conv-with-stat-accumulation in one sweep).
#pragma once

#include <vector>

#include "bnff/fusion/scale_shift_relu_prologue.hpp"
#include "bnff/ops/conv2d_forward_stats.hpp"

namespace bnff {

// a = max(0, x * scale[c] + shift[c]) (never stored: applied while packing the input,
// padding zero after the transform), y = conv(a, w), and the partials of y as in
// conv2d_forward_stats. scale and shift: C values each (from the statistics of x).
template <class T, class Arch = xsimd::default_arch>
void bn_relu_conv2d_forward_stats(const conv2d_problem& problem, tensor_view<const T> x, vector_view<const T> scale,
                                  vector_view<const T> shift, tensor_view<const T> w, tensor_view<T> y,
                                  vector_view<moments> partials, vector_view<T> workspace) {
  constexpr const char* where = "bn_relu_conv2d_forward_stats";
  detail::check_conv2d_forward<T, Arch>(where, problem, x, w, y, workspace);
  detail::check_conv_vector(where, "scale", scale, problem.c);
  detail::check_conv_vector(where, "shift", shift, problem.c);
  detail::check_partials<T, Arch>(where, problem, y, partials, workspace);
  detail::check_no_alias(where, "y", y, scale, "scale");
  detail::check_no_alias(where, "y", y, shift, "shift");
  detail::check_no_alias(where, "workspace", workspace, scale, "scale");
  detail::check_no_alias(where, "workspace", workspace, shift, "shift");
  const conv2d_plan<T, Arch> plan(problem);
  const channel_stats_epilogue<T, Arch> epilogue{{}, conv2d_stats_partition<T, Arch>(problem), partials.data()};
  detail::conv2d_forward_run(plan, x, w, y, scale_shift_relu_prologue<T>{scale.data(), shift.data()}, epilogue,
                             workspace.data());
}

// As above, with the workspace allocated once for this call (outside every loop).
template <class T, class Arch = xsimd::default_arch>
void bn_relu_conv2d_forward_stats(const conv2d_problem& problem, tensor_view<const T> x, vector_view<const T> scale,
                                  vector_view<const T> shift, tensor_view<const T> w, tensor_view<T> y,
                                  vector_view<moments> partials) {
  problem.validate("bn_relu_conv2d_forward_stats");
  std::vector<T> ws(std::size_t(conv2d_forward_workspace_size<T, Arch>(problem)));
  bn_relu_conv2d_forward_stats<T, Arch>(problem, x, scale, shift, w, y, partials,
                                        vector_view<T>(ws.data(), index_t(ws.size())));
}

}  // namespace bnff
