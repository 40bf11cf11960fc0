// The oneDNN layers bnff_bench times compute what their names say: forward and
// backward of a small composite layer and bottleneck, in both layouts, against
// the naive double reference. A comparison with a wrong baseline is no comparison.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "onednn_layers.hpp"
#include "support/reference.hpp"

namespace {

namespace od = bnff::bench::onednn;
namespace ref = bnff::ref;
using bnff::shape4;

ref::vec plain(const od::tensor& t) {
  const auto v = od::read_plain(t);
  return ref::vec(v.begin(), v.end());
}

// max |a - b| relative to max |b|: the outputs pass through batch norm, so
// they are O(1) and an error relative to their scale is the meaningful one.
double scaled_error(const ref::vec& got, const ref::vec& want) {
  REQUIRE(got.size() == want.size());
  double err = 0, scale = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    err = std::max(err, std::abs(got[i] - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  return err / std::max(scale, 1e-30);
}

ref::vec add(ref::vec a, const ref::vec& b) {
  for (std::size_t i = 0; i < a.size(); ++i) a[i] += b[i];
  return a;
}

// BN in training mode followed by nothing: normalized output only.
ref::vec bn_train(const shape4& s, const ref::vec& x, const ref::vec& gamma, const ref::vec& beta) {
  ref::vec rm(gamma.size(), 0.0), rv(gamma.size(), 1.0);
  return ref::bn_forward_train(s, x, gamma, beta, od::batch_norm::eps, 0.1, rm, rv).y;
}

// float kernels summing a few hundred products of O(1) values, then batch
// norm: the errors seen are below 4e-7 of the output scale, so 1e-4 leaves a
// wide margin while any indexing, layout or missing-term error (O(1)) fails.
constexpr double kTolerance = 1e-4;

}  // namespace

TEST_CASE("oneDNN composite layer matches the double reference", "[onednn]") {
  // c_in = 40 is not a multiple of the 16-channel blocks: padding is exercised too.
  const bnff::catalog::composite_layer s{"check", 2, 40, 5, 6, 32, 16};
  for (auto l : {od::layout::blocked, od::layout::nchw}) {
    INFO(od::variant_name(l));
    od::composite_layer layer(s, l);
    layer.forward();
    layer.backward();

    const auto p1 = s.conv1(), p2 = s.conv2();
    const auto x = plain(layer.x), w1 = plain(layer.w1), w2 = plain(layer.w2), dy2 = plain(layer.dy2);
    const auto g1 = plain(layer.bn1.gamma), b1 = plain(layer.bn1.beta);
    const auto g2 = plain(layer.bn2.gamma), b2 = plain(layer.bn2.beta);

    const auto z1 = bn_train(p1.input_shape(), x, g1, b1);
    const auto a1 = ref::relu(z1);
    const auto y1 = ref::conv2d_forward(p1, a1, w1);
    const auto z2 = bn_train(p1.output_shape(), y1, g2, b2);
    const auto a2 = ref::relu(z2);
    const auto y2 = ref::conv2d_forward(p2, a2, w2);
    CHECK(scaled_error(plain(layer.y2), y2) < kTolerance);

    const auto da2 = ref::conv2d_backward_data(p2, dy2, w2);
    const auto dw2 = ref::conv2d_backward_weights(p2, a2, dy2);
    const auto dy1 = ref::bn_backward(p1.output_shape(), y1, ref::relu_backward(z2, da2), g2, od::batch_norm::eps).dx;
    const auto da1 = ref::conv2d_backward_data(p1, dy1, w1);
    const auto dw1 = ref::conv2d_backward_weights(p1, a1, dy1);
    const auto g = ref::bn_backward(p1.input_shape(), x, ref::relu_backward(z1, da1), g1, od::batch_norm::eps);
    CHECK(scaled_error(plain(layer.dw2), dw2) < kTolerance);
    CHECK(scaled_error(plain(layer.dw1), dw1) < kTolerance);
    CHECK(scaled_error(plain(layer.dx), g.dx) < kTolerance);
    CHECK(scaled_error(plain(layer.bn1.dgamma), g.dgamma) < kTolerance);
  }
}

TEST_CASE("oneDNN bottleneck matches the double reference", "[onednn]") {
  const bnff::catalog::bottleneck_block b{"check", 2, 48, 5, 6, 16};
  for (auto l : {od::layout::blocked, od::layout::nchw}) {
    INFO(od::variant_name(l));
    od::bottleneck blk(b, l);
    blk.forward();
    blk.backward();

    const auto p1 = b.conv1(), p2 = b.conv2(), p3 = b.conv3();
    const auto x = plain(blk.x), w1 = plain(blk.w1), w2 = plain(blk.w2), w3 = plain(blk.w3), dout = plain(blk.dout);
    const auto g1 = plain(blk.bn1.gamma), g2 = plain(blk.bn2.gamma), g3 = plain(blk.bn3.gamma);

    const auto y1 = ref::conv2d_forward(p1, x, w1);
    const auto z1 = bn_train(p1.output_shape(), y1, g1, plain(blk.bn1.beta));
    const auto a1 = ref::relu(z1);
    const auto y2 = ref::conv2d_forward(p2, a1, w2);
    const auto z2 = bn_train(p2.output_shape(), y2, g2, plain(blk.bn2.beta));
    const auto a2 = ref::relu(z2);
    const auto y3 = ref::conv2d_forward(p3, a2, w3);
    const auto sum = add(bn_train(p3.output_shape(), y3, g3, plain(blk.bn3.beta)), x);
    CHECK(scaled_error(plain(blk.out), ref::relu(sum)) < kTolerance);

    const double eps = od::batch_norm::eps;
    const auto ds = ref::relu_backward(sum, dout);
    const auto dy3 = ref::bn_backward(p3.output_shape(), y3, ds, g3, eps).dx;
    const auto da2 = ref::conv2d_backward_data(p3, dy3, w3);
    const auto dy2 = ref::bn_backward(p2.output_shape(), y2, ref::relu_backward(z2, da2), g2, eps).dx;
    const auto da1 = ref::conv2d_backward_data(p2, dy2, w2);
    const auto dy1 = ref::bn_backward(p1.output_shape(), y1, ref::relu_backward(z1, da1), g1, eps).dx;
    CHECK(scaled_error(plain(blk.dw3), ref::conv2d_backward_weights(p3, a2, dy3)) < kTolerance);
    CHECK(scaled_error(plain(blk.dw1), ref::conv2d_backward_weights(p1, x, dy1)) < kTolerance);
    CHECK(scaled_error(plain(blk.dx), add(ref::conv2d_backward_data(p1, dy1, w1), ds)) < kTolerance);
  }
}

TEST_CASE("oneDNN standalone BN kernels match the double reference", "[onednn]") {
  const shape4 s{2, 40, 5, 6};
  for (auto l : {od::layout::blocked, od::layout::nchw}) {
    INFO(od::variant_name(l));
    const auto md = l == od::layout::blocked ? dnnl::memory::desc({2, 40, 5, 6}, od::dt::f32, od::tag::nChw16c)
                                             : dnnl::memory::desc({2, 40, 5, 6}, od::dt::f32, od::tag::nchw);
    od::bn_apply_relu apply(md);
    apply.run();
    const auto y = ref::relu(ref::bn_forward_infer(s, plain(apply.x), plain(apply.gamma), plain(apply.beta),
                                                   plain(apply.mean), plain(apply.var), od::batch_norm::eps));
    CHECK(scaled_error(plain(apply.y), y) < kTolerance);

    od::bn_backward bwd(md);
    bwd.run();
    const auto x = plain(bwd.x), gamma = plain(bwd.bn.gamma);
    const auto z = bn_train(s, x, gamma, plain(bwd.bn.beta));
    const auto g = ref::bn_backward(s, x, ref::relu_backward(z, plain(bwd.dz)), gamma, od::batch_norm::eps);
    CHECK(scaled_error(plain(bwd.dx), g.dx) < kTolerance);
    CHECK(scaled_error(plain(bwd.bn.dbeta), g.dbeta) < kTolerance);
  }
}
