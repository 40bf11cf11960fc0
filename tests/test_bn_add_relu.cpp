// The end of a residual block, y = max(0, BN(x) + skip), fused (bn_add_relu_forward /
// bn_add_relu_backward) against the double reference and finite differences, and the
// unfused residual add.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "bnff/ops/batch_norm_finalize.hpp"
#include "bnff/ops/batch_norm_stats.hpp"
#include "bnff/ops/bn_add_relu.hpp"
#include "support/reference.hpp"
#include "test_batch_norm_support.hpp"

namespace {

using bnff::index_t;
using bnff::moments;
using bnff::shape4;
using namespace bnff::test;
using Catch::Matchers::Contains;

constexpr double eps = 1e-5;

// x, skip, dy as channel slices at odd offsets, and the forward's saved per-channel vectors.
template <class T>
struct add_relu_case {
  shape4 s;
  slice_tensor<T> x, skip, dy;
  std::vector<T> gamma, beta, mean, invstd, scale, shift;

  add_relu_case(shape4 shape, std::uint64_t seed)
      : s(shape), x(shape, 1, 1, 1), skip(shape, 0, 2, 3), dy(shape, 2, 0, 0) {
    const auto c = std::size_t(s.c);
    x.fill_random(seed, -2.0, 2.0);
    skip.fill_random(seed + 1, -1.0, 1.0);
    dy.fill_random(seed + 2, -1.0, 1.0);
    gamma = to_vector<T>(random_vector(c, seed + 3, 0.5, 2.0));
    beta = to_vector<T>(random_vector(c, seed + 4, -0.5, 0.5));
    mean.resize(c), invstd.resize(c), scale.resize(c), shift.resize(c);
    std::vector<moments> m(c);
    bnff::batch_norm_stats(x.cview(), vview(m));
    bnff::batch_norm_finalize<T>(cvview(m), cvview(gamma), cvview(beta), eps, vview(mean), vview(invstd), vview(scale),
                                 vview(shift));
  }

  // The reference: pre = BN(x) + skip, y = relu(pre); g = dy * [pre > 0]; BN backward of g.
  std::vector<double> ref_pre() const {
    const auto xs = x.packed();
    const auto st = bnff::ref::batch_stats(s, xs);
    auto pre =
        bnff::ref::bn_normalize(s, xs, st.mean, st.var, {gamma.begin(), gamma.end()}, {beta.begin(), beta.end()}, eps);
    const auto k = skip.packed();
    for (std::size_t i = 0; i < pre.size(); ++i) pre[i] += k[i];
    return pre;
  }
};

template <class T>
constexpr double tol = std::is_same_v<T, float> ? 1e-5 : 1e-11;

}  // namespace

TEMPLATE_TEST_CASE("bn_add_relu forward and backward match the double reference", "[bn_add_relu]", float, double) {
  for (const shape4& s : bn_shapes()) {
    if (s.n * s.plane() < 2) continue;
    add_relu_case<TestType> bc(s, 70 + std::uint64_t(s.size()));
    CAPTURE(s);
    const auto pre = bc.ref_pre();
    const auto want_y = bnff::ref::relu(pre);
    slice_tensor<TestType> y(s, 1, 0, 1);
    y.fill_nan();
    bnff::bn_add_relu_forward(bc.x.cview(), bc.skip.cview(), y.view(), cvview(bc.mean), cvview(bc.scale),
                              cvview(bc.beta));
    CHECK(max_abs_diff(y.packed(), want_y) <= tol<TestType> * (1 + max_abs(want_y)));
    CHECK(y.outside_untouched());

    // The backward takes the kernel's own y (its mask is what the caller stores); with
    // random inputs no element sits at exactly 0, so the masks agree.
    const auto g = bnff::ref::relu_backward(pre, bc.dy.packed());
    const auto want = bnff::ref::bn_backward(s, bc.x.packed(), g, {bc.gamma.begin(), bc.gamma.end()}, eps);
    for (bool accumulate : {false, true}) {
      CAPTURE(accumulate);
      slice_tensor<TestType> d_skip(s, 0, 1, 1), dx(s, 1, 1, 0);
      d_skip.fill_nan();
      dx.fill_random(5, -1.0, 1.0);
      const auto before = dx.packed();
      std::vector<TestType> dgamma(std::size_t(s.c), TestType(NAN)), dbeta(std::size_t(s.c), TestType(NAN));
      bnff::with_grad_mode(accumulate, [&](auto mode) {
        bnff::bn_add_relu_backward(bc.x.cview(), y.cview(), bc.dy.cview(), cvview(bc.mean), cvview(bc.invstd),
                                   cvview(bc.scale), d_skip.view(), dx.view(), vview(dgamma), vview(dbeta), mode);
      });
      CHECK(max_abs_diff(d_skip.packed(), g) == 0.0);  // exactly dy or 0
      auto got = dx.packed();
      if (accumulate)
        for (std::size_t i = 0; i < got.size(); ++i) got[i] -= before[i];
      const double size = 2 + max_abs(bc.scale) * max_abs(g);
      CHECK(max_abs_diff(got, want.dx) <= tol<TestType> * size);
      CHECK(max_abs_diff(dgamma, want.dgamma) <= tol<TestType> * (1 + max_abs(want.dgamma)));
      CHECK(max_abs_diff(dbeta, want.dbeta) <= tol<TestType> * (1 + max_abs(want.dbeta)));
      CHECK(d_skip.outside_untouched());
      CHECK(dx.outside_untouched());
    }
  }
}

TEST_CASE("bn_add_relu backward agrees with finite differences (double)", "[bn_add_relu]") {
  // L = sum(w * relu(BN(x) + skip)), batch statistics from x.
  const shape4 s{2, 2, 3, 3};
  const auto c = std::size_t(s.c);
  const auto x0 = random_vector(std::size_t(s.size()), 31, -2.0, 2.0);
  const auto k0 = random_vector(std::size_t(s.size()), 32, -1.0, 1.0);
  const auto w = random_vector(std::size_t(s.size()), 33, -1.0, 1.0);
  const auto gamma0 = random_vector(c, 34, 0.5, 2.0), beta0 = random_vector(c, 35, -0.5, 0.5);
  auto loss = [&](const std::vector<double>& x, const std::vector<double>& k, const std::vector<double>& gamma,
                  const std::vector<double>& beta) {
    const auto st = bnff::ref::batch_stats(s, x);
    auto z = bnff::ref::bn_normalize(s, x, st.mean, st.var, gamma, beta, eps);
    double l = 0;
    for (std::size_t i = 0; i < z.size(); ++i) l += w[i] * std::max(0.0, z[i] + k[i]);
    return l;
  };

  slice_tensor<double> x(s, 0, 0, 0), skip(s, 0, 0, 0), dy(s, 0, 0, 0), y(s, 0, 0, 0), dx(s, 0, 0, 0),
      d_skip(s, 0, 0, 0);
  x.set_packed(x0), skip.set_packed(k0), dy.set_packed(w);
  std::vector<moments> m(c);
  std::vector<double> mean(c), invstd(c), scale(c), shift(c), dgamma(c), dbeta(c);
  bnff::batch_norm_stats(x.cview(), vview(m));
  bnff::batch_norm_finalize<double>(cvview(m), cvview(gamma0), cvview(beta0), eps, vview(mean), vview(invstd),
                                    vview(scale), vview(shift));
  bnff::bn_add_relu_forward(x.cview(), skip.cview(), y.view(), cvview(mean), cvview(scale), cvview(beta0));
  bnff::bn_add_relu_backward(x.cview(), y.cview(), dy.cview(), cvview(mean), cvview(invstd), cvview(scale),
                             d_skip.view(), dx.view(), vview(dgamma), vview(dbeta));
  const auto gx = dx.packed(), gk = d_skip.packed();
  const double h = 1e-5, margin = 1e-7;
  for (std::size_t i = 0; i < x0.size(); ++i) {
    auto xp = x0, xm = x0, kp = k0, km = k0;
    xp[i] += h, xm[i] -= h, kp[i] += h, km[i] -= h;
    CAPTURE(i);
    CHECK(gx[i] == Approx((loss(xp, k0, gamma0, beta0) - loss(xm, k0, gamma0, beta0)) / (2 * h)).margin(margin));
    CHECK(gk[i] == Approx((loss(x0, kp, gamma0, beta0) - loss(x0, km, gamma0, beta0)) / (2 * h)).margin(margin));
  }
  for (std::size_t k = 0; k < c; ++k) {
    auto gp = gamma0, gm = gamma0, bp = beta0, bm = beta0;
    gp[k] += h, gm[k] -= h, bp[k] += h, bm[k] -= h;
    CHECK(dgamma[k] == Approx((loss(x0, k0, gp, beta0) - loss(x0, k0, gm, beta0)) / (2 * h)).margin(margin));
    CHECK(dbeta[k] == Approx((loss(x0, k0, gamma0, bp) - loss(x0, k0, gamma0, bm)) / (2 * h)).margin(margin));
  }
}

TEST_CASE("unfused::add sums two tensors, in place or not", "[bn_add_relu]") {
  const shape4 s{2, 3, 5, 7};
  slice_tensor<float> a(s, 1, 0, 1), b(s, 0, 1, 0), y(s, 1, 1, 1);
  a.fill_random(1), b.fill_random(2), y.fill_nan();
  auto want = a.packed();
  const auto bp = b.packed();
  for (std::size_t i = 0; i < want.size(); ++i) want[i] = double(float(want[i]) + float(bp[i]));
  bnff::unfused::add(a.cview(), b.cview(), y.view());
  CHECK(max_abs_diff(y.packed(), want) == 0.0);
  CHECK(y.outside_untouched());
  bnff::unfused::add(a.cview(), b.cview(), a.view());
  CHECK(max_abs_diff(a.packed(), want) == 0.0);
}

TEST_CASE("bn_add_relu rejects mismatched shapes and overlapping outputs, naming the argument", "[bn_add_relu]") {
  const shape4 s{2, 3, 4, 4};
  add_relu_case<float> bc(s, 9);
  slice_tensor<float> y(s, 0, 0, 0), small({2, 3, 4, 3}, 0, 0, 0);
  CHECK_THROWS_WITH(bnff::bn_add_relu_forward(bc.x.cview(), small.cview(), y.view(), cvview(bc.mean), cvview(bc.scale),
                                              cvview(bc.beta)),
                    Contains("bn_add_relu_forward") && Contains("'skip'"));
  CHECK_THROWS_WITH(bnff::bn_add_relu_forward(bc.x.cview(), bc.skip.cview(), bc.skip.view(), cvview(bc.mean),
                                              cvview(bc.scale), cvview(bc.beta)),
                    Contains("'y'"));
  std::vector<float> dg(3), db(3);
  slice_tensor<float> dx(s, 0, 0, 0);
  CHECK_THROWS_WITH(
      bnff::bn_add_relu_backward(bc.x.cview(), y.cview(), bc.dy.cview(), cvview(bc.mean), cvview(bc.invstd),
                                 cvview(bc.scale), bc.dy.view(), dx.view(), vview(dg), vview(db)),
      Contains("bn_add_relu_backward") && Contains("'d_skip'"));
}
