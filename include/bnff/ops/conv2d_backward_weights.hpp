// bnff: convolution weight (and bias) gradient, dw = sum_n dy_n * im2col(x_n)^T.
#pragma once

#include <vector>

#include "bnff/conv/conv2d_backward_engine.hpp"
#include "bnff/conv/conv2d_checks.hpp"
#include "bnff/fusion/identity_prologue.hpp"

namespace bnff {

// Workspace elements (of T) the weight-gradient operations need with `threads` threads.
template <class T, class Arch = xsimd::default_arch>
index_t conv2d_backward_weights_workspace_size(const conv2d_problem& problem, int threads = max_threads()) {
  problem.validate("conv2d_backward_weights_workspace_size");
  return conv2d_backward_weights_plan<T, Arch>(problem).workspace_size(threads > 0 ? threads : 1);
}

namespace detail {

// Checks shared by the weight-gradient operations: problem, x, dy, dw, dbias, workspace, aliasing.
template <class T, class Arch>
void check_conv2d_backward_weights(const char* where, const conv2d_problem& pb, const tensor_view<const T>& x,
                                   const tensor_view<const T>& dy, const tensor_view<T>& dw,
                                   const vector_view<T>& dbias, const vector_view<T>& workspace) {
  pb.validate(where);
  check_conv_tensor(where, "x", x, pb.input_shape());
  check_conv_tensor(where, "dy", dy, pb.output_shape());
  check_arg(!dw.empty(), where, "dw", "a non-empty view", "an empty view");
  check_equal(where, "dw", pb.filter_shape(), dw.shape());
  check_arg(dw.contiguous(), where, "dw", "a packed K x C x R x S tensor", dw.strides());
  check_arg(dbias.empty() || dbias.size() == pb.k, where, "dbias", detail::concat("empty or size ", pb.k),
            detail::concat("size ", dbias.size()));
  const index_t need = conv2d_backward_weights_workspace_size<T, Arch>(pb, max_threads());
  check_arg(workspace.size() >= need, where, "workspace",
            detail::concat(">= ", need, " elements (conv2d_backward_weights_workspace_size)"), workspace.size());
  check_no_alias(where, "dw", dw, x, "x");
  check_no_alias(where, "dw", dw, dy, "dy");
  check_no_alias(where, "dbias", dw, dbias, "dw");
  check_no_alias(where, "dbias", dbias, x, "x");
  check_no_alias(where, "dbias", dbias, dy, "dy");
  check_no_alias(where, "workspace", workspace, x, "x");
  check_no_alias(where, "workspace", workspace, dy, "dy");
  check_no_alias(where, "workspace", workspace, dw, "dw");
  check_no_alias(where, "workspace", workspace, dbias, "dbias");
}

// dbias[k] = sum over n, p, q of dy: one task per channel, images in order.
template <class T>
void conv2d_backward_bias_run(const tensor_view<const T>& dy, const vector_view<T>& dbias) {
  parallel_for(dy.c(), [&](index_t k) {
    double acc = 0;
    for (index_t n = 0; n < dy.n(); ++n) {
      const T* p = dy.plane_ptr(n, k);
      T part = 0;  // per plane in T (vectorizable), planes summed in double
      for (index_t i = 0; i < dy.plane(); ++i) part += p[i];
      acc += double(part);
    }
    dbias[k] = T(acc);
  });
}

}  // namespace detail

// dw[k, c, r, s] = sum over (n, p, q) of dy[n, k, p, q] * x[n, c, p * stride - pad + r, q * stride - pad + s]
// dbias[k] = sum over (n, p, q) of dy[n, k, p, q]   (dbias empty: not computed)
// x: N x C x H x W, dy: N x K x P x Q (channel slices allowed), dw: packed K x C x R x S,
// overwritten. The reduction over images and positions runs in one fixed order whatever
// the thread count. workspace: conv2d_backward_weights_workspace_size elements.
template <class T, class Arch = xsimd::default_arch>
void conv2d_backward_weights(const conv2d_problem& problem, tensor_view<const T> x, tensor_view<const T> dy,
                             tensor_view<T> dw, vector_view<T> dbias, vector_view<T> workspace) {
  detail::check_conv2d_backward_weights<T, Arch>("conv2d_backward_weights", problem, x, dy, dw, dbias, workspace);
  const conv2d_backward_weights_plan<T, Arch> plan(problem);
  detail::conv2d_backward_weights_run(plan, x, dy, dw.data(), plan.cols, identity_prologue{}, workspace.data());
  if (!dbias.empty()) detail::conv2d_backward_bias_run(dy, dbias);
}

// As above, with the workspace allocated once for this call (outside every loop).
template <class T, class Arch = xsimd::default_arch>
void conv2d_backward_weights(const conv2d_problem& problem, tensor_view<const T> x, tensor_view<const T> dy,
                             tensor_view<T> dw, vector_view<T> dbias = {}) {
  problem.validate("conv2d_backward_weights");
  std::vector<T> ws(std::size_t(conv2d_backward_weights_workspace_size<T, Arch>(problem)));
  conv2d_backward_weights<T, Arch>(problem, x, dy, dw, dbias, vector_view<T>(ws.data(), index_t(ws.size())));
}

}  // namespace bnff
