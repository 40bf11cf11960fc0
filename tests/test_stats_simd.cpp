// The SIMD building blocks under the statistics and batch-norm kernels, on
// every instruction set this build can run, so the portable paths are covered
// even where the default architecture is AVX-512.
#include <catch2/catch.hpp>

#include <cmath>
#include <tuple>
#include <vector>

#include "bnff/simd/fma.hpp"
#include "bnff/simd/for_each_lanes.hpp"
#include "bnff/simd/load_partial.hpp"
#include "bnff/simd/reduce_add.hpp"
#include "bnff/simd/store_partial.hpp"
#include "bnff/simd/store_policy.hpp"
#include "bnff/simd/sum_lanes.hpp"
#include "bnff/stats/block_moments.hpp"
#include "support/random.hpp"

namespace {

using bnff::index_t;

template <class T, class A>
struct case_t {
  using type = T;
  using arch = A;
};

}  // namespace

#if defined(__AVX512BW__)
#define BNFF_TEST_ARCH_CASES                                                                              \
  (case_t<float, xsimd::sse2>), (case_t<double, xsimd::sse2>), (case_t<float, xsimd::fma3<xsimd::avx2>>), \
      (case_t<double, xsimd::fma3<xsimd::avx2>>), (case_t<float, xsimd::avx512bw>), (case_t<double, xsimd::avx512bw>)
#elif defined(__AVX2__) && defined(__FMA__)
#define BNFF_TEST_ARCH_CASES                                                                              \
  (case_t<float, xsimd::sse2>), (case_t<double, xsimd::sse2>), (case_t<float, xsimd::fma3<xsimd::avx2>>), \
      (case_t<double, xsimd::fma3<xsimd::avx2>>)
#else
#define BNFF_TEST_ARCH_CASES (case_t<float, xsimd::sse2>), (case_t<double, xsimd::sse2>)
#endif

TEMPLATE_TEST_CASE("load_partial and store_partial touch exactly count lanes", "[stats][simd]", BNFF_TEST_ARCH_CASES) {
  using T = typename TestType::type;
  using A = typename TestType::arch;
  constexpr index_t w = index_t(xsimd::batch<T, A>::size);
  for (index_t count = 0; count <= w; ++count) {
    std::vector<T> src(std::size_t(w) + 2), dst(std::size_t(w) + 2, T(-1));
    for (index_t i = 0; i < w + 2; ++i) src[std::size_t(i)] = T(i + 1);
    const auto v = bnff::simd::load_partial<A>(src.data() + 1, count, T(42));
    T lanes[w];
    v.store_unaligned(lanes);
    bnff::simd::store_partial(dst.data() + 1, v, count);
    CAPTURE(count);
    for (index_t i = 0; i < w; ++i) CHECK(lanes[i] == (i < count ? T(i + 2) : T(42)));
    CHECK(dst[0] == T(-1));
    for (index_t i = 0; i < w + 1; ++i) CHECK(dst[std::size_t(i + 1)] == (i < count ? T(i + 2) : T(-1)));
  }
}

TEMPLATE_TEST_CASE("for_each_lanes visits every element once, in order", "[stats][simd]", BNFF_TEST_ARCH_CASES) {
  using T = typename TestType::type;
  using A = typename TestType::arch;
  for (index_t len = 0; len < 80; ++len) {
    std::vector<T> in(std::size_t(len) + 1), out(std::size_t(len) + 1, T(-1));
    for (index_t i = 0; i < len; ++i) in[std::size_t(i)] = T(i);
    index_t next = 0;
    bool ordered = true;
    bnff::simd::for_each_lanes<T, A, 4>(len, [&](auto lanes, auto) {
      ordered = ordered && lanes.offset == next;
      next = lanes.offset + index_t(xsimd::batch<T, A>::size);
      lanes.store(out.data(), lanes.load(in.data()) + T(1));
    });
    CAPTURE(len);
    CHECK(ordered);
    for (index_t i = 0; i < len; ++i) CHECK(out[std::size_t(i)] == T(i + 1));
    CHECK(out[std::size_t(len)] == T(-1));
  }
}

TEMPLATE_TEST_CASE("streaming_stores writes every element once at any alignment", "[stats][simd]",
                   BNFF_TEST_ARCH_CASES) {
  using T = typename TestType::type;
  using A = typename TestType::arch;
  for (index_t len : {0, 1, 3, 7, 15, 16, 17, 33, 70}) {
    for (index_t offset = 0; offset < 18; ++offset) {
      std::vector<T> in(static_cast<std::size_t>(len)), buf(static_cast<std::size_t>(len + offset + 32), T(-1));
      for (index_t i = 0; i < len; ++i) in[std::size_t(i)] = T(i);
      T* out = buf.data() + offset;
      bnff::simd::streaming_stores::for_each<T, A>(
          len, out, [&](auto lanes, auto) { lanes.store(out, lanes.load(in.data()) * T(2)); });
      bnff::simd::streaming_stores::finish();
      CAPTURE(len, offset);
      for (index_t i = 0; i < index_t(buf.size()); ++i) {
        const index_t j = i - offset;
        REQUIRE(buf[std::size_t(i)] == (j >= 0 && j < len ? T(2 * j) : T(-1)));
      }
    }
  }
}

TEMPLATE_TEST_CASE("reduce_add_double and sum_lanes sum exactly where the data allows", "[stats][simd]",
                   BNFF_TEST_ARCH_CASES) {
  using T = typename TestType::type;
  using A = typename TestType::arch;
  using batch = xsimd::batch<T, A>;
  T lanes[batch::size];
  for (std::size_t i = 0; i < batch::size; ++i) lanes[i] = T(i * i + 1);
  double want = 0;
  for (T v : lanes) want += double(v);
  CHECK(bnff::simd::reduce_add_double(batch::load_unaligned(lanes)) == want);
  // Small integers: every partial sum is exact, so the order cannot matter.
  for (index_t len : {0, 1, 5, 17, 1023, 1025, 3000}) {
    std::vector<T> x(static_cast<std::size_t>(len));
    double s0 = 0, s1 = 0;
    for (index_t i = 0; i < len; ++i) x[std::size_t(i)] = T(i % 7), s0 += double(i % 7), s1 += double(i % 7) * 2;
    std::array<double, 2> got{0.0, 0.0};
    bnff::simd::sum_lanes<2, T, A>(len, got, [&](auto l, auto& acc) {
      const batch v = l.load(x.data(), T(0));
      acc[0] += v;
      acc[1] = bnff::simd::fma(v, batch(T(2)), acc[1]);
    });
    CAPTURE(len);
    CHECK(got[0] == s0);
    CHECK(got[1] == s1);
  }
}

TEMPLATE_TEST_CASE("block_moments on every instruction set", "[stats][simd]", BNFF_TEST_ARCH_CASES) {
  using T = typename TestType::type;
  using A = typename TestType::arch;
  for (index_t len : {1, 3, 7, 15, 16, 17, 33, 1000, 1024, 1031, 5000}) {
    for (double shift : {0.0, 1e4}) {
      auto r = bnff::test::random_vector(std::size_t(len), 9 + len, -1.0, 1.0);
      std::vector<T> x(r.size());
      for (std::size_t i = 0; i < r.size(); ++i) x[i] = T(shift + r[i]);
      double mean = 0, m2 = 0;
      for (T v : x) mean += double(v);
      mean /= double(len);
      for (T v : x) m2 += (double(v) - mean) * (double(v) - mean);
      const auto got = bnff::block_moments<T, A>(x.data(), len);
      CAPTURE(len, shift);
      // As for the default architecture: the numerics contract (1e-5 for float).
      const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
      CHECK(std::abs(got.m2 - m2) <= tol * m2 + 1e-30);
      CHECK(std::abs(got.mean - mean) <= tol * (1 + std::abs(mean)));
      const std::vector<T> constant(std::size_t(len), T(shift + 0.3));
      CHECK(bnff::block_moments<T, A>(constant.data(), len).m2 == 0.0);
    }
  }
}
