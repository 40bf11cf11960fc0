#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "bnff/stats/block_moments.hpp"
#include "support/random.hpp"

namespace {

using bnff::index_t;

// Two passes in double over the given values: the oracle.
template <class T>
bnff::moments reference_moments(const T* x, index_t len) {
  double s = 0;
  for (index_t i = 0; i < len; ++i) s += double(x[i]);
  const double mean = s / double(len);
  double m2 = 0;
  for (index_t i = 0; i < len; ++i) m2 += (double(x[i]) - mean) * (double(x[i]) - mean);
  return {double(len), mean, m2};
}

const index_t sizes[] = {1, 2, 3, 7, 15, 16, 17, 31, 32, 33, 61, 64, 65, 97, 127, 1023, 1024, 1025, 3136, 5003};

}  // namespace

TEMPLATE_TEST_CASE("block_moments matches the double reference around the SIMD width", "[stats]", float, double) {
  for (index_t len : sizes) {
    const auto x = bnff::test::cast_vector<TestType>(bnff::test::random_vector(std::size_t(len), 17 + len, -1.0, 3.0));
    const auto got = bnff::block_moments(x.data(), len);
    const auto want = reference_moments(x.data(), len);
    CAPTURE(len);
    CHECK(got.count == double(len));
    // Inputs are exact in T and the kernel accumulates in T for at most ~20
    // roundings before flushing into double: 1e-5 of the data's scale bounds
    // the float error with room to spare, 1e-13 the double one.
    const double tol = std::is_same_v<TestType, float> ? 1e-5 : 1e-13;
    CHECK(got.mean == Approx(want.mean).margin(tol));
    CHECK(got.m2 == Approx(want.m2).epsilon(tol).margin(tol));
  }
}

TEST_CASE("block_moments bits do not depend on the address of the block", "[stats]") {
  for (index_t len : sizes) {
    const auto src = bnff::test::cast_vector<float>(bnff::test::random_vector(std::size_t(len), 5, -2.0, 2.0));
    const auto first = bnff::block_moments(src.data(), len);
    for (index_t offset = 1; offset < 4; ++offset) {
      std::vector<float> shifted(std::size_t(len + offset), 0.0f);
      std::copy(src.begin(), src.end(), shifted.begin() + offset);
      const auto again = bnff::block_moments(shifted.data() + offset, len);
      CAPTURE(len, offset);
      CHECK(again.mean == first.mean);
      CHECK(again.m2 == first.m2);
    }
  }
}

TEST_CASE("block_moments keeps the float variance when |mean| / std is 1e4", "[stats]") {
  for (double mean : {1e2, -3e3, 1e4}) {
    for (index_t len : {index_t(17), index_t(1024), index_t(5003)}) {
      const auto noise = bnff::test::random_vector(std::size_t(len), 99, -1.0, 1.0);
      std::vector<float> x(static_cast<std::size_t>(len));
      for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(mean + noise[i]);
      const auto got = bnff::block_moments(x.data(), len);
      const auto want = reference_moments(x.data(), len);
      CAPTURE(mean, len);
      // The numerics contract: float variance relative error below 1e-5.
      CHECK(std::abs(got.m2 - want.m2) <= 1e-5 * want.m2);
      CHECK(std::abs(got.mean - want.mean) <= 1e-5);
    }
  }
}

TEMPLATE_TEST_CASE("block_moments takes an off-centre block again about its mean", "[stats]", float, double) {
  // The sweep's first shift is the mean of the block's first four SIMD batches
  // (16 to 64 elements). Here the first 16 elements sit 40 above a mean of 1e4
  // and the rest spread over [-1, 1] around it: that shift is 10 to 40 above
  // the block's mean, several of its standard deviations, so the block is swept
  // again about its mean, and the variance keeps the accuracy of a centred block.
  using batch = xsimd::batch<TestType>;
  const std::size_t window = 4 * batch::size;
  for (index_t len : {index_t(1024), index_t(3136), index_t(5003)}) {
    const auto noise = bnff::test::random_vector(std::size_t(len), 7 + len, -1.0, 1.0);
    std::vector<TestType> x(static_cast<std::size_t>(len));
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = TestType(1e4 + (i < 16 ? 40.0 : noise[i]));
    const auto got = bnff::block_moments(x.data(), len);
    const auto want = reference_moments(x.data(), len);
    CAPTURE(len);
    const double tol = std::is_same_v<TestType, float> ? 1e-5 : 1e-13;
    CHECK(std::abs(got.m2 - want.m2) <= tol * want.m2);
    CHECK(std::abs(got.mean - want.mean) <= tol * 1e4);

    // The shift it settled on is the block's mean, not the first batches', and
    // moments about it are block_moments' bits (what the unfused passes rely on).
    const TestType shift = bnff::detail::block_shift<TestType, xsimd::default_arch>(x.data(), len);
    CHECK(std::abs(double(shift) - want.mean) < 1e-2);
    const auto again = bnff::detail::block_moments_shifted<TestType, xsimd::default_arch>(x.data(), len, shift);
    CHECK((again.mean == got.mean && again.m2 == got.m2));

    // A centred block keeps the first batches' mean: one sweep.
    for (std::size_t i = 0; i < 16; ++i) x[i] = TestType(1e4 + noise[i]);
    double first = 0;
    for (std::size_t i = 0; i < window; ++i) first += double(x[i]);
    const double first_mean = first / double(window);  // rounded to T, and the sum's order aside:
    const TestType centred = bnff::detail::block_shift<TestType, xsimd::default_arch>(x.data(), len);
    CHECK(std::abs(double(centred) - first_mean) <= std::numeric_limits<TestType>::epsilon() * first_mean);
    CHECK(std::abs(double(centred) - reference_moments(x.data(), len).mean) > 1e-9);
  }
}

TEMPLATE_TEST_CASE("block_moments of a constant block is exact", "[stats]", float, double) {
  for (double c : {0.0, 0.1, -3.7, 1234.5678, 1e4 + 0.3, 1e-20}) {
    for (index_t len : {index_t(1), index_t(3), index_t(16), index_t(17), index_t(1000), index_t(3136)}) {
      const std::vector<TestType> x(static_cast<std::size_t>(len), TestType(c));
      const auto got = bnff::block_moments(x.data(), len);
      CAPTURE(c, len);
      CHECK(got.mean == double(TestType(c)));
      CHECK(got.m2 == 0.0);
    }
  }
}

TEMPLATE_TEST_CASE("block_moments propagates NaN and infinity", "[stats]", float, double) {
  const TestType bad[] = {std::numeric_limits<TestType>::quiet_NaN(), std::numeric_limits<TestType>::infinity()};
  for (TestType b : bad) {
    for (index_t len : {index_t(1), index_t(17), index_t(1025)}) {
      for (index_t at : {index_t(0), len / 2, len - 1}) {
        auto x = bnff::test::cast_vector<TestType>(bnff::test::random_vector(std::size_t(len), 3));
        x[std::size_t(at)] = b;
        const auto got = bnff::block_moments(x.data(), len);
        CAPTURE(b, len, at);
        CHECK(std::isnan(got.m2));
        CHECK(!std::isfinite(got.mean));
      }
    }
  }
}

TEST_CASE("block_moments of an empty block is empty moments", "[stats]") {
  const float x = 1.0f;
  const auto got = bnff::block_moments(&x, 0);
  CHECK(got.count == 0.0);
  CHECK(got.m2 == 0.0);
}
