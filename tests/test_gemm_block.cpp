// The blocked GEMM driver and its microkernel against a naive double product,
// for sizes around the register tile (mr, nr) and the depth block (kc).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "bnff/conv/conv2d_backward_engine.hpp"
#include "bnff/gemm/block_gemm.hpp"
#include "bnff/simd/transpose.hpp"
#include "support/random.hpp"

namespace {

using bnff::index_t;

template <class T>
struct matrix_packer {
  const T* b;
  index_t ldb_src;
  index_t cols;
  void pack(index_t k0, index_t kcount, T* bp, index_t ldb) const {
    for (index_t k = 0; k < kcount; ++k)
      for (index_t j = 0; j < cols; ++j) bp[k * ldb + j] = b[(k0 + k) * ldb_src + j];
  }
  bnff::gemm::lookahead lookahead(index_t k0, index_t kcount) const noexcept {
    return bnff::gemm::lookahead(b + k0 * ldb_src, ldb_src, cols, kcount);
  }
};

template <class T>
void check_gemm(index_t m, index_t kdim, index_t cols) {
  using arch = xsimd::default_arch;
  const auto a = bnff::test::random_vector(std::size_t(m * kdim), 1);
  const auto b = bnff::test::random_vector(std::size_t(kdim * cols), 2);
  const auto af = bnff::test::cast_vector<T>(a), bf = bnff::test::cast_vector<T>(b);
  std::vector<T> ap(std::size_t(bnff::gemm::aligned_extent<T>(bnff::gemm::packed_a_size<T, arch>(m, kdim))));
  std::vector<T> bp(std::size_t(bnff::gemm::aligned_extent<T>(bnff::gemm::packed_b_size<T, arch>(kdim, cols))));
  T* apa = bnff::gemm::align_pointer(ap.data());
  bnff::gemm::pack_a<T, arch>(
      m, kdim, [&](index_t i, index_t k) { return af[std::size_t(i * kdim + k)]; }, apa);
  const index_t ldc = cols + 3;  // a row stride that is not a multiple of the vector width
  std::vector<T> c(std::size_t(m * ldc), std::numeric_limits<T>::quiet_NaN());
  matrix_packer<T> packer{bf.data(), cols, cols};
  std::vector<index_t> finished(std::size_t(m), 0);
  bnff::gemm::gemm_tile<T, arch>(m, kdim, apa, packer, bnff::gemm::align_pointer(bp.data()), c.data(), ldc, cols,
                                 [&](index_t r0, index_t rows) {
                                   for (index_t i = r0; i < r0 + rows; ++i) ++finished[std::size_t(i)];
                                 });
  // Error bound of a k-term dot product: k * u * sum |a||b|, with a factor 2 of margin.
  const double u = std::numeric_limits<T>::epsilon() / 2;
  for (index_t i = 0; i < m; ++i) {
    CHECK(finished[std::size_t(i)] == 1);
    for (index_t j = 0; j < cols; ++j) {
      double ref = 0, mag = 0;
      for (index_t k = 0; k < kdim; ++k) {
        ref += af[std::size_t(i * kdim + k)] * double(bf[std::size_t(k * cols + j)]);
        mag += std::abs(af[std::size_t(i * kdim + k)] * double(bf[std::size_t(k * cols + j)]));
      }
      const double got = c[std::size_t(i * ldc + j)];
      if (!(std::abs(got - ref) <= 2 * double(kdim) * u * mag)) {
        FAIL_CHECK("m " << m << " k " << kdim << " cols " << cols << " at (" << i << ", " << j << "): " << got << " vs "
                        << ref);
        return;
      }
    }
    for (index_t j = cols; j < ldc; ++j) REQUIRE(std::isnan(c[std::size_t(i * ldc + j)]));  // padding untouched
  }
}

}  // namespace

TEST_CASE("gemm_tile matches a double product around the tile sizes", "[gemm]") {
  using blk = bnff::gemm::blocking<float>;
  for (index_t m :
       {index_t(1), index_t(blk::mr - 1), index_t(blk::mr), index_t(blk::mr + 1), index_t(33), index_t(blk::mc + 3)})
    for (index_t kdim : {index_t(1), index_t(17), index_t(blk::kc), index_t(blk::kc + 5)})
      for (index_t cols : {index_t(1), index_t(blk::nr - 1), index_t(blk::nr), index_t(2 * blk::nr + 7)})
        check_gemm<float>(m, kdim, cols);
}

TEST_CASE("gemm_tile in double", "[gemm]") {
  check_gemm<double>(13, 300, 37);
  check_gemm<double>(8, 5, 24);
}

// pack_a_rows (a dense row-major A) writes what pack_a does, padding rows included.
TEST_CASE("pack_a_rows equals pack_a", "[gemm]") {
  using arch = xsimd::default_arch;
  using blk = bnff::gemm::blocking<float>;
  for (const index_t m : {index_t(1), index_t(blk::mr), index_t(3 * blk::mr + 5)})
    for (const index_t kdim : {index_t(1), index_t(37)}) {
      const index_t lda = kdim + 3;
      const auto a = bnff::test::cast_vector<float>(bnff::test::random_vector(std::size_t(m * lda), 8));
      const auto size = std::size_t(bnff::gemm::packed_a_size<float, arch>(m, kdim));
      std::vector<float> want(size, -1.0f), got(size, -2.0f);
      bnff::gemm::pack_a<float, arch>(
          m, kdim, [&](index_t i, index_t k) { return a[std::size_t(i * lda + k)]; }, want.data());
      bnff::gemm::pack_a_rows<float, arch>(m, kdim, a.data(), lda, got.data());
      REQUIRE(got == want);
    }
}

// The lookahead only prefetches: gemm_tile with one gives the same bits as without.
TEST_CASE("gemm_tile with a lookahead gives the bits of gemm_tile without", "[gemm]") {
  using arch = xsimd::default_arch;
  using blk = bnff::gemm::blocking<float>;
  const index_t m = blk::mc + 5, kdim = 2 * blk::kc + 9, cols = 2 * blk::nr + 7;
  const auto a = bnff::test::cast_vector<float>(bnff::test::random_vector(std::size_t(m * kdim), 3));
  const auto b = bnff::test::cast_vector<float>(bnff::test::random_vector(std::size_t(kdim * cols), 4));
  std::vector<float> ap(std::size_t(bnff::gemm::aligned_extent<float>(bnff::gemm::packed_a_size<float, arch>(m, kdim))));
  std::vector<float> bp(std::size_t(bnff::gemm::aligned_extent<float>(bnff::gemm::packed_b_size<float, arch>(kdim, cols))));
  float* apa = bnff::gemm::align_pointer(ap.data());
  bnff::gemm::pack_a<float, arch>(
      m, kdim, [&](index_t i, index_t k) { return a[std::size_t(i * kdim + k)]; }, apa);
  matrix_packer<float> packer{b.data(), cols, cols};
  std::vector<float> plain(std::size_t(m * cols)), ahead(std::size_t(m * cols));
  bnff::gemm::gemm_tile<float, arch>(m, kdim, apa, packer, bnff::gemm::align_pointer(bp.data()), plain.data(), cols,
                                     cols, [](index_t, index_t) {});
  const bnff::gemm::lookahead next(a.data(), kdim, kdim, m);  // any readable rows
  bnff::gemm::gemm_tile<float, arch>(m, kdim, apa, packer, bnff::gemm::align_pointer(bp.data()), ahead.data(), cols,
                                     cols, [](index_t, index_t) {}, next);
  REQUIRE(ahead == plain);
}

// The stream hands out every cache line its rows touch, each once, and nothing else;
// paced over `steps` steps, it is done within them.
TEST_CASE("lookahead covers its rows' cache lines within the paced steps", "[gemm]") {
  alignas(64) static float data[40 * 64];
  for (index_t start : {index_t(0), index_t(3), index_t(15)})
    for (index_t elements : {index_t(1), index_t(16), index_t(37)}) {
      const index_t rows = 5, ld = 3 * 64 + 5;  // row starts of every alignment
      bnff::gemm::lookahead la(data + start, ld, elements, rows);
      const index_t steps = 1000;
      la.pace(steps);
      std::vector<int> seen(sizeof(data) / 64, 0);
      index_t issued = 0;
      for (index_t s = 0; s < steps; ++s)
        if (const char* p = la.next_line()) {
          const auto byte = index_t(p - reinterpret_cast<const char*>(data));
          REQUIRE(byte >= 0);
          REQUIRE(byte < index_t(sizeof(data)));
          ++seen[std::size_t(byte / 64)];
          ++issued;
        }
      CHECK(issued <= la.lines());
      CHECK(la.next_line() == nullptr);
      std::vector<int> expect(seen.size(), 0);
      for (index_t r = 0; r < rows; ++r) {
        const index_t first = ((start + r * ld) * 4) / 64, last = ((start + r * ld + elements) * 4 - 1) / 64;
        for (index_t line = first; line <= last; ++line) ++expect[std::size_t(line)];
      }
      CHECK(seen == expect);
    }
}

// A chain hands out every line of its first stream, then every line of its second,
// each once, within the paced steps; made from one lookahead it is that stream alone.
TEST_CASE("lookahead_chain gives its first stream's lines, then its second's", "[gemm]") {
  alignas(64) static float data[64 * 64];
  const index_t ld = 2 * 64 + 7;
  const bnff::gemm::lookahead a(data + 5, ld, 40, 6), b(data + 9 * ld, ld, 17, 4);
  const auto lines_of = [](bnff::gemm::lookahead s) {
    std::vector<const char*> out;
    while (!s.done()) out.push_back(s.take_line());
    return out;
  };
  std::vector<const char*> want = lines_of(a);
  const std::vector<const char*> second = lines_of(b);
  REQUIRE(!want.empty());
  REQUIRE(!second.empty());
  want.insert(want.end(), second.begin(), second.end());
  for (const index_t steps : {index_t(1), index_t(want.size()), index_t(997)}) {
    bnff::gemm::lookahead_chain chain(a, b);
    CHECK(chain.lines() >= index_t(want.size()));
    chain.pace(steps);
    std::vector<const char*> got;
    for (index_t s = 0; s < std::max(steps, chain.lines()); ++s)
      if (const char* p = chain.next_line()) got.push_back(p);
    CHECK(got == want);
    CHECK(chain.done());
    if (steps >= chain.lines()) CHECK(index_t(got.size()) <= steps);
  }
  bnff::gemm::lookahead_chain only(a);
  only.pace(1);
  std::vector<const char*> got;
  while (const char* p = only.next_line()) got.push_back(p);
  CHECK(got == lines_of(a));
}

// gemm_tile_rows reads B in place; a lookahead beside it changes no bit.
TEST_CASE("gemm_tile_rows with a lookahead gives the bits of gemm_tile_rows without", "[gemm]") {
  using arch = xsimd::default_arch;
  using blk = bnff::gemm::blocking<float>;
  const index_t m = blk::mc + 3, kdim = blk::kc + 11, cols = 2 * blk::nr + 5, ldb = bnff::gemm::round_up(cols, blk::nr);
  const auto a = bnff::test::cast_vector<float>(bnff::test::random_vector(std::size_t(m * kdim), 5));
  auto b = bnff::test::cast_vector<float>(bnff::test::random_vector(std::size_t(kdim * ldb), 6));
  std::vector<float> ap(std::size_t(bnff::gemm::aligned_extent<float>(bnff::gemm::packed_a_size<float, arch>(m, kdim))));
  float* apa = bnff::gemm::align_pointer(ap.data());
  bnff::gemm::pack_a<float, arch>(
      m, kdim, [&](index_t i, index_t k) { return a[std::size_t(i * kdim + k)]; }, apa);
  std::vector<const float*> rows(std::size_t(blk::kc));
  const auto rows_for = [&](index_t k0, index_t kcount) {
    for (index_t k = 0; k < kcount; ++k) rows[std::size_t(k)] = b.data() + (k0 + k) * ldb;
    return static_cast<const float* const*>(rows.data());
  };
  std::vector<float> plain(std::size_t(m * cols)), ahead(std::size_t(m * cols));
  std::vector<index_t> finished;
  bnff::gemm::gemm_tile_rows<float, arch>(m, kdim, apa, rows_for, plain.data(), cols, cols,
                                          [&](index_t row0, index_t) { finished.push_back(row0); });
  const bnff::gemm::lookahead next(a.data(), kdim, kdim, m);
  std::vector<index_t> finished_ahead;
  bnff::gemm::gemm_tile_rows<float, arch>(
      m, kdim, apa, rows_for, ahead.data(), cols, cols, [&](index_t row0, index_t) { finished_ahead.push_back(row0); },
      next);
  REQUIRE(ahead == plain);
  CHECK(finished_ahead == finished);
  // and both are the product
  for (index_t i = 0; i < m; i += 7)
    for (index_t j = 0; j < cols; j += 5) {
      double ref = 0;
      for (index_t k = 0; k < kdim; ++k) ref += double(a[std::size_t(i * kdim + k)]) * double(b[std::size_t(k * ldb + j)]);
      REQUIRE(double(plain[std::size_t(i * cols + j)]) == Approx(ref).epsilon(1e-4).margin(1e-4));
    }
}

namespace {

// transpose_tile on rows at odd offsets into a destination with a wider row stride: every
// element lands at its transposed place, and nothing outside the tile is written.
template <class T>
void check_transpose_tile() {
  using arch = xsimd::default_arch;
  constexpr index_t w = index_t(xsimd::batch<T, arch>::size);
  std::vector<T> src(std::size_t(w * (w + 3) + 1));
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = T(i) + T(0.25);
  const T* rows[w];
  for (index_t i = 0; i < w; ++i) rows[i] = src.data() + 1 + i * (w + 3);
  const index_t ld = w + 5;
  std::vector<T> dst(std::size_t(w * ld + 2), T(-1));
  bnff::simd::transpose_tile<T, arch>(rows, dst.data() + 1, ld);
  for (index_t j = 0; j < w; ++j)
    for (index_t i = 0; i < ld; ++i) {
      const T got = dst[std::size_t(1 + j * ld + i)];
      if (i < w)
        REQUIRE(got == rows[i][j]);
      else if (1 + j * ld + i < index_t(dst.size()))
        REQUIRE(got == T(-1));
    }
  REQUIRE(dst[0] == T(-1));
}

}  // namespace

TEST_CASE("transpose_tile moves element (i, j) to (j, i)", "[gemm][simd]") {
  check_transpose_tile<float>();
  check_transpose_tile<double>();
}

TEST_CASE("pack_transposed turns rows into columns, zero past the rows", "[gemm][simd]") {
  using arch = xsimd::default_arch;
  constexpr index_t w = index_t(xsimd::batch<float, arch>::size);
  for (const index_t nrows : {index_t(1), w - 1, w, w + 3}) {
    for (const index_t len : {index_t(1), w, 2 * w + 5}) {
      const index_t nrows_p = (nrows + w - 1) / w * w, lda = nrows_p;
      std::vector<float> src(std::size_t(nrows * 40));
      for (std::size_t i = 0; i < src.size(); ++i) src[i] = float(i) + 0.5f;
      std::vector<float> dst(std::size_t((len + w) * lda), std::numeric_limits<float>::quiet_NaN());
      bnff::detail::pack_transposed<float, arch>(
          nrows, nrows_p, len, [&](index_t i) { return src.data() + i * 40 + 3; }, dst.data(), lda);
      for (index_t p = 0; p < len; ++p)
        for (index_t i = 0; i < nrows_p; ++i)
          REQUIRE(dst[std::size_t(p * lda + i)] == (i < nrows ? src[std::size_t(i * 40 + 3 + p)] : 0.0f));
    }
  }
}
