// SGD with momentum and weight decay vs a hand computation; the schedule; He initialization.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "../examples/01_densenet_trainer/optimizer.hpp"

using namespace trainer;

TEST_CASE("sgd_step: PyTorch momentum and weight decay, by hand", "[trainer][optimizer]") {
  parameter p("w", 3, true);
  p.value = {1.0f, -2.0f, 0.5f};
  const sgd_settings s{0.1, 0.9, 0.01};
  // Step 1: buf = g + wd * w; w -= lr * buf.
  p.grad = {0.5f, 0.25f, -1.0f};
  sgd_step(p, 0.1, s);
  const double b1[3] = {0.5 + 0.01 * 1.0, 0.25 + 0.01 * -2.0, -1.0 + 0.01 * 0.5};
  const double w1[3] = {1.0 - 0.1 * b1[0], -2.0 - 0.1 * b1[1], 0.5 - 0.1 * b1[2]};
  // Step 2 with another learning rate: buf = 0.9 * buf + g + wd * w.
  p.grad = {-0.5f, 0.0f, 2.0f};
  sgd_step(p, 0.05, s);
  const double g2[3] = {-0.5, 0.0, 2.0};
  for (int i = 0; i < 3; ++i) {
    const double b2 = 0.9 * b1[i] + g2[i] + 0.01 * w1[i];
    const double w2 = w1[i] - 0.05 * b2;
    // float arithmetic of a few operations on O(1) values: within 1e-6 relative.
    CHECK(p.momentum[std::size_t(i)] == Approx(b2).epsilon(1e-6));
    CHECK(p.value[std::size_t(i)] == Approx(w2).epsilon(1e-6));
  }

  parameter q("bn.gamma", 1, false);  // no weight decay on BN affine parameters
  q.value = {2.0f};
  q.grad = {0.0f};
  sgd_step(q, 0.1, s);
  CHECK(q.value[0] == 2.0f);
}

TEST_CASE("sgd_step: a tensor larger than one chunk is updated everywhere", "[trainer][optimizer]") {
  parameter p("w", 10000, true);
  for (std::size_t i = 0; i < p.value.size(); ++i) p.value[i] = float(i % 7), p.grad[i] = 1.0f;
  sgd_step(p, 0.5, {0.5, 0.0, 0.0});
  for (std::size_t i = 0; i < p.value.size(); ++i) REQUIRE(p.value[i] == float(i % 7) - 0.5f);
}

TEST_CASE("cosine schedule", "[trainer][optimizer]") {
  const cosine_schedule c{0.2, 100};
  CHECK(c.at(0) == Approx(0.2));
  CHECK(c.at(50) == Approx(0.1));
  CHECK(c.at(25) == Approx(0.1 * (1 + std::sqrt(0.5))));
  CHECK(c.at(100) == Approx(0.0).margin(1e-15));
  CHECK(c.at(1000) == Approx(0.0).margin(1e-15));
  for (std::uint64_t t = 1; t < 100; ++t) CHECK(c.at(t) < c.at(t - 1));
}

TEST_CASE("he_normal: deterministic, zero mean, variance 2 / fan_in", "[trainer][optimizer]") {
  parameter a("w", 20000, true), b("w", 20000, true), c("w", 20000, true);
  he_normal(a, 50, 7, 1);
  he_normal(b, 50, 7, 1);
  he_normal(c, 50, 7, 2);
  CHECK(a.value == b.value);
  CHECK(a.value != c.value);
  double sum = 0, sq = 0;
  for (float v : a.value) sum += v, sq += double(v) * v;
  const double n = double(a.value.size()), mean = sum / n, var = sq / n - mean * mean;
  // 20000 samples: the mean's standard error is 0.2/141 = 0.0014, the variance's about 1%.
  CHECK(std::abs(mean) < 0.006);
  CHECK(var == Approx(2.0 / 50).epsilon(0.05));
}
