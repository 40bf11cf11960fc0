// The oracle is checked before it judges anything: small cases worked by hand,
// and its gradients against central finite differences of its own forward.
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>

#include "support/random.hpp"
#include "support/reference.hpp"

using bnff::conv2d_problem;
using bnff::shape4;
using bnff::ref::vec;
using Catch::Matchers::WithinAbs;

namespace {

double dot(const vec& a, const vec& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Central difference of f at every coordinate of x, compared with grad.
void check_gradient(vec x, const vec& grad, const std::function<double(const vec&)>& f, double h = 1e-5,
                    double tol = 1e-7) {
  REQUIRE(x.size() == grad.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double fp = f(x);
    x[i] = x0 - h;
    const double fm = f(x);
    x[i] = x0;
    const double fd = (fp - fm) / (2 * h);
    INFO("coordinate " << i << ": finite difference " << fd << ", analytic " << grad[i]);
    CHECK(std::abs(fd - grad[i]) <= tol * (1 + std::abs(fd)));
  }
}

}  // namespace

TEST_CASE("reference conv2d: a 3x3 case worked by hand", "[reference]") {
  // Input 1x1x3x3 = 1..9, a 3x3 filter of ones, pad 1: each output is the sum
  // of the input's 3x3 neighbourhood clipped at the border.
  conv2d_problem pb{1, 1, 3, 3, 1, 3, 3, 1, 1};
  vec x{1, 2, 3, 4, 5, 6, 7, 8, 9}, w(9, 1.0);
  const vec y = bnff::ref::conv2d_forward(pb, x, w);
  CHECK(y == vec{12, 21, 16, 27, 45, 33, 24, 39, 28});
  // Stride 2 picks the corners; a bias adds to each.
  pb.stride = 2;
  vec bias{0.5};
  CHECK(bnff::ref::conv2d_forward(pb, x, w, &bias) == vec{12.5, 16.5, 24.5, 28.5});
}

TEST_CASE("reference conv2d: 1x1 with two channels is a matrix product", "[reference]") {
  conv2d_problem pb{1, 2, 1, 2, 2, 1, 1, 0, 1};
  vec x{1, 2, 3, 4};    // c0 = (1, 2), c1 = (3, 4)
  vec w{1, 10, -1, 2};  // k0 = c0 + 10 c1, k1 = -c0 + 2 c1
  CHECK(bnff::ref::conv2d_forward(pb, x, w) == vec{31, 42, 5, 6});
}

TEST_CASE("reference conv2d gradients match finite differences", "[reference]") {
  const conv2d_problem problems[] = {{2, 3, 5, 4, 2, 3, 3, 1, 1},
                                     {1, 2, 7, 6, 3, 3, 3, 1, 2},
                                     {1, 2, 9, 9, 2, 7, 7, 3, 2},
                                     {2, 4, 3, 5, 3, 1, 1, 0, 1}};
  for (const auto& pb : problems) {
    const vec x = bnff::test::random_vector(std::size_t(pb.input_shape().size()), 1);
    const vec w = bnff::test::random_vector(std::size_t(pb.filter_shape().size()), 2);
    const vec b = bnff::test::random_vector(std::size_t(pb.k), 3);
    const vec dy = bnff::test::random_vector(std::size_t(pb.output_shape().size()), 4);
    // loss = sum(y * dy) is linear in each argument, so the difference is exact up to rounding.
    check_gradient(x, bnff::ref::conv2d_backward_data(pb, dy, w),
                   [&](const vec& xv) { return dot(bnff::ref::conv2d_forward(pb, xv, w, &b), dy); });
    check_gradient(w, bnff::ref::conv2d_backward_weights(pb, x, dy),
                   [&](const vec& wv) { return dot(bnff::ref::conv2d_forward(pb, x, wv, &b), dy); });
    check_gradient(b, bnff::ref::conv2d_backward_bias(pb, dy),
                   [&](const vec& bv) { return dot(bnff::ref::conv2d_forward(pb, x, w, &bv), dy); });
  }
}

TEST_CASE("reference batch norm: a case worked by hand, with PyTorch running statistics", "[reference]") {
  // One channel, m = 4 values 1, 2, 3, 4: mean 2.5, biased var 1.25, unbiased 5/3.
  const shape4 s{2, 1, 1, 2};
  const vec x{1, 2, 3, 4}, gamma{2.0}, beta{0.5};
  vec rm{1.0}, rv{1.0};
  const auto r = bnff::ref::bn_forward_train(s, x, gamma, beta, 1e-5, 0.1, rm, rv);
  CHECK(r.stats.mean[0] == 2.5);
  CHECK(r.stats.var[0] == 1.25);
  const double invstd = 1.0 / std::sqrt(1.25 + 1e-5);
  for (std::size_t i = 0; i < 4; ++i) CHECK_THAT(r.y[i], WithinAbs((x[i] - 2.5) * invstd * 2.0 + 0.5, 1e-15));
  CHECK_THAT(rm[0], WithinAbs(0.9 * 1.0 + 0.1 * 2.5, 1e-15));
  CHECK_THAT(rv[0], WithinAbs(0.9 * 1.0 + 0.1 * (5.0 / 3.0), 1e-15));
  // Inference uses the running statistics.
  const vec yi = bnff::ref::bn_forward_infer(s, x, gamma, beta, rm, rv, 1e-5);
  CHECK_THAT(yi[3], WithinAbs((4 - rm[0]) / std::sqrt(rv[0] + 1e-5) * 2.0 + 0.5, 1e-15));
}

TEST_CASE("reference batch norm backward matches finite differences", "[reference]") {
  const shape4 s{3, 2, 3, 2};
  const std::size_t size = std::size_t(s.size());
  const vec x = bnff::test::random_vector(size, 11, -2, 3);
  const vec dy = bnff::test::random_vector(size, 12);
  const vec gamma = bnff::test::random_vector(2, 13, 0.5, 1.5), beta = bnff::test::random_vector(2, 14);
  const double eps = 1e-3;
  auto loss = [&](const vec& xv, const vec& g, const vec& b) {
    vec rm(2, 0.0), rv(2, 1.0);
    return dot(bnff::ref::bn_forward_train(s, xv, g, b, eps, 0.1, rm, rv).y, dy);
  };
  const auto grads = bnff::ref::bn_backward(s, x, dy, gamma, eps);
  check_gradient(
      x, grads.dx, [&](const vec& xv) { return loss(xv, gamma, beta); }, 1e-5, 1e-6);
  check_gradient(gamma, grads.dgamma, [&](const vec& g) { return loss(x, g, beta); });
  check_gradient(beta, grads.dbeta, [&](const vec& b) { return loss(x, gamma, b); });
}

TEST_CASE("reference ReLU and its gradient", "[reference]") {
  const vec x{-1.0, 0.0, 2.5}, dz{3.0, 4.0, 5.0};
  CHECK(bnff::ref::relu(x) == vec{0.0, 0.0, 2.5});
  CHECK(bnff::ref::relu_backward(x, dz) == vec{0.0, 0.0, 5.0});
}
