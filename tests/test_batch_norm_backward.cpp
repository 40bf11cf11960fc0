#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "bnff/ops/batch_norm_backward.hpp"
#include "bnff/ops/batch_norm_finalize.hpp"
#include "bnff/ops/batch_norm_stats.hpp"
#include "bnff/parallel/parallel.hpp"
#include "support/reference.hpp"
#include "test_batch_norm_support.hpp"

namespace {

using bnff::index_t;
using bnff::moments;
using bnff::shape4;
using namespace bnff::test;

constexpr double eps = 1e-5;

// A training forward's saved state plus a backward problem (x, dz).
template <class T>
struct backward_case {
  shape4 s;
  slice_tensor<T> x, dz;
  std::vector<T> gamma, beta, mean, invstd, scale, shift;

  backward_case(shape4 shape, std::uint64_t seed, index_t offset = 1)
      : s(shape), x(shape, 1, 1, offset), dz(shape, 2, 0, 1 - offset) {
    const auto c = std::size_t(s.c);
    x.fill_random(seed, -2.0, 2.0);
    dz.fill_random(seed + 1, -1.0, 1.0);
    gamma = to_vector<T>(random_vector(c, seed + 2, 0.5, 2.0));
    beta = to_vector<T>(random_vector(c, seed + 3, -0.5, 0.5));
    mean.resize(c), invstd.resize(c), scale.resize(c), shift.resize(c);
    std::vector<moments> m(c);
    bnff::batch_norm_stats(x.cview(), vview(m));
    bnff::batch_norm_finalize<T>(cvview(m), cvview(gamma), cvview(beta), eps, vview(mean), vview(invstd), vview(scale),
                                 vview(shift));
  }

  template <class Activation, class Mode = bnff::grad_overwrite>
  void run(bnff::tensor_view<T> dx, std::vector<T>& dgamma, std::vector<T>& dbeta) const {
    bnff::batch_norm_backward<Activation, Mode>(x.cview(), dz.cview(), cvview(mean), cvview(invstd), cvview(scale),
                                                cvview(beta), dx, vview(dgamma), vview(dbeta));
  }

  // Size of the terms dx is made of, scale * |dy|: float rounding errors scale with it.
  double term_size() const { return 1 + max_abs(scale) * max_abs(dz.packed()); }

  // The double reference: dy = relu_backward(BN(x), dz) (or dz), then bn_backward.
  bnff::ref::bn_grads reference(bool relu) const {
    const auto xs = x.packed();
    std::vector<double> dy = dz.packed();
    if (relu) {
      const auto st = bnff::ref::batch_stats(s, xs);
      const auto y = bnff::ref::bn_normalize(s, xs, st.mean, st.var, {gamma.begin(), gamma.end()},
                                             {beta.begin(), beta.end()}, eps);
      dy = bnff::ref::relu_backward(y, dy);
    }
    return bnff::ref::bn_backward(s, xs, dy, {gamma.begin(), gamma.end()}, eps);
  }
};

// Float: the sums carry ~1e-6 relative error (T accumulation flushed into
// double), the saved mean/invstd/scale one rounding each, and dx cancels terms
// of the size of scale * |dy| (entirely so for m = 2): 1e-5 of that size is
// ten times the worst error seen, far below any wrong term. Double: 1e-11.
template <class T>
constexpr double grad_tol = std::is_same_v<T, float> ? 1e-5 : 1e-11;

}  // namespace

TEMPLATE_TEST_CASE("batch_norm_backward (+ReLU) matches the double reference", "[batch_norm]", float, double) {
  for (const shape4& s : bn_shapes()) {
    if (s.n * s.plane() < 2) continue;  // one element per channel: nothing to normalize
    for (index_t offset : {0, 1}) {
      const backward_case<TestType> bc(s, 40 + std::uint64_t(s.size()), offset);
      CAPTURE(s, offset);
      for (bool relu : {false, true}) {
        CAPTURE(relu);
        const auto want = bc.reference(relu);
        slice_tensor<TestType> dx(s, 0, 2, 1);
        dx.fill_nan();
        std::vector<TestType> dgamma(std::size_t(s.c), TestType(NAN)), dbeta(std::size_t(s.c), TestType(NAN));
        if (relu)
          bc.template run<bnff::bn_relu>(dx.view(), dgamma, dbeta);
        else
          bc.template run<bnff::bn_identity>(dx.view(), dgamma, dbeta);
        CHECK(max_abs_diff(dx.packed(), want.dx) <= grad_tol<TestType> * bc.term_size());
        CHECK(max_abs_diff(dgamma, want.dgamma) <= grad_tol<TestType> * (1 + max_abs(want.dgamma)));
        CHECK(max_abs_diff(dbeta, want.dbeta) <= grad_tol<TestType> * (1 + max_abs(want.dbeta)));
        CHECK(dx.outside_untouched());
      }
    }
  }
}

TEST_CASE("batch_norm_backward accumulates into dx with grad_accumulate", "[batch_norm]") {
  const shape4 s{3, 4, 5, 9};
  const backward_case<float> bc(s, 5);
  const auto want = bc.reference(true);
  slice_tensor<float> dx(s, 1, 1, 1);
  dx.fill_random(99);
  const auto before = dx.packed();
  std::vector<float> dgamma(4), dbeta(4);
  bc.run<bnff::bn_relu, bnff::grad_accumulate>(dx.view(), dgamma, dbeta);
  const auto after = dx.packed();
  double worst = 0;
  for (std::size_t i = 0; i < after.size(); ++i) worst = std::max(worst, std::abs(after[i] - before[i] - want.dx[i]));
  CHECK(worst <= grad_tol<float> * (1 + bc.term_size()));
  CHECK(dx.outside_untouched());
}

TEST_CASE("batch_norm_backward in place: dx overwrites dz", "[batch_norm]") {
  const shape4 s{2, 3, 7, 7};
  backward_case<float> bc(s, 8, 0);
  const auto want = bc.reference(true);
  const double size = bc.term_size();
  std::vector<float> dgamma(3), dbeta(3);
  bnff::batch_norm_backward<bnff::bn_relu>(bc.x.cview(), bc.dz.cview(), cvview(bc.mean), cvview(bc.invstd),
                                           cvview(bc.scale), cvview(bc.beta), bc.dz.view(), vview(dgamma),
                                           vview(dbeta));
  CHECK(max_abs_diff(bc.dz.packed(), want.dx) <= grad_tol<float> * size);
  CHECK(max_abs_diff(dbeta, want.dbeta) <= grad_tol<float> * (1 + max_abs(want.dbeta)));
}

TEST_CASE("batch_norm_backward gives the same bits with 1 and 2 threads", "[batch_norm]") {
  const shape4 s{3, 7, 19, 23};  // one channel per group
  const backward_case<float> bc(s, 13);
  slice_tensor<float> a(s, 0, 0, 0), b(s, 0, 0, 0);
  std::vector<float> ga(7), ba(7), gb(7), bb(7);
  bnff::set_num_threads(1);
  bc.run<bnff::bn_relu>(a.view(), ga, ba);
  bnff::set_num_threads(2);
  bc.run<bnff::bn_relu>(b.view(), gb, bb);
  bnff::set_num_threads(1);
  CHECK(a.storage == b.storage);
  CHECK(ga == gb);
  CHECK(ba == bb);
}

TEST_CASE("batch_norm_backward's channel groups stay in cache and spread over threads", "[batch_norm]") {
  using bnff::detail::backward_group_bytes;
  using bnff::detail::backward_group_channels;
  using bnff::detail::backward_group_max;
  for (index_t images : {1, 3, 16, 64})
    for (index_t plane : {1, 49, 784, 3136, 12544, 50176})
      for (index_t channels : {1, 7, 16, 40, 130, 224, 1024})
        for (index_t elem : {4, 8}) {
          const index_t g = backward_group_channels(images, plane, channels, elem);
          CAPTURE(images, plane, channels, elem, g);
          CHECK(g >= 1);
          CHECK(g <= backward_group_max);
          if (g > 1) CHECK(2 * images * plane * elem * g <= backward_group_bytes);
          if (channels >= 16) CHECK((channels + g - 1) / g >= 16);
        }
}

TEST_CASE("batch_norm_backward with several channels per task (grouped sweeps)", "[batch_norm]") {
  // 40 and 130 channels: groups of 2 and 8 channels (130 leaves a last group of
  // 2), each reduced image by image, then swept for dx; planes of one and of
  // several 1024-element sum chunks; one and three images.
  for (const shape4& s : {shape4{2, 40, 5, 7}, shape4{1, 130, 33, 35}, shape4{3, 40, 33, 35}}) {
    const backward_case<float> bc(s, 23);
    const auto want = bc.reference(true);
    std::vector<float> ga(std::size_t(s.c)), ba(std::size_t(s.c)), gb(std::size_t(s.c)), bb(std::size_t(s.c));
    slice_tensor<float> a(s, 0, 0, 1), b(s, 0, 0, 1);
    a.fill_nan(), b.fill_nan();
    bnff::set_num_threads(1);
    bc.run<bnff::bn_relu>(a.view(), ga, ba);
    bnff::set_num_threads(2);
    bc.run<bnff::bn_relu>(b.view(), gb, bb);
    bnff::set_num_threads(1);
    CAPTURE(s);
    CHECK(a.storage == b.storage);
    CHECK(ga == gb);
    CHECK(ba == bb);
    CHECK(max_abs_diff(a.packed(), want.dx) <= grad_tol<float> * bc.term_size());
    CHECK(max_abs_diff(ga, want.dgamma) <= grad_tol<float> * (1 + max_abs(want.dgamma)));
    CHECK(max_abs_diff(ba, want.dbeta) <= grad_tol<float> * (1 + max_abs(want.dbeta)));
  }
}

TEST_CASE("fused BN + ReLU backward agrees with finite differences (double)", "[batch_norm]") {
  // L = sum(w * relu(BN(x))) with batch statistics from x; dL/dx, dL/dgamma,
  // dL/dbeta from the kernel against central differences of the reference forward.
  const shape4 s{2, 2, 3, 3};
  const auto c = std::size_t(s.c);
  const auto x0 = random_vector(std::size_t(s.size()), 21, -2.0, 2.0);
  const auto w = random_vector(std::size_t(s.size()), 22, -1.0, 1.0);
  const auto gamma0 = random_vector(c, 23, 0.5, 2.0), beta0 = random_vector(c, 24, -0.5, 0.5);
  auto loss = [&](const std::vector<double>& x, const std::vector<double>& gamma, const std::vector<double>& beta) {
    const auto st = bnff::ref::batch_stats(s, x);
    const auto z = bnff::ref::relu(bnff::ref::bn_normalize(s, x, st.mean, st.var, gamma, beta, eps));
    double l = 0;
    for (std::size_t i = 0; i < z.size(); ++i) l += w[i] * z[i];
    return l;
  };

  slice_tensor<double> x(s, 0, 0, 0), dz(s, 0, 0, 0), dx(s, 0, 0, 0);
  x.set_packed(x0);
  dz.set_packed(w);
  std::vector<moments> m(c);
  std::vector<double> mean(c), invstd(c), scale(c), shift(c), dgamma(c), dbeta(c);
  bnff::batch_norm_stats(x.cview(), vview(m));
  bnff::batch_norm_finalize<double>(cvview(m), cvview(gamma0), cvview(beta0), eps, vview(mean), vview(invstd),
                                    vview(scale), vview(shift));
  bnff::batch_norm_backward<bnff::bn_relu>(x.cview(), dz.cview(), cvview(mean), cvview(invstd), cvview(scale),
                                           cvview(beta0), dx.view(), vview(dgamma), vview(dbeta));
  const auto got = dx.packed();

  // Central differences: truncation ~h^2, rounding ~1e-16 / h; h = 1e-5 keeps both near 1e-10.
  const double h = 1e-5, tol = 1e-7;
  for (std::size_t i = 0; i < x0.size(); ++i) {
    auto xp = x0, xm = x0;
    xp[i] += h, xm[i] -= h;
    const double fd = (loss(xp, gamma0, beta0) - loss(xm, gamma0, beta0)) / (2 * h);
    CAPTURE(i);
    CHECK(got[i] == Approx(fd).margin(tol));
  }
  for (std::size_t k = 0; k < c; ++k) {
    auto gp = gamma0, gm = gamma0, bp = beta0, bm = beta0;
    gp[k] += h, gm[k] -= h, bp[k] += h, bm[k] -= h;
    CHECK(dgamma[k] == Approx((loss(x0, gp, beta0) - loss(x0, gm, beta0)) / (2 * h)).margin(tol));
    CHECK(dbeta[k] == Approx((loss(x0, gamma0, bp) - loss(x0, gamma0, bm)) / (2 * h)).margin(tol));
  }
}

TEST_CASE("batch_norm_backward with streaming stores gives the same bits at any alignment", "[batch_norm]") {
  // Large outputs take the streaming path; the sweeps are run on both paths directly here.
  for (const shape4& s : {shape4{2, 3, 7, 7}, shape4{1, 2, 5, 33}}) {
    for (index_t offset : {0, 1, 5}) {
      const backward_case<float> bc(s, 17);
      slice_tensor<float> a(s, 1, 0, offset), b(s, 1, 0, offset);
      a.fill_nan(), b.fill_nan();
      std::vector<float> ga(std::size_t(s.c)), ba(std::size_t(s.c)), gb(std::size_t(s.c)), bb(std::size_t(s.c));
      bnff::detail::bn_backward_sweeps<bnff::bn_relu, bnff::grad_overwrite, bnff::simd::temporal_stores,
                                       xsimd::default_arch, float>(bc.x.cview(), bc.dz.cview(), bc.mean.data(),
                                                                   bc.invstd.data(), bc.scale.data(), bc.beta.data(),
                                                                   a.view(), ga.data(), ba.data());
      bnff::detail::bn_backward_sweeps<bnff::bn_relu, bnff::grad_overwrite, bnff::simd::streaming_stores,
                                       xsimd::default_arch, float>(bc.x.cview(), bc.dz.cview(), bc.mean.data(),
                                                                   bc.invstd.data(), bc.scale.data(), bc.beta.data(),
                                                                   b.view(), gb.data(), bb.data());
      CAPTURE(s, offset);
      CHECK(a.packed() == b.packed());
      CHECK(ga == gb);
      CHECK(ba == bb);
      CHECK(b.outside_untouched());
      CHECK(max_abs_diff(b.packed(), bc.reference(true).dx) <= grad_tol<float> * bc.term_size());
    }
  }
}
