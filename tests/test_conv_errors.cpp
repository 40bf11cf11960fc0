// Bad arguments to the convolution operations: a bnff::error naming the argument,
// thrown before anything is written.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "bnff/ops/bn_relu_conv2d_forward_stats.hpp"
#include "bnff/ops/conv2d_forward.hpp"

namespace {

using bnff::conv2d_problem;
using bnff::index_t;
using bnff::moments;
using bnff::tensor_view;
using bnff::vector_view;

struct fixture {
  conv2d_problem pb{2, 3, 5, 5, 4, 3, 3, 1, 1};
  std::vector<float> x = std::vector<float>(std::size_t(pb.input_shape().size()), 1.0f);
  std::vector<float> w = std::vector<float>(std::size_t(pb.filter_shape().size()), 1.0f);
  std::vector<float> y = std::vector<float>(std::size_t(pb.output_shape().size() + 64), std::nanf(""));
  std::vector<float> scale = std::vector<float>(3, 1.0f), shift = std::vector<float>(3, 0.0f);
  std::vector<float> ws = std::vector<float>(std::size_t(bnff::conv2d_forward_workspace_size<float>(pb)));
  std::vector<moments> partials = std::vector<moments>(std::size_t(bnff::conv2d_stats_partition<float>(pb).size()));

  tensor_view<const float> xv() const { return {x.data(), pb.input_shape()}; }
  tensor_view<const float> wv() const { return {w.data(), pb.filter_shape()}; }
  tensor_view<float> yv() { return {y.data(), pb.output_shape()}; }
  vector_view<float> wsv() { return {ws.data(), index_t(ws.size())}; }
  vector_view<moments> pv() { return {partials.data(), index_t(partials.size())}; }

  bool y_untouched() const {
    for (float v : y)
      if (!std::isnan(v)) return false;
    return true;
  }
};

// Runs f, expects a bnff::error whose message names `arg`, and checks y was not written.
template <class F>
void expect_error(fixture& fx, const std::string& arg, F&& f) {
  try {
    f();
    FAIL("no error for argument " << arg);
  } catch (const bnff::error& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).find("'" + arg + "'") != std::string::npos);
  }
  CHECK(fx.y_untouched());
}

}  // namespace

TEST_CASE("conv2d_forward rejects bad arguments before writing", "[conv][errors]") {
  fixture fx;
  const vector_view<const float> no_bias;
  SECTION("x shape") {
    expect_error(fx, "x", [&] {
      bnff::conv2d_forward<float>(fx.pb, tensor_view<const float>(fx.x.data(), 2, 3, 5, 4), fx.wv(), no_bias, fx.yv(),
                                  fx.wsv());
    });
  }
  SECTION("w shape") {
    expect_error(fx, "w", [&] {
      bnff::conv2d_forward<float>(fx.pb, fx.xv(), tensor_view<const float>(fx.w.data(), 4, 3, 3, 2), no_bias, fx.yv(),
                                  fx.wsv());
    });
  }
  SECTION("y too small") {
    expect_error(fx, "y", [&] {
      bnff::conv2d_forward<float>(fx.pb, fx.xv(), fx.wv(), no_bias, tensor_view<float>(fx.y.data(), 2, 4, 4, 5),
                                  fx.wsv());
    });
  }
  SECTION("y with non-contiguous planes") {
    const bnff::shape4 s = fx.pb.output_shape();
    expect_error(fx, "y", [&] {
      bnff::conv2d_forward<float>(fx.pb, fx.xv(), fx.wv(), no_bias,
                                  tensor_view<float>(fx.y.data(), s, bnff::strides4{s.c * 6 * 5, 6 * 5, 6, 1}),
                                  fx.wsv());
    });
  }
  SECTION("y aliasing x") {
    conv2d_problem same{2, 3, 5, 5, 3, 3, 3, 1, 1};  // output shaped like the input
    std::vector<float> buf(std::size_t(same.input_shape().size()), 1.0f);
    std::vector<float> wsame(std::size_t(same.filter_shape().size()), 1.0f);
    bool threw = false;
    try {
      bnff::conv2d_forward<float>(same, tensor_view<const float>(buf.data(), same.input_shape()),
                                  tensor_view<const float>(wsame.data(), same.filter_shape()), no_bias,
                                  tensor_view<float>(buf.data(), same.output_shape()), fx.wsv());
    } catch (const bnff::error& e) {
      threw = std::string(e.what()).find("'y'") != std::string::npos;
    }
    CHECK(threw);
    for (float v : buf) REQUIRE(v == 1.0f);
  }
  SECTION("workspace too small") {
    expect_error(fx, "workspace", [&] {
      bnff::conv2d_forward<float>(fx.pb, fx.xv(), fx.wv(), no_bias, fx.yv(), vector_view<float>(fx.ws.data(), 10));
    });
  }
  SECTION("bias size") {
    expect_error(fx, "bias", [&] {
      bnff::conv2d_forward<float>(fx.pb, fx.xv(), fx.wv(), vector_view<const float>(fx.scale.data(), 3), fx.yv(),
                                  fx.wsv());
    });
  }
  SECTION("bad problem") {
    conv2d_problem bad = fx.pb;
    bad.pad = 3;
    expect_error(fx, "problem.pad",
                 [&] { bnff::conv2d_forward<float>(bad, fx.xv(), fx.wv(), no_bias, fx.yv(), fx.wsv()); });
  }
}

TEST_CASE("bn_relu_conv2d_forward_stats rejects bad arguments before writing", "[conv][errors]") {
  fixture fx;
  const vector_view<const float> scale(fx.scale.data(), 3), shift(fx.shift.data(), 3);
  SECTION("scale size") {
    expect_error(fx, "scale", [&] {
      bnff::bn_relu_conv2d_forward_stats<float>(fx.pb, fx.xv(), vector_view<const float>(fx.scale.data(), 2), shift,
                                                fx.wv(), fx.yv(), fx.pv(), fx.wsv());
    });
  }
  SECTION("shift size") {
    expect_error(fx, "shift", [&] {
      bnff::bn_relu_conv2d_forward_stats<float>(fx.pb, fx.xv(), scale, vector_view<const float>(fx.shift.data(), 1),
                                                fx.wv(), fx.yv(), fx.pv(), fx.wsv());
    });
  }
  SECTION("partials too small") {
    expect_error(fx, "partials", [&] {
      bnff::bn_relu_conv2d_forward_stats<float>(fx.pb, fx.xv(), scale, shift, fx.wv(), fx.yv(),
                                                vector_view<moments>(fx.partials.data(), 1), fx.wsv());
    });
  }
  SECTION("workspace overlapping y") {
    expect_error(fx, "workspace", [&] {
      bnff::bn_relu_conv2d_forward_stats<float>(fx.pb, fx.xv(), scale, shift, fx.wv(), fx.yv(), fx.pv(),
                                                vector_view<float>(fx.y.data(), index_t(fx.ws.size())));
    });
  }
}
