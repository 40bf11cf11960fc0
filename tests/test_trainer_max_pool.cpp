// The trainer's 3x3 stride-2 max pooling (the ImageNet stem's) against a hand loop and
// finite differences, and the ImageNet-stem DenseNet's shapes.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../examples/01_densenet_trainer/layers.hpp"
#include "../examples/01_densenet_trainer/network.hpp"
#include "support/random.hpp"

using bnff::index_t;
using bnff::shape4;
using bnff::tensor_view;

TEST_CASE("max_pool3x3s2 forward takes each window's maximum, padding never winning", "[trainer]") {
  for (const shape4& s : {shape4{2, 3, 7, 7}, shape4{1, 2, 8, 5}, shape4{1, 1, 1, 1}, shape4{2, 1, 2, 3}}) {
    CAPTURE(s);
    auto xv = bnff::test::random_vector(std::size_t(s.size()), 3, -2.0, -1.0);  // all negative: padding 0 would win
    const shape4 ys{s.n, s.c, trainer::max_pool3x3s2_extent(s.h), trainer::max_pool3x3s2_extent(s.w)};
    std::vector<double> yv(std::size_t(ys.size()), 0.0);
    const tensor_view<const double> x(xv.data(), s);
    trainer::max_pool3x3s2_forward(x, tensor_view<double>(yv.data(), ys));
    for (index_t n = 0; n < s.n; ++n)
      for (index_t c = 0; c < s.c; ++c)
        for (index_t i = 0; i < ys.h; ++i)
          for (index_t j = 0; j < ys.w; ++j) {
            double m = -1e300;
            for (index_t a = 2 * i - 1; a <= 2 * i + 1; ++a)
              for (index_t b = 2 * j - 1; b <= 2 * j + 1; ++b)
                if (a >= 0 && a < s.h && b >= 0 && b < s.w) m = std::max(m, x(n, c, a, b));
            CHECK(yv[std::size_t(((n * s.c + c) * ys.h + i) * ys.w + j)] == m);
          }
  }
}

TEST_CASE("max_pool3x3s2 backward agrees with finite differences", "[trainer]") {
  const shape4 s{2, 2, 6, 7};
  const shape4 ys{s.n, s.c, trainer::max_pool3x3s2_extent(s.h), trainer::max_pool3x3s2_extent(s.w)};
  const auto x0 = bnff::test::random_vector(std::size_t(s.size()), 5, -1.0, 1.0);  // distinct values: no ties
  const auto w = bnff::test::random_vector(std::size_t(ys.size()), 6, -1.0, 1.0);
  auto loss = [&](const std::vector<double>& xv) {
    std::vector<double> yv(std::size_t(ys.size()));
    trainer::max_pool3x3s2_forward(tensor_view<const double>(xv.data(), s), tensor_view<double>(yv.data(), ys));
    double l = 0;
    for (std::size_t i = 0; i < yv.size(); ++i) l += w[i] * yv[i];
    return l;
  };
  std::vector<double> y(std::size_t(ys.size())), dx(std::size_t(s.size()), 7.0);
  trainer::max_pool3x3s2_forward(tensor_view<const double>(x0.data(), s), tensor_view<double>(y.data(), ys));
  trainer::max_pool3x3s2_backward(tensor_view<const double>(x0.data(), s), tensor_view<const double>(y.data(), ys),
                                  tensor_view<const double>(w.data(), ys), tensor_view<double>(dx.data(), s));
  const double h = 1e-6;
  for (std::size_t i = 0; i < x0.size(); ++i) {
    auto xp = x0, xm = x0;
    xp[i] += h, xm[i] -= h;
    CAPTURE(i);
    CHECK(dx[i] == Approx((loss(xp) - loss(xm)) / (2 * h)).margin(1e-8));
  }
}

TEST_CASE("An ImageNet-stem DenseNet: conv7x7/2, BN-ReLU, max pool, then the blocks at a quarter extent", "[trainer]") {
  trainer::model_config c;
  c.image_size = 64;
  c.stem_channels = 16;
  c.blocks = {2, 2};
  c.growth = 8;
  c.imagenet_stem = true;
  const trainer::densenet net(c, 2, 1);
  const auto& u = net.units();
  REQUIRE(u.size() >= 4);
  CHECK(u[0].kind == trainer::unit_kind::conv);
  CHECK(u[0].conv.problem.r == 7);
  CHECK(u[0].conv.problem.stride == 2);
  CHECK(u[0].y.shape() == shape4{2, 16, 32, 32});
  CHECK(u[1].kind == trainer::unit_kind::bn_relu);
  CHECK(u[2].kind == trainer::unit_kind::max_pool3x3s2);
  CHECK(u[2].y.shape() == shape4{2, 16, 16, 16});
  CHECK(u[3].kind == trainer::unit_kind::bn_relu_conv);
  CHECK(u[3].x.h() == 16);
  CHECK(c.canonical().find("stem=imagenet") != std::string::npos);
}
