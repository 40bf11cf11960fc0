// The trainer's non-conv layers against finite differences and hand sums, in double.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "../examples/01_densenet_trainer/layers.hpp"
#include "support/random.hpp"

using bnff::index_t;
using bnff::shape4;
using bnff::tensor_view;
using namespace trainer;

namespace {

constexpr double nan_value = std::numeric_limits<double>::quiet_NaN();

// Central differences of a scalar function f(x) in every coordinate of x.
template <class F>
std::vector<double> numeric_gradient(std::vector<double> x, F f) {
  std::vector<double> g(x.size());
  const double h = 1e-6;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + h;
    const double up = f(x);
    x[i] = keep - h;
    const double down = f(x);
    x[i] = keep;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

// Central differences have O(h^2) truncation and ~1e-16/h rounding error: 1e-7
// relative to the largest gradient entry is far above both for these smooth losses.
void check_close(const std::vector<double>& analytic, const std::vector<double>& numeric) {
  REQUIRE(analytic.size() == numeric.size());
  double scale = 1e-3;
  for (double v : numeric) scale = std::max(scale, std::abs(v));
  for (std::size_t i = 0; i < analytic.size(); ++i) {
    INFO("element " << i);
    CHECK(std::abs(analytic[i] - numeric[i]) <= 1e-7 * scale);
  }
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

TEST_CASE("avg_pool2x2: forward matches the definition, backward matches finite differences", "[trainer][layers]") {
  for (index_t h : {2, 3, 7, 8}) {
    for (index_t w : {2, 5, 16}) {
      INFO("h " << h << " w " << w);
      // Input and output are channel slices of larger buffers, as in the network.
      const shape4 xs{2, 5, h, w}, ys{2, 4, h / 2, w / 2};
      std::vector<double> xbuf = bnff::test::random_vector(std::size_t(xs.size()), 11);
      std::vector<double> ybuf(std::size_t(ys.size()), nan_value);
      tensor_view<double> x = tensor_view<double>(xbuf.data(), xs).channels(1, 3);
      tensor_view<double> y = tensor_view<double>(ybuf.data(), ys).channels(1, 3);
      avg_pool2x2_forward<double>(x, y);
      for (index_t n = 0; n < 2; ++n)
        for (index_t c = 0; c < 3; ++c)
          for (index_t i = 0; i < h / 2; ++i)
            for (index_t j = 0; j < w / 2; ++j) {
              const double expect = (x(n, c, 2 * i, 2 * j) + x(n, c, 2 * i, 2 * j + 1) + x(n, c, 2 * i + 1, 2 * j) +
                                     x(n, c, 2 * i + 1, 2 * j + 1)) /
                                    4;
              CHECK(y(n, c, i, j) == Approx(expect).epsilon(1e-15));
            }
      // Channels outside the slice stay untouched.
      CHECK(std::isnan(ybuf[0]));

      // Backward: dL/dx of L = sum(pool(x) * g) for a random g.
      const shape4 ps{1, 2, h, w}, qs{1, 2, h / 2, w / 2};
      const auto g = bnff::test::random_vector(std::size_t(qs.size()), 12);
      auto loss = [&](const std::vector<double>& xv) {
        std::vector<double> out(std::size_t(qs.size()));
        avg_pool2x2_forward<double>(tensor_view<const double>(xv.data(), ps), tensor_view<double>(out.data(), qs));
        return dot(out, g);
      };
      std::vector<double> dx(std::size_t(ps.size()), nan_value);
      avg_pool2x2_backward<double>(tensor_view<const double>(g.data(), qs), tensor_view<double>(dx.data(), ps));
      check_close(dx, numeric_gradient(bnff::test::random_vector(std::size_t(ps.size()), 13), loss));
    }
  }
}

TEST_CASE("avg_pool2x2: bad shapes are refused before writing", "[trainer][layers]") {
  std::vector<float> x(1 * 2 * 4 * 4, 1.0f), y(1 * 2 * 3 * 2, -7.0f);
  try {
    avg_pool2x2_forward<float>(tensor_view<const float>(x.data(), 1, 2, 4, 4),
                               tensor_view<float>(y.data(), 1, 2, 3, 2));
    FAIL("no error");
  } catch (const bnff::error& e) {
    CHECK_THAT(e.what(), Catch::Contains("y.shape"));
  }
  for (float v : y) CHECK(v == -7.0f);
}

TEST_CASE("global_avg_pool: forward is the mean, backward matches finite differences", "[trainer][layers]") {
  for (index_t hw : {1, 3, 8}) {
    const shape4 s{3, 4, hw, hw + 1};
    const auto x = bnff::test::random_vector(std::size_t(s.size()), 21);
    std::vector<double> y(12, nan_value);
    global_avg_pool_forward<double>(tensor_view<const double>(x.data(), s), y.data());
    for (index_t n = 0; n < 3; ++n)
      for (index_t c = 0; c < 4; ++c) {
        double sum = 0;
        for (index_t i = 0; i < s.plane(); ++i) sum += x[std::size_t((n * 4 + c) * s.plane() + i)];
        CHECK(y[std::size_t(n * 4 + c)] == Approx(sum / double(s.plane())).epsilon(1e-14));
      }
    const auto g = bnff::test::random_vector(12, 22);
    auto loss = [&](const std::vector<double>& xv) {
      std::vector<double> out(12);
      global_avg_pool_forward<double>(tensor_view<const double>(xv.data(), s), out.data());
      return dot(out, g);
    };
    std::vector<double> dx(std::size_t(s.size()), nan_value);
    global_avg_pool_backward<double>(g.data(), tensor_view<double>(dx.data(), s));
    check_close(dx, numeric_gradient(x, loss));
  }
}

TEST_CASE("fully connected: forward by hand, all gradients vs finite differences", "[trainer][layers]") {
  for (const fc_shape s : {fc_shape{1, 1, 1}, fc_shape{3, 7, 5}, fc_shape{4, 17, 10}}) {
    INFO("n " << s.n << " in " << s.in << " out " << s.out);
    const auto x = bnff::test::random_vector(std::size_t(s.n * s.in), 31);
    const auto w = bnff::test::random_vector(std::size_t(s.out * s.in), 32);
    const auto b = bnff::test::random_vector(std::size_t(s.out), 33);
    const auto g = bnff::test::random_vector(std::size_t(s.n * s.out), 34);
    std::vector<double> y(std::size_t(s.n * s.out), nan_value);
    fc_forward<double>(s, x.data(), w.data(), b.data(), y.data());
    for (index_t n = 0; n < s.n; ++n)
      for (index_t o = 0; o < s.out; ++o) {
        double acc = b[std::size_t(o)], magnitude = std::abs(acc);
        for (index_t i = 0; i < s.in; ++i) {
          acc += x[std::size_t(n * s.in + i)] * w[std::size_t(o * s.in + i)];
          magnitude += std::abs(x[std::size_t(n * s.in + i)] * w[std::size_t(o * s.in + i)]);
        }
        // Summation order differs from the loop under test: rounding ~ eps * sum of |terms|.
        CHECK(std::abs(y[std::size_t(n * s.out + o)] - acc) <= 1e-14 * magnitude);
      }

    auto loss = [&](const std::vector<double>& xv, const std::vector<double>& wv, const std::vector<double>& bv) {
      std::vector<double> out(std::size_t(s.n * s.out));
      fc_forward<double>(s, xv.data(), wv.data(), bv.data(), out.data());
      return dot(out, g);
    };
    std::vector<double> dx(x.size(), nan_value), dw(w.size(), nan_value), db(b.size(), nan_value);
    fc_backward<double>(s, x.data(), w.data(), g.data(), dx.data(), dw.data(), db.data());
    check_close(dx, numeric_gradient(x, [&](const std::vector<double>& v) { return loss(v, w, b); }));
    check_close(dw, numeric_gradient(w, [&](const std::vector<double>& v) { return loss(x, v, b); }));
    check_close(db, numeric_gradient(b, [&](const std::vector<double>& v) { return loss(x, w, v); }));
  }
}

TEST_CASE("softmax cross-entropy: loss, accuracy and gradient", "[trainer][layers]") {
  const index_t n = 5, k = 7;
  auto z = bnff::test::random_vector(std::size_t(n * k), 41, -3, 3);
  z[3] += 100;  // a large logit: the max-subtraction must keep exp finite
  const std::vector<std::int32_t> labels{3, 6, 3, 3, 1};
  std::vector<double> dz(z.size(), nan_value);
  const loss_result r = softmax_cross_entropy<double>(n, k, z.data(), labels.data(), dz.data());

  double expect = 0;
  index_t correct = 0;
  for (index_t i = 0; i < n; ++i) {
    double m = -1e300, sum = 0;
    index_t best = 0;
    for (index_t j = 0; j < k; ++j)
      if (z[std::size_t(i * k + j)] > m) m = z[std::size_t(i * k + j)], best = j;
    for (index_t j = 0; j < k; ++j) sum += std::exp(z[std::size_t(i * k + j)] - m);
    expect += std::log(sum) + m - z[std::size_t(i * k + labels[std::size_t(i)])];
    correct += best == labels[std::size_t(i)];
  }
  CHECK(r.loss == Approx(expect / n).epsilon(1e-14));
  CHECK(r.correct == correct);
  CHECK(r.correct >= 1);  // image 0's label is 3 and its logit 3 got +100

  check_close(dz, numeric_gradient(z, [&](const std::vector<double>& v) {
                return softmax_cross_entropy<double>(n, k, v.data(), labels.data(), nullptr).loss;
              }));
}

TEST_CASE("softmax cross-entropy: a label out of range is refused", "[trainer][layers]") {
  const std::vector<float> z(6, 0.0f);
  const std::vector<std::int32_t> labels{1, 3};
  std::vector<float> dz(6, -1.0f);
  try {
    softmax_cross_entropy<float>(2, 3, z.data(), labels.data(), dz.data());
    FAIL("no error");
  } catch (const bnff::error& e) {
    CHECK_THAT(e.what(), Catch::Contains("labels") && Catch::Contains("3 at index 1"));
  }
  for (float v : dz) CHECK(v == -1.0f);
}

TEST_CASE("trainer layers: 1 and 2 threads give bitwise-equal results", "[trainer][layers]") {
  // Sizes above the layers' serial threshold (2^15 elements), so that 2 threads really split the work.
  const fc_shape s{64, 600, 10};
  const auto x = bnff::test::cast_vector<float>(bnff::test::random_vector(std::size_t(s.n * s.in), 51));
  const auto w = bnff::test::cast_vector<float>(bnff::test::random_vector(std::size_t(s.out * s.in), 52));
  const auto g = bnff::test::cast_vector<float>(bnff::test::random_vector(std::size_t(s.n * s.out), 53));
  const shape4 ps{4, 16, 33, 32};
  const auto px = bnff::test::cast_vector<float>(bnff::test::random_vector(std::size_t(ps.size()), 54));
  const index_t rows = 512, classes = 10;
  const auto z = bnff::test::cast_vector<float>(bnff::test::random_vector(std::size_t(rows * classes), 55, -4, 4));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(rows));
  for (index_t i = 0; i < rows; ++i) labels[std::size_t(i)] = std::int32_t(i * 7 % classes);
  auto run = [&](int threads) {
    bnff::set_num_threads(threads);
    std::vector<float> y(std::size_t(s.n * s.out)), dx(x.size()), dw(w.size()), db(std::size_t(s.out)),
        pooled(std::size_t(4 * 16 * 16 * 16)), dpool(px.size()), gap(64), dz(z.size());
    const std::vector<float> bias(std::size_t(s.out), 0.5f);
    fc_forward<float>(s, x.data(), w.data(), bias.data(), y.data());
    fc_backward<float>(s, x.data(), w.data(), g.data(), dx.data(), dw.data(), db.data());
    avg_pool2x2_forward<float>(tensor_view<const float>(px.data(), ps),
                               tensor_view<float>(pooled.data(), 4, 16, 16, 16));
    avg_pool2x2_backward<float>(tensor_view<const float>(pooled.data(), 4, 16, 16, 16),
                                tensor_view<float>(dpool.data(), ps));
    global_avg_pool_forward<float>(tensor_view<const float>(px.data(), ps), gap.data());
    const loss_result r = softmax_cross_entropy<float>(rows, classes, z.data(), labels.data(), dz.data());
    std::vector<float> all = y;
    for (const auto* v : {&dx, &dw, &db, &pooled, &dpool, &gap, &dz}) all.insert(all.end(), v->begin(), v->end());
    all.push_back(float(r.loss));
    all.push_back(float(r.correct));
    return all;
  };
  const int saved = bnff::max_threads();
  const auto one = run(1), two = run(2);
  bnff::set_num_threads(saved);
  REQUIRE(one.size() == two.size());
  CHECK(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0);
}
