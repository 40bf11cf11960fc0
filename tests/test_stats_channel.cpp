#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "bnff/ops/batch_norm_finalize.hpp"
#include "bnff/ops/batch_norm_stats.hpp"
#include "bnff/ops/unfused/batch_norm_moments_passes.hpp"
#include "bnff/parallel/parallel.hpp"
#include "support/reference.hpp"
#include "test_batch_norm_support.hpp"

namespace {

using bnff::index_t;
using bnff::moments;
using bnff::shape4;
using namespace bnff::test;

template <class T>
std::vector<moments> stats_of(const slice_tensor<T>& x, index_t block = bnff::default_stats_block) {
  std::vector<moments> out(std::size_t(x.shape.c));
  bnff::batch_norm_stats(x.cview(), vview(out), block);
  return out;
}

// Off-centre blocks: in every other plane, the first 16 elements of each block
// (the first SIMD batch or more) set far from the data's [-3, 1], so that
// block_moments takes those blocks a second time about their mean. The
// bitwise tests then cover both of its branches in every sweep order.
void put_off_centre(slice_tensor<float>& x, index_t block) {
  auto v = x.view();
  for (index_t n = 0; n < x.shape.n; ++n)
    for (index_t c = n % 2; c < x.shape.c; c += 2)
      for (index_t b0 = 0; b0 < v.plane(); b0 += block)
        for (index_t i = b0; i < b0 + 16 && i < v.plane(); ++i) v.plane_ptr(n, c)[i] = 40.0f;
}

bool same_bits(const std::vector<moments>& a, const std::vector<moments>& b) {
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!(a[i].count == b[i].count && a[i].mean == b[i].mean && a[i].m2 == b[i].m2)) return false;
  return a.size() == b.size();
}

}  // namespace

TEMPLATE_TEST_CASE("batch_norm_stats matches the double reference on channel slices", "[stats]", float, double) {
  for (const shape4& s : bn_shapes()) {
    for (index_t offset : {0, 1}) {
      slice_tensor<TestType> x(s, 2, 1, offset);
      x.fill_random(7 + std::uint64_t(s.size()), -1.0, 3.0);
      const auto got = stats_of(x);
      const auto want = bnff::ref::batch_stats(s, x.packed());
      CAPTURE(s, offset);
      for (index_t c = 0; c < s.c; ++c) {
        const auto cc = std::size_t(c);
        CHECK(got[cc].count == double(s.n * s.plane()));
        // Data in [-1, 3): block sums carry <= ~20 float roundings before
        // reaching double, so 1e-5 absolute on the mean and relative on the
        // variance leaves a wide margin for float; 1e-12 for double.
        const double tol = std::is_same_v<TestType, float> ? 1e-5 : 1e-12;
        CHECK(got[cc].mean == Approx(want.mean[cc]).margin(tol));
        CHECK(got[cc].variance() == Approx(want.var[cc]).epsilon(tol).margin(tol));
      }
    }
  }
}

TEST_CASE("batch_norm_stats keeps float variance for |mean| / std up to 1e4, where the naive formula fails",
          "[stats]") {
  const shape4 s{4, 3, 16, 17};
  const double means[3] = {1e2, -2e3, 1e4};
  slice_tensor<float> x(s, 1, 0, 1);
  auto noise = random_vector(std::size_t(s.size()), 2024, -1.0, 1.0);  // std = 1 / sqrt(3)
  for (index_t n = 0; n < s.n; ++n)
    for (index_t c = 0; c < s.c; ++c)
      for (index_t i = 0; i < s.plane(); ++i) {
        auto& v = noise[std::size_t((n * s.c + c) * s.plane() + i)];
        v = double(float(means[c] + v));
      }
  x.set_packed(noise);
  const auto got = stats_of(x);
  const auto want = bnff::ref::batch_stats(s, x.packed());
  for (index_t c = 0; c < s.c; ++c) {
    const auto cc = std::size_t(c);
    CAPTURE(means[c]);
    // The numerics contract: relative variance error below 1e-5 in float.
    CHECK(std::abs(got[cc].variance() - want.var[cc]) < 1e-5 * want.var[cc]);

    // The naive single sweep E[x^2] - E[x]^2, accumulated in float, on the
    // same channel: at |mean| / std = 1e4 it loses every digit.
    float sum = 0, sum_sq = 0;
    const auto v = x.cview();
    for (index_t n = 0; n < s.n; ++n)
      for (index_t i = 0; i < s.plane(); ++i) {
        const float e = v.plane_ptr(n, c)[i];
        sum += e;
        sum_sq += e * e;
      }
    const float m = float(s.n * s.plane());
    const float naive = sum_sq / m - (sum / m) * (sum / m);
    if (std::abs(means[c]) >= 1e3) CHECK(!(std::abs(double(naive) - want.var[cc]) < 1e-2 * want.var[cc]));
  }
}

TEST_CASE("batch_norm_stats: a constant channel has variance exactly 0, NaN stays in its channel", "[stats]") {
  const shape4 s{3, 4, 5, 7};
  slice_tensor<float> x(s, 0, 2, 1);
  x.fill_random(11);
  auto v = x.view();
  for (index_t n = 0; n < s.n; ++n)
    for (index_t i = 0; i < s.plane(); ++i) v.plane_ptr(n, 1)[i] = 0.3f;  // channel 1 constant
  v(2, 3, 4, 6) = std::numeric_limits<float>::quiet_NaN();                // channel 3 poisoned
  const auto got = stats_of(x);
  CHECK(got[1].mean == double(0.3f));
  CHECK(got[1].m2 == 0.0);
  CHECK(std::isnan(got[3].mean));
  CHECK(std::isnan(got[3].m2));
  for (index_t c : {0, 2}) {
    CHECK(std::isfinite(got[std::size_t(c)].mean));
    CHECK(std::isfinite(got[std::size_t(c)].m2));
  }
}

TEST_CASE("batch_norm_stats gives the same bits with 1 and 2 threads", "[stats]") {
  // 200 channels of 5 x 5 go in groups of 12 (sweep_group_channels), more than
  // the 8 of large planes.
  for (const shape4& s : {shape4{3, 9, 17, 19}, shape4{3, 70, 17, 19}, shape4{3, 200, 5, 5}}) {
    CAPTURE(s);
    slice_tensor<float> x(s, 1, 1, 1);
    x.fill_random(5, -2.0, 5.0);
    put_off_centre(x, 64);
    bnff::set_num_threads(1);
    const auto one = stats_of(x);
    bnff::set_num_threads(2);
    const auto two = stats_of(x);
    bnff::set_num_threads(1);
    CHECK(same_bits(one, two));
  }
}

TEST_CASE("sweep_group_channels: long runs of small planes, enough tasks for the threads", "[stats]") {
  using bnff::detail::sweep_group_channels;
  for (index_t c : {1, 3, 15, 16, 17, 64, 130, 256, 512, 1000, 1024})
    for (index_t plane_bytes : {4, 100, 196, 784, 3136, 12544, 50176}) {
      CAPTURE(c, plane_bytes);
      const index_t g = sweep_group_channels(c, plane_bytes);
      CHECK(g >= 1);
      CHECK(g <= bnff::detail::sweep_group_max);
      if (c >= 16) CHECK((c + g - 1) / g >= 16);                                // the threads share the work
      if (g > 8) CHECK((g - 1) * plane_bytes < bnff::detail::sweep_run_bytes);  // no longer than a run needs
      if (g < 8) CHECK(g == (c / 16 < 1 ? 1 : c / 16));                         // fewer than 8 only to keep 16 groups
    }
  CHECK(sweep_group_channels(1024, 196) == 64);  // 7 x 7 float: 64 planes of 196 bytes
  CHECK(sweep_group_channels(1024, 784) == 42);  // 14 x 14: 42 x 784 bytes >= 32 KiB
  CHECK(sweep_group_channels(256, 12544) == 8);  // 56 x 56: 8, 100 KiB runs
  CHECK(sweep_group_channels(64, 784) == 4);     // 16 groups first
}

TEST_CASE("exported partials merged in partition order reproduce batch_norm_stats bit for bit", "[stats]") {
  // Planes of one short block, of several full 1024-element blocks plus a
  // short or a long tail, some off centre: the sweep takes planes two at a
  // time (up to 64 blocks each; an odd last plane and longer planes, as with
  // block 16 on 56 x 56, go one at a time). With 32 channels or more a task
  // walks several channels image by image (2 here, 8 with a short last task
  // for 130, and 12 for 200 small planes).
  for (const shape4& s : {shape4{3, 4, 13, 11}, shape4{2, 3, 56, 56}, shape4{1, 2, 50, 50}, shape4{3, 2, 40, 41},
                          shape4{3, 40, 9, 10}, shape4{5, 130, 7, 5}, shape4{2, 33, 40, 41}, shape4{3, 200, 5, 5}})
    for (index_t block : {index_t(16), index_t(100), index_t(1024)}) {
      CAPTURE(s, block);
      slice_tensor<float> x(s, 1, 2, 1);
      x.fill_random(31, -3.0, 1.0);
      put_off_centre(x, block);
      const auto direct = stats_of(x, block);
      const auto part = bnff::make_stats_partition(x.cview(), block);
      std::vector<moments> partials(std::size_t(part.size()));
      bnff::batch_norm_stats_partials(x.cview(), part, vview(partials));
      std::vector<moments> merged(std::size_t(s.c));
      bnff::merge_stats_partials(part, cvview(partials), vview(merged));
      CHECK(same_bits(direct, merged));

      // A producer that sees each block somewhere else (a convolution epilogue
      // working on its own output tile) and keeps the contract gets the same bits.
      std::vector<moments> tile_partials(std::size_t(part.size()));
      std::vector<float> tile(std::size_t(block) + 3);
      for (index_t c = 0; c < s.c; ++c)
        for (index_t n = 0; n < s.n; ++n)
          for (index_t b = 0; b < part.blocks_per_plane(); ++b) {
            const index_t b0 = part.block_begin(b), len = part.block_end(b) - b0;
            std::copy(x.cview().plane_ptr(n, c) + b0, x.cview().plane_ptr(n, c) + b0 + len, tile.begin() + 3);
            tile_partials[std::size_t(part.slot(c, n, b))] = bnff::block_moments(tile.data() + 3, len);
          }
      std::vector<moments> tile_merged(std::size_t(s.c));
      for (index_t c = 0; c < s.c; ++c)
        tile_merged[std::size_t(c)] = bnff::merge_channel(part, tile_partials.data(), c);
      CHECK(same_bits(direct, tile_merged));
    }
}

TEST_CASE("merge_stats combines statistics of image groups", "[stats]") {
  const shape4 s{5, 3, 6, 7};
  slice_tensor<double> x(s, 0, 0, 0);
  x.fill_random(8, 0.0, 10.0);
  const auto full = stats_of(x);
  std::vector<moments> acc(3), part(3);
  bnff::batch_norm_stats(x.cview().images(0, 2), vview(acc));
  bnff::batch_norm_stats(x.cview().images(2, 3), vview(part));
  bnff::merge_stats(cvview(part), vview(acc));
  for (std::size_t c = 0; c < 3; ++c) {
    CHECK(acc[c].count == full[c].count);
    // Chan's merge is exact in exact arithmetic; double rounding only.
    CHECK(acc[c].mean == Approx(full[c].mean).epsilon(1e-13));
    CHECK(acc[c].m2 == Approx(full[c].m2).epsilon(1e-13));
  }
}

TEMPLATE_TEST_CASE("batch_norm_finalize matches PyTorch semantics", "[stats]", float, double) {
  const shape4 s{2, 3, 4, 5};
  slice_tensor<TestType> x(s, 0, 0, 0);
  x.fill_random(3, -1.0, 2.0);
  const auto st = stats_of(x);
  const std::vector<TestType> gamma{TestType(0.5), TestType(-1.25), TestType(2)}, beta{TestType(0.1), 0, TestType(-3)};
  std::vector<TestType> mean(3), invstd(3), scale(3), shift(3), rm{0, TestType(0.5), 1}, rv{1, 2, TestType(0.25)};
  std::vector<double> ref_rm(rm.begin(), rm.end()), ref_rv(rv.begin(), rv.end());
  const double eps = 1e-3, momentum = 0.1;
  bnff::batch_norm_finalize<TestType>(cvview(st), cvview(gamma), cvview(beta), eps, momentum, vview(rm), vview(rv),
                                      vview(mean), vview(invstd), vview(scale), vview(shift));
  const auto ref = bnff::ref::bn_forward_train(s, x.packed(), {gamma.begin(), gamma.end()}, {beta.begin(), beta.end()},
                                               eps, momentum, ref_rm, ref_rv);
  // Finalize computes in double and rounds once to T: a few ulps of T.
  const double tol = std::is_same_v<TestType, float> ? 1e-6 : 1e-13;
  for (std::size_t c = 0; c < 3; ++c) {
    const double inv = 1.0 / std::sqrt(ref.stats.var[c] + eps);
    CHECK(double(mean[c]) == Approx(ref.stats.mean[c]).epsilon(tol).margin(tol));
    CHECK(double(invstd[c]) == Approx(inv).epsilon(tol));
    CHECK(double(scale[c]) == Approx(double(gamma[c]) * inv).epsilon(tol));
    CHECK(double(shift[c]) ==
          Approx(double(beta[c]) - ref.stats.mean[c] * double(gamma[c]) * inv).epsilon(tol).margin(tol));
    CHECK(double(rm[c]) == Approx(ref_rm[c]).epsilon(tol).margin(tol));
    CHECK(double(rv[c]) == Approx(ref_rv[c]).epsilon(tol).margin(tol));
  }
}

TEST_CASE("batch_norm_finalize with m = 1 and m = 2", "[stats]") {
  const std::vector<float> gamma{2.0f}, beta{0.5f};
  std::vector<float> mean(1), invstd(1), scale(1), shift(1), rm{1.0f}, rv{1.0f};
  const double eps = 1e-5;

  // m = 1: the biased variance is 0, so normalizing is defined (every output is beta) ...
  const std::vector<moments> one{{1.0, 3.0, 0.0}};
  bnff::batch_norm_finalize<float>(cvview(one), cvview(gamma), cvview(beta), eps, vview(mean), vview(invstd),
                                   vview(scale), vview(shift));
  CHECK(mean[0] == 3.0f);
  CHECK(invstd[0] == float(1.0 / std::sqrt(eps)));
  CHECK(double(shift[0]) == Approx(0.5 - 3.0 * 2.0 / std::sqrt(eps)).epsilon(1e-6));
  // ... but the unbiased running variance is not: an error, nothing written.
  std::fill(mean.begin(), mean.end(), -7.0f);
  CHECK_THROWS_WITH(bnff::batch_norm_finalize<float>(cvview(one), cvview(gamma), cvview(beta), eps, 0.1, vview(rm),
                                                     vview(rv), vview(mean), vview(invstd), vview(scale), vview(shift)),
                    Catch::Contains("'stats'") && Catch::Contains("count >= 2") && Catch::Contains("count 1"));
  CHECK(mean[0] == -7.0f);
  CHECK(rm[0] == 1.0f);
  CHECK(rv[0] == 1.0f);

  // m = 2, values {1, 3}: biased variance 1, unbiased 2.
  const std::vector<moments> two{{2.0, 2.0, 2.0}};
  bnff::batch_norm_finalize<float>(cvview(two), cvview(gamma), cvview(beta), eps, 0.5, vview(rm), vview(rv),
                                   vview(mean), vview(invstd), vview(scale), vview(shift));
  CHECK(invstd[0] == float(1.0 / std::sqrt(1.0 + eps)));
  CHECK(rm[0] == 1.5f);  // 0.5 * 1 + 0.5 * 2
  CHECK(rv[0] == 1.5f);  // 0.5 * 1 + 0.5 * 2 (unbiased)
}

TEST_CASE("the unfused mean and variance sweeps reproduce batch_norm_stats bit for bit", "[stats][unfused]") {
  // What lets the unfused trainer engine normalize with the fused engine's statistics: blocks
  // short enough for block_moments' register path (block 16, a 7 x 7 plane), long ones and tails.
  for (const shape4& s : {shape4{3, 4, 7, 7}, shape4{2, 3, 56, 56}, shape4{3, 2, 40, 41}, shape4{2, 5, 32, 32}})
    for (index_t block : {index_t(16), index_t(100), index_t(528), index_t(1024)}) {
      CAPTURE(s, block);
      slice_tensor<float> x(s, 1, 2, 1);
      x.fill_random(37, -3.0, 1.0);
      put_off_centre(x, block);
      const auto direct = stats_of(x, block);
      std::vector<float> shifts(std::size_t(bnff::make_stats_partition(x.cview(), block).size()) + 2, -7.0f);
      bnff::unfused::batch_norm_block_shifts(x.cview(), block, vview(shifts));
      CHECK(shifts.back() == -7.0f);  // nothing past the partition written
      std::vector<moments> two(std::size_t(s.c));
      bnff::unfused::batch_norm_block_moments<xsimd::default_arch, float>(x.cview(), block, cvview(shifts), vview(two));
      CHECK(same_bits(direct, two));
    }
  slice_tensor<float> x(shape4{2, 3, 8, 8}, 0, 0, 0);
  std::vector<float> few(10);
  CHECK_THROWS_WITH(bnff::unfused::batch_norm_block_shifts(x.cview(), 16, vview(few)),
                    Catch::Contains("shifts") && Catch::Contains(">= 24"));
}
