#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "bnff/ops/unfused/batch_norm_unfused.hpp"
#include "bnff/parallel/parallel.hpp"
#include "support/reference.hpp"
#include "test_batch_norm_support.hpp"

namespace {

using bnff::index_t;
using bnff::shape4;
using namespace bnff::test;

constexpr double eps = 1e-5;

// One training step through the baseline, every intermediate kept.
template <class T>
struct unfused_step {
  shape4 s;
  slice_tensor<T> x, y, z, dz, dy, dx;
  std::vector<T> gamma, beta, mean, var, invstd, sum_dy, sum_dy_xhat;

  unfused_step(shape4 shape, std::uint64_t seed)
      : s(shape), x(shape, 1, 0, 1), y(shape), z(shape, 0, 1, 0), dz(shape), dy(shape, 2, 0, 1), dx(shape) {
    const auto c = std::size_t(s.c);
    x.fill_random(seed, -2.0, 3.0);
    dz.fill_random(seed + 1);
    gamma = to_vector<T>(random_vector(c, seed + 2, 0.5, 2.0));
    beta = to_vector<T>(random_vector(c, seed + 3, -0.5, 0.5));
    mean.resize(c), var.resize(c), invstd.resize(c), sum_dy.resize(c), sum_dy_xhat.resize(c);
    y.fill_nan(), z.fill_nan(), dy.fill_nan(), dx.fill_nan();
    bnff::unfused::batch_norm_relu_forward(x.cview(), y.view(), z.view(), cvview(gamma), cvview(beta), eps, vview(mean),
                                           vview(var), vview(invstd));
    bnff::unfused::batch_norm_relu_backward(x.cview(), y.cview(), dz.cview(), dy.view(), cvview(mean), cvview(invstd),
                                            cvview(gamma), vview(sum_dy), vview(sum_dy_xhat), dx.view());
  }
};

}  // namespace

TEMPLATE_TEST_CASE("the unfused baseline matches the double reference", "[batch_norm][unfused]", float, double) {
  // Same error sources as the fused kernels (T accumulation flushed into
  // double, per-channel values rounded once to T): the same tolerances.
  const double tol = std::is_same_v<TestType, float> ? 1e-5 : 1e-11;
  for (const shape4& s : bn_shapes()) {
    if (s.n * s.plane() < 2) continue;
    const unfused_step<TestType> u(s, 60 + std::uint64_t(s.size()));
    const auto xs = u.x.packed();
    const std::vector<double> g(u.gamma.begin(), u.gamma.end()), b(u.beta.begin(), u.beta.end());
    const auto st = bnff::ref::batch_stats(s, xs);
    const auto y = bnff::ref::bn_normalize(s, xs, st.mean, st.var, g, b, eps);
    const auto dy = bnff::ref::relu_backward(y, u.dz.packed());
    const auto grads = bnff::ref::bn_backward(s, xs, dy, g, eps);
    CAPTURE(s);
    CHECK(max_abs_diff(u.mean, st.mean) <= tol);
    CHECK(max_abs_diff(u.var, st.var) <= tol * (1 + max_abs(st.var)));
    CHECK(max_abs_diff(u.y.packed(), y) <= tol);
    CHECK(max_abs_diff(u.z.packed(), bnff::ref::relu(y)) <= tol);
    CHECK(max_abs_diff(u.dy.packed(), dy) == 0);  // a mask: exact
    const double size = 1 + max_abs(u.gamma) * max_abs(u.invstd) * max_abs(dy);
    CHECK(max_abs_diff(u.dx.packed(), grads.dx) <= tol * size);
    CHECK(max_abs_diff(u.sum_dy, grads.dbeta) <= tol * (1 + max_abs(grads.dbeta)));
    CHECK(max_abs_diff(u.sum_dy_xhat, grads.dgamma) <= tol * (1 + max_abs(grads.dgamma)));
    CHECK(u.y.outside_untouched());
    CHECK(u.z.outside_untouched());
    CHECK(u.dy.outside_untouched());
    CHECK(u.dx.outside_untouched());
  }
}

TEST_CASE("the unfused baseline gives the same bits with 1 and 2 threads", "[batch_norm][unfused]") {
  const shape4 s{3, 6, 21, 19};
  bnff::set_num_threads(1);
  const unfused_step<float> one(s, 3);
  bnff::set_num_threads(2);
  const unfused_step<float> two(s, 3);
  bnff::set_num_threads(1);
  CHECK(one.mean == two.mean);
  CHECK(one.var == two.var);
  CHECK(one.z.storage == two.z.storage);
  CHECK(one.sum_dy == two.sum_dy);
  CHECK(one.sum_dy_xhat == two.sum_dy_xhat);
  CHECK(one.dx.storage == two.dx.storage);
}
