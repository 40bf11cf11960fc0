// bnff: the backward of BN + ReLU + convolution, fused into the convolution's
// gradients (the forward is bn_relu_conv2d_forward_stats):
//   data:    da = conv_transpose(dout, w), then in the epilogue, block by block while
//            it is in cache: dy = da * [x * scale + shift > 0] and the partials of
//            sum(dy), sum(dy * (x - mean))  -> bn_backward_finalize -> bn_backward_dx
//   weights: dw = sum_n dout_n * im2col(max(0, x * scale + shift))^T, the activation
//            recomputed while packing (never stored; padding zero after the transform).
#pragma once

#include <vector>

#include "bnff/fusion/bn_relu_backward_epilogue.hpp"
#include "bnff/fusion/scale_shift_relu_prologue.hpp"
#include "bnff/ops/bn_backward_dx.hpp"
#include "bnff/ops/bn_backward_sums.hpp"
#include "bnff/ops/conv2d_backward_data.hpp"
#include "bnff/ops/conv2d_backward_weights.hpp"

namespace bnff {

// The partition of the data gradient's partials: one bn_backward_partial per
// (input channel, image, block); merge with merge_bn_backward_channel or bn_backward_finalize.
template <class T, class Arch = xsimd::default_arch>
stats_partition bn_relu_conv2d_backward_partition(const conv2d_problem& problem) {
  problem.validate("bn_relu_conv2d_backward_partition");
  return conv2d_backward_data_plan<T, Arch>(problem, false).partition();
}

// dy = conv_transpose(dout, w) * [x * scale[c] + shift[c] > 0]   (the gradient at the BN output,
// through the ReLU whose mask is recomputed from the saved BN input x), and
// partials[partition.slot(c, n, b)] = (sum dy, sum dy * (x - mean[c])) over block b of dy[n, c].
// dout: N x K x P x Q, w: K x C x R x S, x and dy: N x C x H x W (channel slices allowed);
// dy is overwritten and must not overlap x. workspace: conv2d_backward_data_workspace_size.
template <class T, class Arch = xsimd::default_arch>
void conv2d_backward_data_bn_relu(const conv2d_problem& problem, tensor_view<const T> dout, tensor_view<const T> w,
                                  tensor_view<const T> x, vector_view<const T> scale, vector_view<const T> shift,
                                  vector_view<const T> mean, tensor_view<T> dy,
                                  vector_view<bn_backward_partial> partials, vector_view<T> workspace) {
  constexpr const char* where = "conv2d_backward_data_bn_relu";
  detail::check_conv2d_backward_data<T, Arch>(where, problem, dout, w, dy, workspace);
  detail::check_conv_tensor(where, "x", x, problem.input_shape());
  detail::check_conv_vector(where, "scale", scale, problem.c);
  detail::check_conv_vector(where, "shift", shift, problem.c);
  detail::check_conv_vector(where, "mean", mean, problem.c);
  const stats_partition part = bn_relu_conv2d_backward_partition<T, Arch>(problem);
  check_arg(partials.size() >= part.size(), where, "partials",
            detail::concat(">= ", part.size(), " elements (bn_relu_conv2d_backward_partition)"), partials.size());
  detail::check_no_alias(where, "dy", dy, x, "x");
  detail::check_no_alias(where, "dy", dy, scale, "scale");
  detail::check_no_alias(where, "dy", dy, shift, "shift");
  detail::check_no_alias(where, "dy", dy, mean, "mean");
  detail::check_no_alias(where, "workspace", workspace, x, "x");
  detail::check_no_alias(where, "partials", partials, x, "x");
  detail::check_no_alias(where, "partials", partials, dy, "dy");
  detail::check_no_alias(where, "partials", partials, dout, "dout");
  detail::check_no_alias(where, "partials", partials, workspace, "workspace");
  const conv2d_backward_data_plan<T, Arch> plan(problem, false);
  const bn_relu_backward_epilogue<T, Arch> epilogue{x, scale.data(), shift.data(), mean.data(), part, partials.data()};
  detail::conv2d_backward_data_run(plan, dout, w, dy, false, epilogue, workspace.data());
}

// dw = sum_n dout_n * im2col(a_n)^T with a = max(0, x * scale[c] + shift[c]) recomputed while
// packing (zero padding applies to a), dbias as conv2d_backward_weights (empty: not computed).
template <class T, class Arch = xsimd::default_arch>
void bn_relu_conv2d_backward_weights(const conv2d_problem& problem, tensor_view<const T> x, vector_view<const T> scale,
                                     vector_view<const T> shift, tensor_view<const T> dout, tensor_view<T> dw,
                                     vector_view<T> dbias, vector_view<T> workspace) {
  constexpr const char* where = "bn_relu_conv2d_backward_weights";
  detail::check_conv2d_backward_weights<T, Arch>(where, problem, x, dout, dw, dbias, workspace);
  detail::check_conv_vector(where, "scale", scale, problem.c);
  detail::check_conv_vector(where, "shift", shift, problem.c);
  detail::check_no_alias(where, "dw", dw, scale, "scale");
  detail::check_no_alias(where, "dw", dw, shift, "shift");
  detail::check_no_alias(where, "workspace", workspace, scale, "scale");
  detail::check_no_alias(where, "workspace", workspace, shift, "shift");
  const conv2d_backward_weights_plan<T, Arch> plan(problem);
  detail::conv2d_backward_weights_run(plan, x, dout, dw.data(), plan.cols,
                                      scale_shift_relu_prologue<T>{scale.data(), shift.data()}, workspace.data());
  if (!dbias.empty()) detail::conv2d_backward_bias_run(dout, dbias);
}

// Workspace elements the whole backward below needs (its steps run one after another).
template <class T, class Arch = xsimd::default_arch>
index_t bn_relu_conv2d_backward_workspace_size(const conv2d_problem& problem, int threads = max_threads()) {
  return std::max(conv2d_backward_data_workspace_size<T, Arch>(problem, threads),
                  conv2d_backward_weights_workspace_size<T, Arch>(problem, threads));
}

namespace detail {

// Every check of every step of bn_relu_conv2d_backward first, so that nothing is written on bad input.
template <class T, class Arch, class GradMode>
void check_bn_relu_conv2d_backward(const char* where, const conv2d_problem& problem, const tensor_view<const T>& x,
                                   vector_view<const T> mean, vector_view<const T> invstd, vector_view<const T> scale,
                                   vector_view<const T> shift, const tensor_view<const T>& w,
                                   const tensor_view<const T>& dout, const tensor_view<T>& dw, const tensor_view<T>& dy,
                                   vector_view<bn_backward_partial> partials, vector_view<T> dgamma,
                                   vector_view<T> dbeta, const tensor_view<T>& dx, vector_view<T> workspace) {
  const index_t need = bn_relu_conv2d_backward_workspace_size<T, Arch>(problem, max_threads());
  check_arg(workspace.size() >= need, where, "workspace",
            detail::concat(">= ", need, " elements (bn_relu_conv2d_backward_workspace_size)"), workspace.size());
  detail::check_conv2d_backward_weights<T, Arch>(where, problem, x, dout, dw, {}, workspace);
  detail::check_conv2d_backward_data<T, Arch>(where, problem, dout, w, dy, workspace);
  detail::check_conv_tensor(where, "dx", dx, problem.input_shape());
  const char* names[4] = {"mean", "invstd", "scale", "shift"};
  const vector_view<const T> vecs[4] = {mean, invstd, scale, shift};
  for (int i = 0; i < 4; ++i) {
    detail::check_conv_vector(where, names[i], vecs[i], problem.c);
    detail::check_no_alias(where, "dx", dx, vecs[i], names[i]);
    detail::check_no_alias(where, "dy", dy, vecs[i], names[i]);
    detail::check_no_alias(where, "dw", dw, vecs[i], names[i]);
    detail::check_no_alias(where, "dgamma", dgamma, vecs[i], names[i]);
    detail::check_no_alias(where, "dbeta", dbeta, vecs[i], names[i]);
  }
  detail::check_conv_vector(where, "dgamma", dgamma, problem.c);
  detail::check_conv_vector(where, "dbeta", dbeta, problem.c);
  const stats_partition part = bn_relu_conv2d_backward_partition<T, Arch>(problem);
  check_arg(partials.size() >= part.size(), where, "partials",
            detail::concat(">= ", part.size(), " elements (bn_relu_conv2d_backward_partition)"), partials.size());
  detail::check_no_alias(where, "dy", dy, x, "x");
  detail::check_no_alias(where, "dy", dy, dw, "dw");
  detail::check_no_alias(where, "dx", dx, x, "x");
  detail::check_no_alias(where, "dx", dx, dout, "dout");
  detail::check_no_alias(where, "dx", dx, w, "w");
  detail::check_no_alias(where, "dx", dx, dw, "dw");
  detail::check_no_alias(where, "dx", dx, workspace, "workspace");
  const bool in_place = dx.data() == dy.data() && dx.strides() == dy.strides();
  check_arg(!overlaps(dx, dy) || (in_place && !GradMode::reads_output), where, "dx",
            "exactly dy (when overwriting) or no overlap with 'dy'", "overlapping memory");
  detail::check_no_alias(where, "dw", dw, w, "w");
  detail::check_no_alias(where, "partials", partials, x, "x");
  detail::check_no_alias(where, "partials", partials, dy, "dy");
  detail::check_no_alias(where, "partials", partials, dx, "dx");
  detail::check_no_alias(where, "partials", partials, dout, "dout");
  detail::check_no_alias(where, "partials", partials, workspace, "workspace");
  detail::check_no_alias(where, "dgamma", dgamma, dbeta, "dbeta");
}

// The weight gradient and the data gradient with the BN partials in its epilogue (checked).
template <class T, class Arch>
void bn_relu_conv2d_backward_gradients(const conv2d_problem& problem, const tensor_view<const T>& x, const T* mean,
                                       const T* scale, const T* shift, const tensor_view<const T>& w,
                                       const tensor_view<const T>& dout, const tensor_view<T>& dw,
                                       const tensor_view<T>& dy, bn_backward_partial* partials, T* workspace) {
  const stats_partition part = bn_relu_conv2d_backward_partition<T, Arch>(problem);
  const conv2d_backward_weights_plan<T, Arch> wplan(problem);
  detail::conv2d_backward_weights_run(wplan, x, dout, dw.data(), wplan.cols, scale_shift_relu_prologue<T>{scale, shift},
                                      workspace);
  const conv2d_backward_data_plan<T, Arch> dplan(problem, false);
  const bn_relu_backward_epilogue<T, Arch> epilogue{x, scale, shift, mean, part, partials};
  detail::conv2d_backward_data_run(dplan, dout, w, dy, false, epilogue, workspace);
}

}  // namespace detail

// The whole backward of out = conv(max(0, BN(x)), w), BN in training mode with the saved
// statistics of x (mean, invstd; scale = gamma * invstd, shift = beta - mean * scale):
//   dw       by bn_relu_conv2d_backward_weights (activation recomputed),
//   dy       by conv2d_backward_data_bn_relu (mask and sums in the epilogue),
//   dgamma, dbeta by bn_backward_finalize,
//   dx       by bn_backward_dx (GradMode grad_overwrite, or grad_accumulate into a concatenation gradient).
// dy: scratch shaped like x (it may be exactly dx when overwriting: dx then replaces dy).
// partials: bn_relu_conv2d_backward_partition(problem).size() elements.
template <class T, class Arch = xsimd::default_arch, class GradMode>
void bn_relu_conv2d_backward(const conv2d_problem& problem, tensor_view<const T> x, vector_view<const T> mean,
                             vector_view<const T> invstd, vector_view<const T> scale, vector_view<const T> shift,
                             tensor_view<const T> w, tensor_view<const T> dout, tensor_view<T> dw, tensor_view<T> dy,
                             vector_view<bn_backward_partial> partials, vector_view<T> dgamma, vector_view<T> dbeta,
                             tensor_view<T> dx, GradMode, vector_view<T> workspace) {
  detail::check_bn_relu_conv2d_backward<T, Arch, GradMode>("bn_relu_conv2d_backward", problem, x, mean, invstd, scale,
                                                           shift, w, dout, dw, dy, partials, dgamma, dbeta, dx,
                                                           workspace);
  detail::bn_relu_conv2d_backward_gradients<T, Arch>(problem, x, mean.data(), scale.data(), shift.data(), w, dout, dw,
                                                     dy, partials.data(), workspace.data());
  const stats_partition part = bn_relu_conv2d_backward_partition<T, Arch>(problem);
  for (index_t c = 0; c < problem.c; ++c) {
    const bn_backward_partial s = merge_bn_backward_channel(part, partials.data(), c);
    dgamma[c] = T(s.sum_dy_xc * double(invstd[c]));
    dbeta[c] = T(s.sum_dy);
  }
  detail::bn_backward_dx_run<T, Arch, GradMode>(x, dy, mean.data(), invstd.data(), scale.data(), dgamma.data(),
                                                dbeta.data(), dx);
}

// The same backward with a synchronization point between the BN reductions and
// the dx sweep, for BN synchronized across processes (data-parallel training):
//   dw, dy and the partials as above; sums = this shard's sums (export_bn_backward_sums,
//   the layout of stats/partials_buffer.hpp); dgamma, dbeta from them (this rank's share,
//   bn_backward_params_from_sums); then sync(sums), which must leave in `sums` the sums
//   over the global batch (e.g. an in-place SUM all-reduce of the 2C + 1 doubles);
//   then dx by bn_backward_dx_from_sums. mean, invstd, scale, shift must come from the
//   global batch's statistics. sync may throw (the outputs before it are then written);
//   a count below this shard's after it is a bnff::error. With a sync that leaves the
//   sums alone the results are bitwise those of the overload without it.
template <class T, class Arch = xsimd::default_arch, class GradMode, class SumsSync>
void bn_relu_conv2d_backward(const conv2d_problem& problem, tensor_view<const T> x, vector_view<const T> mean,
                             vector_view<const T> invstd, vector_view<const T> scale, vector_view<const T> shift,
                             tensor_view<const T> w, tensor_view<const T> dout, tensor_view<T> dw, tensor_view<T> dy,
                             vector_view<bn_backward_partial> partials, vector_view<T> dgamma, vector_view<T> dbeta,
                             tensor_view<T> dx, GradMode, vector_view<T> workspace, vector_view<double> sums,
                             SumsSync&& sync) {
  constexpr const char* where = "bn_relu_conv2d_backward";
  detail::check_bn_relu_conv2d_backward<T, Arch, GradMode>(where, problem, x, mean, invstd, scale, shift, w, dout, dw,
                                                           dy, partials, dgamma, dbeta, dx, workspace);
  detail::check_sums_buffer(where, sums, problem.c);
  detail::check_no_alias(where, "sums", sums, x, "x");
  detail::check_no_alias(where, "sums", sums, dy, "dy");
  detail::check_no_alias(where, "sums", sums, dx, "dx");
  detail::check_no_alias(where, "sums", sums, dw, "dw");
  detail::check_no_alias(where, "sums", sums, workspace, "workspace");
  detail::check_buffer_disjoint(where, "sums", sums, "partials", partials);
  detail::check_buffer_disjoint(where, "sums", sums, "dgamma", dgamma);
  detail::check_buffer_disjoint(where, "sums", sums, "dbeta", dbeta);
  detail::check_buffer_disjoint(where, "sums", sums, "invstd", invstd);
  detail::bn_relu_conv2d_backward_gradients<T, Arch>(problem, x, mean.data(), scale.data(), shift.data(), w, dout, dw,
                                                     dy, partials.data(), workspace.data());
  const stats_partition part = bn_relu_conv2d_backward_partition<T, Arch>(problem);
  export_bn_backward_sums(part, partials, sums);
  bn_backward_params_from_sums<T>(sums, invstd, dgamma, dbeta);
  sync(sums);
  detail::check_sums_count(where, sums[2 * problem.c], double(problem.n) * double(problem.h) * double(problem.w));
  detail::bn_backward_dx_from_sums_run<T, Arch, GradMode>(x, dy, mean.data(), invstd.data(), scale.data(), sums.data(),
                                                          dx);
}

}  // namespace bnff
