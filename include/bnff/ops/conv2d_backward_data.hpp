// bnff: convolution data gradient, dx = conv_transpose(dy, w).
#pragma once

#include <vector>

#include "bnff/conv/conv2d_backward_engine.hpp"
#include "bnff/conv/conv2d_checks.hpp"
#include "bnff/fusion/store_epilogue.hpp"
#include "bnff/ops/bn_grad_mode.hpp"

namespace bnff {

// Workspace elements (of T) conv2d_backward_data needs with `threads` threads.
template <class T, class Arch = xsimd::default_arch>
index_t conv2d_backward_data_workspace_size(const conv2d_problem& problem, int threads = max_threads()) {
  problem.validate("conv2d_backward_data_workspace_size");
  const int t = threads > 0 ? threads : 1;
  // The larger of both paths: the same workspace serves overwrite and accumulate.
  return std::max(conv2d_backward_data_plan<T, Arch>(problem, false).workspace_size(t),
                  conv2d_backward_data_plan<T, Arch>(problem, true).workspace_size(t));
}

namespace detail {

// Checks shared by the data-gradient operations: problem, dy, w, dx, workspace, aliasing.
template <class T, class Arch>
void check_conv2d_backward_data(const char* where, const conv2d_problem& pb, const tensor_view<const T>& dy,
                                const tensor_view<const T>& w, const tensor_view<T>& dx,
                                const vector_view<T>& workspace) {
  pb.validate(where);
  check_conv_tensor(where, "dy", dy, pb.output_shape());
  check_arg(!w.empty(), where, "w", "a non-empty view", "an empty view");
  check_equal(where, "w", pb.filter_shape(), w.shape());
  check_conv_tensor(where, "dx", dx, pb.input_shape());
  const index_t need = conv2d_backward_data_workspace_size<T, Arch>(pb, max_threads());
  check_arg(workspace.size() >= need, where, "workspace",
            detail::concat(">= ", need, " elements (conv2d_backward_data_workspace_size)"), workspace.size());
  check_no_alias(where, "dx", dx, dy, "dy");
  check_no_alias(where, "dx", dx, w, "w");
  check_no_alias(where, "workspace", workspace, dy, "dy");
  check_no_alias(where, "workspace", workspace, w, "w");
  check_no_alias(where, "workspace", workspace, dx, "dx");
}

}  // namespace detail

// dx[n, c, h, w] = sum over (k, p, q, r, s) with h = p * stride - pad + r, w = q * stride - pad + s
//                  of dy[n, k, p, q] * w[k, c, r, s]      (the gradient of sum(conv(x, w) * dy) in x)
// dy: N x K x P x Q, w: K x C x R x S, dx: N x C x H x W (dy and dx may be channel slices;
// each plane contiguous). GradMode grad_overwrite overwrites dx, grad_accumulate adds to it
// (a tensor read by several layers sums their gradients). workspace: conv2d_backward_data_workspace_size
// elements, not shared with any argument. Throws bnff::error before writing on bad input.
template <class T, class Arch = xsimd::default_arch, class GradMode>
void conv2d_backward_data(const conv2d_problem& problem, tensor_view<const T> dy, tensor_view<const T> w,
                          tensor_view<T> dx, GradMode, vector_view<T> workspace) {
  detail::check_conv2d_backward_data<T, Arch>("conv2d_backward_data", problem, dy, w, dx, workspace);
  // The engine picks its path (forward-as-transpose or col2im) from the mode at plan time.
  constexpr bool accumulate = GradMode::reads_output;
  const conv2d_backward_data_plan<T, Arch> plan(problem, accumulate);
  detail::conv2d_backward_data_run(plan, dy, w, dx, accumulate, store_epilogue<T>{}, workspace.data());
}

// As above, with the workspace allocated once for this call (outside every loop).
template <class T, class Arch = xsimd::default_arch, class GradMode = grad_overwrite>
void conv2d_backward_data(const conv2d_problem& problem, tensor_view<const T> dy, tensor_view<const T> w,
                          tensor_view<T> dx, GradMode mode = {}) {
  problem.validate("conv2d_backward_data");
  std::vector<T> ws(std::size_t(conv2d_backward_data_workspace_size<T, Arch>(problem)));
  conv2d_backward_data<T, Arch>(problem, dy, w, dx, mode, vector_view<T>(ws.data(), index_t(ws.size())));
}

}  // namespace bnff
