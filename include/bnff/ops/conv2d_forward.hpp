// bnff: convolution forward, y = conv(x, w) + bias.
#pragma once

#include <vector>

#include "bnff/conv/conv2d_checks.hpp"
#include "bnff/conv/conv2d_engine.hpp"
#include "bnff/fusion/identity_prologue.hpp"
#include "bnff/fusion/store_epilogue.hpp"

namespace bnff {

// Workspace elements (of T) the convolution operations need with `threads` threads:
// the packed weights and one packed input block per thread.
template <class T, class Arch = xsimd::default_arch>
index_t conv2d_forward_workspace_size(const conv2d_problem& problem, int threads = max_threads()) {
  problem.validate("conv2d_forward_workspace_size");
  return conv2d_plan<T, Arch>(problem).workspace_size(threads > 0 ? threads : 1);
}

namespace detail {

// Checks shared by every forward operation: problem, x, w, y, workspace, aliasing.
template <class T, class Arch>
void check_conv2d_forward(const char* where, const conv2d_problem& pb, const tensor_view<const T>& x,
                          const tensor_view<const T>& w, const tensor_view<T>& y, const vector_view<T>& workspace) {
  pb.validate(where);
  check_conv_tensor(where, "x", x, pb.input_shape());
  check_arg(!w.empty(), where, "w", "a non-empty view", "an empty view");
  check_equal(where, "w", pb.filter_shape(), w.shape());
  check_conv_tensor(where, "y", y, pb.output_shape());
  const index_t need = conv2d_plan<T, Arch>(pb).workspace_size(max_threads());
  check_arg(workspace.size() >= need, where, "workspace",
            detail::concat(">= ", need, " elements (conv2d_forward_workspace_size)"), workspace.size());
  check_no_alias(where, "y", y, x, "x");
  check_no_alias(where, "y", y, w, "w");
  check_no_alias(where, "workspace", workspace, x, "x");
  check_no_alias(where, "workspace", workspace, w, "w");
  check_no_alias(where, "workspace", workspace, y, "y");
}

}  // namespace detail

// y[n, k] = sum_{c, r, s} w[k, c, r, s] * x[n, c, p * stride - pad + r, q * stride - pad + s] + bias[k]
// x: N x C x H x W, w: K x C x R x S, y: N x K x P x Q (x and y may be channel slices; each
// H x W plane contiguous). bias: empty or K values. workspace: conv2d_forward_workspace_size
// elements, not shared with any argument. Throws bnff::error before writing on bad input.
template <class T, class Arch = xsimd::default_arch>
void conv2d_forward(const conv2d_problem& problem, tensor_view<const T> x, tensor_view<const T> w,
                    vector_view<const T> bias, tensor_view<T> y, vector_view<T> workspace) {
  constexpr const char* where = "conv2d_forward";
  detail::check_conv2d_forward<T, Arch>(where, problem, x, w, y, workspace);
  check_arg(bias.empty() || bias.size() == problem.k, where, "bias", detail::concat("empty or size ", problem.k),
            detail::concat("size ", bias.size()));
  detail::check_no_alias(where, "y", y, bias, "bias");
  detail::check_no_alias(where, "workspace", workspace, bias, "bias");
  const conv2d_plan<T, Arch> plan(problem);
  detail::conv2d_forward_run(plan, x, w, y, identity_prologue{},
                             store_epilogue<T>{bias.empty() ? nullptr : bias.data()}, workspace.data());
}

// As above, with the workspace allocated once for this call (outside every loop).
template <class T, class Arch = xsimd::default_arch>
void conv2d_forward(const conv2d_problem& problem, tensor_view<const T> x, tensor_view<const T> w,
                    vector_view<const T> bias, tensor_view<T> y) {
  problem.validate("conv2d_forward");
  std::vector<T> ws(std::size_t(conv2d_forward_workspace_size<T, Arch>(problem)));
  conv2d_forward<T, Arch>(problem, x, w, bias, y, vector_view<T>(ws.data(), index_t(ws.size())));
}

}  // namespace bnff
