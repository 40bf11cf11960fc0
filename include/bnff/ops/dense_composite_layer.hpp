// bnff: a DenseNet-BC composite layer, BN-ReLU-conv1x1 -> BN-ReLU-conv3x3, forward and
// backward, fused (BNFF) and unfused (one sweep per step), over channel slices of one
// concatenation buffer.
//
// Fused forward (inter-composite-layer fusion: BN1 costs no sweep):
//   BN1 parameters from the input channels' moments (computed by the convolutions that
//   produced them), conv1 = bn_relu_conv2d_forward_stats (BN1+ReLU in the prologue, Y1's
//   partials in the epilogue), BN2 parameters, conv2 = bn_relu_conv2d_forward_stats (the
//   output's moments, which every later layer reuses).
// Fused backward: bn_relu_conv2d_backward for conv2 (dY1 replaces its dy scratch), then for
//   conv1 with dx accumulated into the concatenation gradient.
// Kept from forward to backward: Y1 and per-channel vectors only (linear in depth).
// Unfused forward: statistics passes over the input and Y1, BN apply and ReLU passes storing
//   A1 and A2, plain convolutions. Backward: unfused::bn_relu_conv2d_backward twice.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "bnff/ops/batch_norm_finalize.hpp"
#include "bnff/ops/batch_norm_stats.hpp"
#include "bnff/ops/bn_relu_conv2d_backward.hpp"
#include "bnff/ops/bn_relu_conv2d_forward_stats.hpp"
#include "bnff/ops/unfused/bn_relu_conv2d_backward_unfused.hpp"
#include "bnff/ops/unfused/conv_bn_relu_unfused.hpp"

namespace bnff {

// BN-ReLU-conv1x1(c_in -> bottleneck) -> BN-ReLU-conv3x3(bottleneck -> growth, pad 1).
struct composite_layer_problem {
  index_t n = 1, c_in = 1, h = 1, w = 1, bottleneck = 1, growth = 1;
  constexpr conv2d_problem conv1() const noexcept { return {n, c_in, h, w, bottleneck, 1, 1, 0, 1}; }
  constexpr conv2d_problem conv2() const noexcept { return {n, bottleneck, h, w, growth, 3, 3, 1, 1}; }
  constexpr shape4 input_shape() const noexcept { return {n, c_in, h, w}; }
  constexpr shape4 bottleneck_shape() const noexcept { return {n, bottleneck, h, w}; }
  constexpr shape4 output_shape() const noexcept { return {n, growth, h, w}; }
  void validate(const char* where) const {
    conv1().validate(where);
    conv2().validate(where);
  }
};

// The layer's parameters (views over the caller's memory).
template <class T>
struct composite_layer_params {
  tensor_view<const T> w1, w2;                        // bottleneck x c_in x 1 x 1, growth x bottleneck x 3 x 3
  vector_view<const T> gamma1, beta1, gamma2, beta2;  // c_in, c_in, bottleneck, bottleneck
};

// The gradients of the parameters, overwritten by backward.
template <class T>
struct composite_layer_grads {
  tensor_view<T> dw1, dw2;
  vector_view<T> dgamma1, dbeta1, dgamma2, dbeta2;
};

namespace detail {

template <class T>
void check_params(const char* where, const composite_layer_problem& pb, const composite_layer_params<T>& p,
                  double eps) {
  check_arg(!p.w1.empty(), where, "params.w1", "a non-empty view", "an empty view");
  check_equal(where, "params.w1", pb.conv1().filter_shape(), p.w1.shape());
  check_arg(!p.w2.empty(), where, "params.w2", "a non-empty view", "an empty view");
  check_equal(where, "params.w2", pb.conv2().filter_shape(), p.w2.shape());
  check_conv_vector(where, "params.gamma1", p.gamma1, pb.c_in);
  check_conv_vector(where, "params.beta1", p.beta1, pb.c_in);
  check_conv_vector(where, "params.gamma2", p.gamma2, pb.bottleneck);
  check_conv_vector(where, "params.beta2", p.beta2, pb.bottleneck);
  check_arg(eps > 0, where, "eps", "> 0", eps);
}

template <class T>
void check_grads(const char* where, const composite_layer_problem& pb, const composite_layer_grads<T>& g) {
  check_arg(!g.dw1.empty(), where, "grads.dw1", "a non-empty view", "an empty view");
  check_equal(where, "grads.dw1", pb.conv1().filter_shape(), g.dw1.shape());
  check_arg(!g.dw2.empty(), where, "grads.dw2", "a non-empty view", "an empty view");
  check_equal(where, "grads.dw2", pb.conv2().filter_shape(), g.dw2.shape());
  check_conv_vector(where, "grads.dgamma1", g.dgamma1, pb.c_in);
  check_conv_vector(where, "grads.dbeta1", g.dbeta1, pb.c_in);
  check_conv_vector(where, "grads.dgamma2", g.dgamma2, pb.bottleneck);
  check_conv_vector(where, "grads.dbeta2", g.dbeta2, pb.bottleneck);
  const char* names[4] = {"grads.dgamma1", "grads.dbeta1", "grads.dgamma2", "grads.dbeta2"};
  const vector_view<T> vecs[4] = {g.dgamma1, g.dbeta1, g.dgamma2, g.dbeta2};
  for (int i = 0; i < 4; ++i) {
    check_no_alias(where, names[i], g.dw1, vecs[i], "grads.dw1");
    check_no_alias(where, names[i], g.dw2, vecs[i], "grads.dw2");
    for (int j = 0; j < i; ++j) check_no_alias(where, names[i], vecs[i], vecs[j], names[j]);
  }
}

}  // namespace detail

// What the fused layer keeps from forward to backward and the scratch both passes use,
// allocated once at construction (forward and backward allocate nothing). Workspace sizes
// are for `threads` threads: run with at most that many.
template <class T, class Arch = xsimd::default_arch>
class dense_composite_layer {
 public:
  explicit dense_composite_layer(const composite_layer_problem& pb, int threads = max_threads()) : pb_(pb) {
    pb.validate("dense_composite_layer");
    const conv2d_problem p1 = pb.conv1(), p2 = pb.conv2();
    y1_.resize(std::size_t(pb.bottleneck_shape().size()));
    for (auto* v : {&mean1_, &invstd1_, &scale1_, &shift1_}) v->resize(std::size_t(pb.c_in));
    for (auto* v : {&mean2_, &invstd2_, &scale2_, &shift2_}) v->resize(std::size_t(pb.bottleneck));
    y1_moments_.resize(std::size_t(pb.bottleneck));
    fwd_partials_.resize(
        std::size_t(std::max(conv2d_stats_partition<T, Arch>(p1).size(), conv2d_stats_partition<T, Arch>(p2).size())));
    bwd_partials_.resize(std::size_t(std::max(bn_relu_conv2d_backward_partition<T, Arch>(p1).size(),
                                              bn_relu_conv2d_backward_partition<T, Arch>(p2).size())));
    dy2_.resize(std::size_t(pb.bottleneck_shape().size()));
    dy1_.resize(std::size_t(pb.input_shape().size()));
    ws_.resize(std::size_t(std::max({conv2d_forward_workspace_size<T, Arch>(p1, threads),
                                     conv2d_forward_workspace_size<T, Arch>(p2, threads),
                                     bn_relu_conv2d_backward_workspace_size<T, Arch>(p1, threads),
                                     bn_relu_conv2d_backward_workspace_size<T, Arch>(p2, threads)})));
  }

  const composite_layer_problem& problem() const noexcept { return pb_; }

  // Bytes kept from forward to backward: Y1 (conv1's output, pre-BN) and the BN
  // parameters of both BNs (mean, invstd, scale, shift per channel).
  static std::size_t activation_bytes(const composite_layer_problem& pb) noexcept {
    return sizeof(T) * std::size_t(pb.bottleneck_shape().size() + 4 * (pb.c_in + pb.bottleneck));
  }

  // out = conv2(relu(BN2(conv1(relu(BN1(x)))))), BN in training mode.
  // x: the input (a channel slice of the concatenation), x_stats: its channels' moments
  // (from the convolutions that produced them), out: the new channels (a slice of the
  // concatenation), out_stats: their moments (for every later layer), growth elements.
  // y1_stats (optional, empty or bottleneck elements): Y1's moments, for running statistics.
  void forward(tensor_view<const T> x, vector_view<const moments> x_stats, const composite_layer_params<T>& p,
               double eps, tensor_view<T> out, vector_view<moments> out_stats) {
    constexpr const char* where = "dense_composite_layer::forward";
    detail::check_params(where, pb_, p, eps);
    detail::check_conv_tensor(where, "x", x, pb_.input_shape());
    detail::check_conv_tensor(where, "out", out, pb_.output_shape());
    check_arg(x_stats.size() == pb_.c_in, where, "x_stats", detail::concat("size ", pb_.c_in), x_stats.size());
    check_arg(out_stats.size() == pb_.growth, where, "out_stats", detail::concat("size ", pb_.growth),
              out_stats.size());
    for (index_t c = 0; c < pb_.c_in; ++c)
      check_arg(x_stats[c].count >= 1, where, "x_stats", "count >= 1 in every channel",
                detail::concat("count ", x_stats[c].count, " in channel ", c));
    detail::check_no_alias(where, "out", out, x, "x");
    detail::check_no_alias(where, "out_stats", out_stats, x_stats, "x_stats");
    const conv2d_problem p1 = pb_.conv1(), p2 = pb_.conv2();
    // The convolutions check the rest (aliasing of out with the weights, workspace) before writing.
    detail::check_conv2d_forward<T, Arch>(where, p2, tensor_view<const T>(y1()), p.w2, out, ws());

    batch_norm_finalize<T>(x_stats, p.gamma1, p.beta1, eps, mvec(mean1_), mvec(invstd1_), mvec(scale1_), mvec(shift1_));
    bn_relu_conv2d_forward_stats<T, Arch>(p1, x, vec(scale1_), vec(shift1_), p.w1, y1(), partials1(), ws());
    const stats_partition part1 = conv2d_stats_partition<T, Arch>(p1);
    for (index_t c = 0; c < pb_.bottleneck; ++c)
      y1_moments_[std::size_t(c)] = merge_channel(part1, fwd_partials_.data(), c);
    batch_norm_finalize<T>(y1_stats(), p.gamma2, p.beta2, eps, mvec(mean2_), mvec(invstd2_), mvec(scale2_),
                           mvec(shift2_));
    bn_relu_conv2d_forward_stats<T, Arch>(p2, tensor_view<const T>(y1()), vec(scale2_), vec(shift2_), p.w2, out,
                                          partials2(), ws());
    const stats_partition part2 = conv2d_stats_partition<T, Arch>(p2);
    for (index_t k = 0; k < pb_.growth; ++k) out_stats[k] = merge_channel(part2, fwd_partials_.data(), k);
  }

  // Gradients of the last forward: dout is the gradient of its output (complete: every later
  // layer has added to it); dx receives the gradient of its input (GradMode grad_accumulate adds,
  // as a concatenation gradient sums every reader's share; grad_overwrite writes); g receives the parameter gradients.
  // x and p must be those of the forward.
  template <class GradMode>
  void backward(tensor_view<const T> x, const composite_layer_params<T>& p, tensor_view<const T> dout,
                tensor_view<T> dx, GradMode mode, const composite_layer_grads<T>& g) {
    constexpr const char* where = "dense_composite_layer::backward";
    detail::check_params(where, pb_, p, 1.0);
    detail::check_grads(where, pb_, g);
    detail::check_conv_tensor(where, "x", x, pb_.input_shape());
    detail::check_conv_tensor(where, "dout", dout, pb_.output_shape());
    detail::check_conv_tensor(where, "dx", dx, pb_.input_shape());
    detail::check_no_alias(where, "dx", dx, x, "x");
    detail::check_no_alias(where, "dx", dx, dout, "dout");
    detail::check_no_alias(where, "dx", dx, p.w1, "params.w1");
    detail::check_no_alias(where, "dx", dx, p.w2, "params.w2");
    detail::check_no_alias(where, "grads.dw1", g.dw1, x, "x");
    detail::check_no_alias(where, "grads.dw1", g.dw1, dout, "dout");
    detail::check_no_alias(where, "grads.dw2", g.dw2, x, "x");
    detail::check_no_alias(where, "grads.dw2", g.dw2, dout, "dout");
    detail::check_no_alias(where, "grads.dw2", g.dw2, dx, "dx");
    detail::check_no_alias(where, "grads.dw1", g.dw1, dx, "dx");
    detail::check_no_alias(where, "grads.dw1", g.dw1, g.dw2, "grads.dw2");
    const conv2d_problem p1 = pb_.conv1(), p2 = pb_.conv2();
    // conv2 and BN2: dY1 replaces the dy2 scratch.
    bn_relu_conv2d_backward<T, Arch>(p2, tensor_view<const T>(y1()), vec(mean2_), vec(invstd2_), vec(scale2_),
                                     vec(shift2_), p.w2, dout, g.dw2, dy2(), bwd_partials(), g.dgamma2, g.dbeta2, dy2(),
                                     grad_overwrite{}, ws());
    // conv1 and BN1, into the concatenation gradient.
    bn_relu_conv2d_backward<T, Arch>(p1, x, vec(mean1_), vec(invstd1_), vec(scale1_), vec(shift1_), p.w1,
                                     tensor_view<const T>(dy2()), g.dw1, dy1(), bwd_partials(), g.dgamma1, g.dbeta1, dx,
                                     mode, ws());
  }

  // Y1's moments from the last forward (for the running statistics of BN2).
  vector_view<const moments> y1_stats() const noexcept { return {y1_moments_.data(), pb_.bottleneck}; }
  // BN1's batch statistics from the last forward.
  vector_view<const T> mean1() const noexcept { return vec(mean1_); }
  vector_view<const T> invstd1() const noexcept { return vec(invstd1_); }

 private:
  tensor_view<T> y1() { return {y1_.data(), pb_.bottleneck_shape()}; }
  tensor_view<T> dy2() { return {dy2_.data(), pb_.bottleneck_shape()}; }
  tensor_view<T> dy1() { return {dy1_.data(), pb_.input_shape()}; }
  vector_view<T> ws() { return {ws_.data(), index_t(ws_.size())}; }
  vector_view<moments> partials1() { return {fwd_partials_.data(), index_t(fwd_partials_.size())}; }
  vector_view<moments> partials2() { return partials1(); }
  vector_view<bn_backward_partial> bwd_partials() { return {bwd_partials_.data(), index_t(bwd_partials_.size())}; }
  static vector_view<const T> vec(const std::vector<T>& v) { return {v.data(), index_t(v.size())}; }
  static vector_view<T> mvec(std::vector<T>& v) { return {v.data(), index_t(v.size())}; }

  composite_layer_problem pb_;
  std::vector<T> y1_, mean1_, invstd1_, scale1_, shift1_, mean2_, invstd2_, scale2_, shift2_;
  std::vector<moments> y1_moments_, fwd_partials_;
  std::vector<bn_backward_partial> bwd_partials_;
  std::vector<T> dy2_, dy1_, ws_;
};

namespace unfused {

// The same layer as a conventional framework runs it: every step its own sweep, the input's
// statistics recomputed by this layer, BN+ReLU outputs A1 and A2 stored for backward (the
// ReLU in place over the BN output), the ReLU mask read back from them.
template <class T, class Arch = xsimd::default_arch>
class dense_composite_layer {
 public:
  explicit dense_composite_layer(const composite_layer_problem& pb, int threads = max_threads()) : pb_(pb) {
    pb.validate("unfused::dense_composite_layer");
    const conv2d_problem p1 = pb.conv1(), p2 = pb.conv2();
    a1_.resize(std::size_t(pb.input_shape().size()));
    y1_.resize(std::size_t(pb.bottleneck_shape().size()));
    a2_.resize(std::size_t(pb.bottleneck_shape().size()));
    for (auto* v : {&mean1_, &invstd1_, &scale1_, &shift1_}) v->resize(std::size_t(pb.c_in));
    for (auto* v : {&mean2_, &invstd2_, &scale2_, &shift2_}) v->resize(std::size_t(pb.bottleneck));
    merged_.resize(std::size_t(std::max(pb.c_in, pb.bottleneck)));
    da2_.resize(std::size_t(pb.bottleneck_shape().size()));
    da1_.resize(std::size_t(pb.input_shape().size()));
    ws_.resize(std::size_t(std::max({conv2d_forward_workspace_size<T, Arch>(p1, threads),
                                     conv2d_forward_workspace_size<T, Arch>(p2, threads),
                                     bn_relu_conv2d_backward_workspace_size<T, Arch>(p1, threads),
                                     bn_relu_conv2d_backward_workspace_size<T, Arch>(p2, threads)})));
  }

  // Bytes kept from forward to backward: A1 (activated input), Y1, A2 (activated Y1) and
  // the BN parameters of both BNs.
  static std::size_t activation_bytes(const composite_layer_problem& pb) noexcept {
    return sizeof(T) *
           std::size_t(pb.input_shape().size() + 2 * pb.bottleneck_shape().size() + 4 * (pb.c_in + pb.bottleneck));
  }

  // out = conv2(relu(BN2(conv1(relu(BN1(x)))))), BN in training mode with statistics
  // computed here from x and Y1.
  void forward(tensor_view<const T> x, const composite_layer_params<T>& p, double eps, tensor_view<T> out) {
    constexpr const char* where = "unfused::dense_composite_layer::forward";
    bnff::detail::check_params(where, pb_, p, eps);
    bnff::detail::check_conv_tensor(where, "x", x, pb_.input_shape());
    bnff::detail::check_conv_tensor(where, "out", out, pb_.output_shape());
    bnff::detail::check_no_alias(where, "out", out, x, "x");
    const conv2d_problem p1 = pb_.conv1(), p2 = pb_.conv2();
    batch_norm_stats<Arch>(x, merged(pb_.c_in));
    batch_norm_finalize<T>(stats(pb_.c_in), p.gamma1, p.beta1, eps, mvec(mean1_), mvec(invstd1_), mvec(scale1_),
                           mvec(shift1_));
    batch_norm_apply_affine<bn_identity, Arch, T>(x, a1(), vec(scale1_), vec(shift1_));
    unfused::relu<Arch, T>(tensor_view<const T>(a1()), a1());
    conv2d_forward<T, Arch>(p1, a1(), p.w1, {}, y1(), ws());
    batch_norm_stats<Arch>(tensor_view<const T>(y1()), merged(pb_.bottleneck));
    batch_norm_finalize<T>(stats(pb_.bottleneck), p.gamma2, p.beta2, eps, mvec(mean2_), mvec(invstd2_), mvec(scale2_),
                           mvec(shift2_));
    batch_norm_apply_affine<bn_identity, Arch, T>(tensor_view<const T>(y1()), a2(), vec(scale2_), vec(shift2_));
    unfused::relu<Arch, T>(tensor_view<const T>(a2()), a2());
    conv2d_forward<T, Arch>(p2, a2(), p.w2, {}, out, ws());
  }

  // As the fused backward, from the stored A1, Y1, A2.
  template <class GradMode>
  void backward(tensor_view<const T> x, const composite_layer_params<T>& p, tensor_view<const T> dout,
                tensor_view<T> dx, GradMode mode, const composite_layer_grads<T>& g) {
    constexpr const char* where = "unfused::dense_composite_layer::backward";
    bnff::detail::check_params(where, pb_, p, 1.0);
    bnff::detail::check_grads(where, pb_, g);
    bnff::detail::check_conv_tensor(where, "x", x, pb_.input_shape());
    bnff::detail::check_conv_tensor(where, "dout", dout, pb_.output_shape());
    bnff::detail::check_conv_tensor(where, "dx", dx, pb_.input_shape());
    bnff::detail::check_no_alias(where, "dx", dx, x, "x");
    bnff::detail::check_no_alias(where, "dx", dx, dout, "dout");
    bn_relu_conv2d_backward<T, Arch>(pb_.conv2(), y1(), a2(), vec(mean2_), vec(invstd2_), vec(scale2_), p.w2, dout,
                                     g.dw2, da2(), g.dgamma2, g.dbeta2, da2(), grad_overwrite{}, ws());
    bn_relu_conv2d_backward<T, Arch>(pb_.conv1(), x, a1(), vec(mean1_), vec(invstd1_), vec(scale1_), p.w1, da2(), g.dw1,
                                     da1(), g.dgamma1, g.dbeta1, dx, mode, ws());
  }

 private:
  tensor_view<T> a1() { return {a1_.data(), pb_.input_shape()}; }
  tensor_view<T> y1() { return {y1_.data(), pb_.bottleneck_shape()}; }
  tensor_view<T> a2() { return {a2_.data(), pb_.bottleneck_shape()}; }
  tensor_view<T> da2() { return {da2_.data(), pb_.bottleneck_shape()}; }
  tensor_view<T> da1() { return {da1_.data(), pb_.input_shape()}; }
  vector_view<T> ws() { return {ws_.data(), index_t(ws_.size())}; }
  static vector_view<const T> vec(const std::vector<T>& v) { return {v.data(), index_t(v.size())}; }
  static vector_view<T> mvec(std::vector<T>& v) { return {v.data(), index_t(v.size())}; }

  vector_view<moments> merged(index_t channels) { return {merged_.data(), channels}; }
  vector_view<const moments> stats(index_t channels) const { return {merged_.data(), channels}; }

  composite_layer_problem pb_;
  std::vector<T> a1_, y1_, a2_, mean1_, invstd1_, scale1_, shift1_, mean2_, invstd2_, scale2_, shift2_;
  std::vector<moments> merged_;
  std::vector<T> da2_, da1_, ws_;
};

}  // namespace unfused
}  // namespace bnff
