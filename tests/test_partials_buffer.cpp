// Synchronized batch norm without a communicator: a batch split into P shards along N,
// each shard's statistics and backward sums exchanged as flat buffers (an all-gather
// or all-reduce simulated by copying), must give what one process computes on the
// whole batch.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "bnff/ops/batch_norm_backward.hpp"
#include "bnff/ops/batch_norm_finalize.hpp"
#include "bnff/ops/batch_norm_stats.hpp"
#include "bnff/ops/bn_backward_sums.hpp"
#include "bnff/ops/bn_relu_conv2d_backward.hpp"
#include "bnff/stats/partials_buffer.hpp"
#include "support/reference.hpp"
#include "test_batch_norm_support.hpp"

namespace {

using bnff::index_t;
using bnff::moments;
using bnff::shape4;
using bnff::tensor_view;
using namespace bnff::test;

constexpr double qnan = std::numeric_limits<double>::quiet_NaN();

// Images per shard for P ranks, every shard non-empty and, where n allows, uneven: the
// remainder goes to the first shards, and an even split moves one image from the last to the first.
std::vector<index_t> shard_sizes(index_t n, index_t ranks) {
  std::vector<index_t> out(std::size_t(ranks), n / ranks);
  for (index_t r = 0; r < n % ranks; ++r) ++out[std::size_t(r)];
  if (ranks >= 2 && n % ranks == 0 && n / ranks > 1) ++out[0], --out[std::size_t(ranks - 1)];
  return out;
}

// Every rank's export_moments buffer for its shard of x, one after another (an all-gather).
template <class T>
std::vector<double> gathered_moments(const tensor_view<const T>& x, const std::vector<index_t>& shards) {
  const index_t c = x.c(), per_rank = bnff::moments_buffer_size(c);
  std::vector<double> gathered(std::size_t(per_rank) * shards.size(), qnan);
  index_t first = 0;
  for (std::size_t r = 0; r < shards.size(); ++r) {
    std::vector<moments> local(static_cast<std::size_t>(c));
    bnff::batch_norm_stats(x.images(first, shards[r]), vview(local));
    bnff::export_moments(cvview(local), vview(gathered).subview(index_t(r) * per_rank, per_rank));
    first += shards[r];
  }
  return gathered;
}

}  // namespace

TEMPLATE_TEST_CASE("merged moments buffers of P shards are the statistics of the whole batch", "[stats][sync]", float,
                   double) {
  const shape4 shapes[] = {{7, 3, 5, 5}, {5, 2, 1, 17}, {6, 3, 32, 33}, {4, 1, 1, 1}};
  for (const shape4& s : shapes)
    for (index_t ranks : {1, 2, 3}) {
      slice_tensor<TestType> x(s, 1, 2, 1);
      x.fill_random(11 + std::uint64_t(s.size()), -1.0, 3.0);
      const auto shards = shard_sizes(s.n, ranks);
      const auto gathered = gathered_moments(x.cview(), shards);
      std::vector<moments> merged(std::size_t(s.c), moments{qnan, qnan, qnan});
      bnff::merge_moments_buffers(cvview(gathered), ranks, vview(merged));
      const auto want = bnff::ref::batch_stats(s, x.packed());
      CAPTURE(s, ranks);
      for (index_t c = 0; c < s.c; ++c) {
        const auto cc = std::size_t(c);
        CHECK(merged[cc].count == double(s.n * s.plane()));
        const double tol = std::is_same_v<TestType, float> ? 1e-5 : 1e-12;
        CHECK(merged[cc].mean == Approx(want.mean[cc]).margin(tol));
        CHECK(merged[cc].variance() == Approx(want.var[cc]).epsilon(tol).margin(tol));
      }
    }
}

TEST_CASE("one rank's buffer imports bit for bit", "[stats][sync]") {
  const shape4 s{3, 4, 7, 9};
  slice_tensor<float> x(s);
  x.fill_random(5, -2.0, 2.0);
  std::vector<moments> whole(std::size_t(s.c));
  bnff::batch_norm_stats(x.cview(), vview(whole));
  const auto gathered = gathered_moments(x.cview(), {s.n});
  std::vector<moments> merged(std::size_t(s.c));
  bnff::merge_moments_buffers(cvview(gathered), 1, vview(merged));
  for (std::size_t c = 0; c < merged.size(); ++c) {
    CHECK(merged[c].count == whole[c].count);
    CHECK(merged[c].mean == whole[c].mean);
    CHECK(merged[c].m2 == whole[c].m2);
  }
}

TEST_CASE("merged shard moments keep float variance for |mean| / std = 1e4", "[stats][sync]") {
  // Each shard's mean sits 1e4 standard deviations from zero, and the shard means differ:
  // a naive sum(x^2) / n - mean^2 in double would keep few digits; the merge keeps them all.
  const shape4 s{5, 2, 9, 11};
  slice_tensor<float> x(s);
  auto v = random_vector(std::size_t(s.size()), 21, -1.0, 1.0);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = double(float(1e4 + v[i]));
  x.set_packed(v);
  const auto want = bnff::ref::batch_stats(s, x.packed());
  for (index_t ranks : {2, 3}) {
    const auto gathered = gathered_moments(x.cview(), shard_sizes(s.n, ranks));
    std::vector<moments> merged(std::size_t(s.c));
    bnff::merge_moments_buffers(cvview(gathered), ranks, vview(merged));
    for (index_t c = 0; c < s.c; ++c) {
      CAPTURE(ranks, c);
      CHECK(merged[std::size_t(c)].mean == Approx(want.mean[std::size_t(c)]).epsilon(1e-9));
      CHECK(merged[std::size_t(c)].variance() == Approx(want.var[std::size_t(c)]).epsilon(1e-4));
    }
  }
}

TEST_CASE("an empty shard adds nothing to the merge", "[stats][sync]") {
  const std::vector<double> gathered = {0, 0, 0, 4, 2.5, 3.0, 0, 0, 0};
  std::vector<moments> merged(1);
  bnff::merge_moments_buffers(cvview(gathered), 3, vview(merged));
  CHECK(merged[0].count == 4);
  CHECK(merged[0].mean == 2.5);
  CHECK(merged[0].m2 == 3.0);
}

TEST_CASE("partials buffers reject bad arguments before writing", "[stats][sync][errors]") {
  std::vector<moments> stats(2, moments{2, 1, 1});
  std::vector<double> small(5, qnan), gathered(12, 1.0);
  REQUIRE_THROWS_AS(bnff::export_moments(cvview(stats), vview(small)), bnff::error);
  for (double d : small) CHECK(std::isnan(d));
  std::vector<moments> out(2, moments{-1, -1, -1});
  REQUIRE_THROWS_WITH(bnff::merge_moments_buffers(cvview(gathered), 3, vview(out)),
                      Catch::Contains("gathered") && Catch::Contains(">= 18"));
  REQUIRE_THROWS_WITH(bnff::merge_moments_buffers(cvview(gathered), 0, vview(out)), Catch::Contains("ranks"));
  gathered[3] = -2;  // rank 0, channel 1: a negative count
  REQUIRE_THROWS_WITH(bnff::merge_moments_buffers(cvview(gathered), 2, vview(out)),
                      Catch::Contains("count -2 in channel 1 of rank 0"));
  for (const moments& m : out) CHECK(m.count == -1);
  std::vector<double> sums(4, qnan);
  REQUIRE_THROWS_AS(bnff::sum_buffers(cvview(gathered), 4, vview(sums)), bnff::error);
  for (double d : sums) CHECK(std::isnan(d));
}

TEST_CASE("sum_buffers adds the gathered buffers in rank order", "[stats][sync]") {
  const std::vector<double> gathered = {1, 2, 3, 10, 20, 30, 100, 200, 300};
  std::vector<double> out(3, qnan);
  bnff::sum_buffers(cvview(gathered), 3, vview(out));
  CHECK(out == std::vector<double>{111, 222, 333});
  // Rank order, not any other: (1e16 + 1) + 1 differs from 1e16 + (1 + 1) in double.
  const std::vector<double> order = {1e16, 1, 1};
  std::vector<double> one(1);
  bnff::sum_buffers(cvview(order), 3, vview(one));
  CHECK(one[0] == (1e16 + 1) + 1);
}

namespace {

// The state of one BN over a whole batch (from its global statistics) for the backward tests.
struct global_bn {
  std::vector<float> gamma, beta, mean, invstd, scale, shift;
  global_bn(const tensor_view<const float>& x, std::uint64_t seed) {
    const auto c = std::size_t(x.c());
    gamma = to_vector<float>(random_vector(c, seed, 0.5, 2.0));
    beta = to_vector<float>(random_vector(c, seed + 1, -0.5, 0.5));
    mean.resize(c), invstd.resize(c), scale.resize(c), shift.resize(c);
    std::vector<moments> m(c);
    bnff::batch_norm_stats(x, vview(m));
    bnff::batch_norm_finalize<float>(cvview(m), cvview(gamma), cvview(beta), 1e-5, vview(mean), vview(invstd),
                                     vview(scale), vview(shift));
  }
};

}  // namespace

TEST_CASE("batch_norm_backward on P shards with summed sums is the whole batch's backward", "[backward][sync]") {
  const shape4 s{7, 3, 6, 5};
  std::vector<float> xv(std::size_t(s.size())), dzv(xv.size());
  const auto rx = random_vector(xv.size(), 31, -2.0, 2.0), rz = random_vector(xv.size(), 32, -1.0, 1.0);
  for (std::size_t i = 0; i < xv.size(); ++i) xv[i] = float(rx[i]), dzv[i] = float(rz[i]);
  const tensor_view<const float> x(xv.data(), s), dz(dzv.data(), s);
  const global_bn bn(x, 33);
  std::vector<double> xd(xv.begin(), xv.end()), dzd(dzv.begin(), dzv.end());
  const auto want = bnff::ref::bn_backward(s, xd, dzd, {bn.gamma.begin(), bn.gamma.end()}, 1e-5);

  for (index_t ranks : {1, 2, 3}) {
    const auto shards = shard_sizes(s.n, ranks);
    const index_t size = bnff::bn_backward_sums_size(s.c);
    // Round 1: every rank's local sums (the sync records them and changes nothing).
    std::vector<double> gathered(std::size_t(size * ranks), qnan), global(std::size_t(size), qnan);
    std::vector<float> dx(xv.size(), float(qnan)), dgamma(std::size_t(s.c)), dbeta(std::size_t(s.c));
    const tensor_view<float> dxv(dx.data(), s);
    auto shard_backward = [&](index_t r, index_t first, auto&& sync) {
      std::vector<double> sums(std::size_t(size), qnan);
      bnff::batch_norm_backward<bnff::bn_identity, bnff::grad_overwrite>(
          x.images(first, shards[std::size_t(r)]), dz.images(first, shards[std::size_t(r)]), cvview(bn.mean),
          cvview(bn.invstd), cvview(bn.scale), cvview(bn.beta), dxv.images(first, shards[std::size_t(r)]),
          vview(dgamma), vview(dbeta), vview(sums), sync);
    };
    index_t first = 0;
    for (index_t r = 0; r < ranks; first += shards[std::size_t(r)], ++r)
      shard_backward(r, first, [&](bnff::vector_view<double> sums) {
        std::copy(sums.begin(), sums.end(), gathered.begin() + r * size);
      });
    bnff::sum_buffers(cvview(gathered), ranks, vview(global));
    CHECK(global[std::size_t(2 * s.c)] == double(s.n * s.plane()));
    // Round 2: the sync hands every rank the global sums (an all-reduce); the parameter
    // gradients stay each rank's share, which add up to the whole batch's.
    std::vector<double> dgamma_sum(std::size_t(s.c), 0.0), dbeta_sum(std::size_t(s.c), 0.0);
    first = 0;
    for (index_t r = 0; r < ranks; first += shards[std::size_t(r)], ++r) {
      shard_backward(r, first,
                     [&](bnff::vector_view<double> sums) { std::copy(global.begin(), global.end(), sums.begin()); });
      for (std::size_t c = 0; c < std::size_t(s.c); ++c) dgamma_sum[c] += dgamma[c], dbeta_sum[c] += dbeta[c];
    }
    CAPTURE(ranks);
    CHECK(max_abs_diff(dx, want.dx) < 1e-5 * (1 + max_abs(want.dx)));
    CHECK(max_abs_diff(dgamma_sum, want.dgamma) < 1e-5 * (1 + max_abs(want.dgamma)));
    CHECK(max_abs_diff(dbeta_sum, want.dbeta) < 1e-5 * (1 + max_abs(want.dbeta)));
  }
}

TEST_CASE("a sync that leaves the sums alone gives the unsynchronized bits", "[backward][sync]") {
  // 40 channels: the unsynchronized sweeps pipeline channels and reduce planes
  // two at a time (three images: a pair and a last single plane).
  for (const shape4& s : {shape4{3, 5, 9, 7}, shape4{3, 40, 33, 35}}) {
    CAPTURE(s);
    std::vector<float> xv(std::size_t(s.size())), dzv(xv.size());
    const auto rx = random_vector(xv.size(), 41, -2.0, 2.0), rz = random_vector(xv.size(), 42, -1.0, 1.0);
    for (std::size_t i = 0; i < xv.size(); ++i) xv[i] = float(rx[i]), dzv[i] = float(rz[i]);
    const tensor_view<const float> x(xv.data(), s), dz(dzv.data(), s);
    const global_bn bn(x, 43);
    const std::size_t c = std::size_t(s.c);
    std::vector<float> dx1(xv.size()), dx2(xv.size()), dg1(c), dg2(c), db1(c), db2(c);
    std::vector<double> sums(std::size_t(bnff::bn_backward_sums_size(s.c)));
    bnff::batch_norm_backward<bnff::bn_relu, bnff::grad_overwrite>(
        x, dz, cvview(bn.mean), cvview(bn.invstd), cvview(bn.scale), cvview(bn.beta), tensor_view<float>(dx1.data(), s),
        vview(dg1), vview(db1));
    bnff::batch_norm_backward<bnff::bn_relu, bnff::grad_overwrite>(
        x, dz, cvview(bn.mean), cvview(bn.invstd), cvview(bn.scale), cvview(bn.beta), tensor_view<float>(dx2.data(), s),
        vview(dg2), vview(db2), vview(sums), [](bnff::vector_view<double>) {});
    CHECK(dx1 == dx2);
    CHECK(dg1 == dg2);
    CHECK(db1 == db2);
    CHECK(sums[std::size_t(2 * s.c)] == double(s.n * s.plane()));
  }
}

TEST_CASE("the synchronized backwards refuse a sync that loses elements", "[backward][sync][errors]") {
  const shape4 s{2, 2, 3, 3};
  std::vector<float> xv(std::size_t(s.size()), 1.0f), dzv(xv.size(), 0.5f), dx(xv.size());
  xv[0] = 2.0f;
  const tensor_view<const float> x(xv.data(), s), dz(dzv.data(), s);
  const global_bn bn(x, 3);
  std::vector<float> dg(2), db(2);
  std::vector<double> sums(std::size_t(bnff::bn_backward_sums_size(s.c)));
  REQUIRE_THROWS_WITH((bnff::batch_norm_backward<bnff::bn_identity, bnff::grad_overwrite>(
                          x, dz, cvview(bn.mean), cvview(bn.invstd), cvview(bn.scale), cvview(bn.beta),
                          tensor_view<float>(dx.data(), s), vview(dg), vview(db), vview(sums),
                          [](bnff::vector_view<double> v) { v[v.size() - 1] = 1; })),
                      Catch::Contains("count >= this shard's 18"));
  std::vector<double> small(4);
  REQUIRE_THROWS_WITH(
      (bnff::batch_norm_backward<bnff::bn_identity, bnff::grad_overwrite>(
          x, dz, cvview(bn.mean), cvview(bn.invstd), cvview(bn.scale), cvview(bn.beta),
          tensor_view<float>(dx.data(), s), vview(dg), vview(db), vview(small), [](bnff::vector_view<double>) {})),
      Catch::Contains("'sums'") && Catch::Contains(">= 5"));
}

TEST_CASE("fused BN-ReLU-conv backward on P shards with summed sums is the whole batch's", "[fused][backward][sync]") {
  const bnff::conv2d_problem pb{6, 5, 7, 7, 4, 3, 3, 1, 1};
  const shape4 xs = pb.input_shape(), ys = pb.output_shape(), ws = pb.filter_shape();
  std::vector<float> xv(std::size_t(xs.size())), dout(std::size_t(ys.size())), wv(std::size_t(ws.size()));
  auto fill = [](std::vector<float>& v, std::uint64_t seed, double lo, double hi) {
    const auto r = random_vector(v.size(), seed, lo, hi);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = float(r[i]);
  };
  fill(xv, 51, -2.0, 2.0), fill(dout, 52, -1.0, 1.0), fill(wv, 53, -0.5, 0.5);
  const tensor_view<const float> x(xv.data(), xs), w(wv.data(), ws), dz(dout.data(), ys);
  const global_bn bn(x, 54);

  // The whole batch in one process.
  auto run = [&](const bnff::conv2d_problem& p, index_t first, std::vector<float>& dx, std::vector<float>& dw,
                 std::vector<float>& dg, std::vector<float>& db, std::vector<double>* sums, auto&& sync) {
    const index_t n = p.n;
    std::vector<float> dy(std::size_t(p.input_shape().size())),
        ws_(std::size_t(bnff::bn_relu_conv2d_backward_workspace_size<float>(p)));
    std::vector<bnff::bn_backward_partial> partials(
        std::size_t(bnff::bn_relu_conv2d_backward_partition<float>(p).size()));
    const tensor_view<float> dxv = tensor_view<float>(dx.data(), xs).images(first, n);
    if (sums)
      bnff::bn_relu_conv2d_backward<float>(p, x.images(first, n), cvview(bn.mean), cvview(bn.invstd), cvview(bn.scale),
                                           cvview(bn.shift), w, dz.images(first, n), tensor_view<float>(dw.data(), ws),
                                           tensor_view<float>(dy.data(), p.input_shape()), vview(partials), vview(dg),
                                           vview(db), dxv, bnff::grad_overwrite{}, vview(ws_), vview(*sums), sync);
    else
      bnff::bn_relu_conv2d_backward<float>(p, x.images(first, n), cvview(bn.mean), cvview(bn.invstd), cvview(bn.scale),
                                           cvview(bn.shift), w, dz.images(first, n), tensor_view<float>(dw.data(), ws),
                                           tensor_view<float>(dy.data(), p.input_shape()), vview(partials), vview(dg),
                                           vview(db), dxv, bnff::grad_overwrite{}, vview(ws_));
  };
  std::vector<float> dx_whole(xv.size()), dw_whole(wv.size()), dg_whole(5), db_whole(5);
  run(pb, 0, dx_whole, dw_whole, dg_whole, db_whole, nullptr, [](bnff::vector_view<double>) {});

  // An identity sync: the same bits.
  {
    std::vector<float> dx(xv.size()), dw(wv.size()), dg(5), db(5);
    std::vector<double> sums(std::size_t(bnff::bn_backward_sums_size(pb.c)));
    run(pb, 0, dx, dw, dg, db, &sums, [](bnff::vector_view<double>) {});
    CHECK(dx == dx_whole);
    CHECK(dw == dw_whole);
    CHECK(dg == dg_whole);
    CHECK(db == db_whole);
  }

  for (index_t ranks : {2, 3}) {
    const auto shards = shard_sizes(pb.n, ranks);
    const index_t size = bnff::bn_backward_sums_size(pb.c);
    std::vector<double> gathered(std::size_t(size * ranks)), global(static_cast<std::size_t>(size));
    std::vector<float> dx(xv.size(), float(qnan)), dw(wv.size()), dg(5), db(5);
    std::vector<double> dw_sum(wv.size(), 0.0), dg_sum(5, 0.0), db_sum(5, 0.0);
    for (int round = 0; round < 2; ++round) {
      index_t first = 0;
      for (index_t r = 0; r < ranks; first += shards[std::size_t(r)], ++r) {
        bnff::conv2d_problem p = pb;
        p.n = shards[std::size_t(r)];
        std::vector<double> sums(static_cast<std::size_t>(size));
        run(p, first, dx, dw, dg, db, &sums, [&](bnff::vector_view<double> v) {
          if (round == 0)
            std::copy(v.begin(), v.end(), gathered.begin() + r * size);
          else
            std::copy(global.begin(), global.end(), v.begin());
        });
        if (round == 1) {
          for (std::size_t i = 0; i < dw.size(); ++i) dw_sum[i] += dw[i];
          for (std::size_t c = 0; c < 5; ++c) dg_sum[c] += dg[c], db_sum[c] += db[c];
        }
      }
      if (round == 0) bnff::sum_buffers(cvview(gathered), ranks, vview(global));
    }
    CAPTURE(ranks);
    CHECK(max_abs_diff(dx, dx_whole) < 1e-5 * (1 + max_abs(dx_whole)));
    CHECK(max_abs_diff(dw_sum, dw_whole) < 1e-5 * (1 + max_abs(dw_whole)));
    CHECK(max_abs_diff(dg_sum, dg_whole) < 1e-5 * (1 + max_abs(dg_whole)));
    CHECK(max_abs_diff(db_sum, db_whole) < 1e-5 * (1 + max_abs(db_whole)));
  }
}

TEST_CASE("the synchronized fused backward checks its sums buffer before writing", "[fused][backward][sync][errors]") {
  const bnff::conv2d_problem pb{2, 3, 5, 5, 4, 1, 1, 0, 1};
  const shape4 xs = pb.input_shape(), ws = pb.filter_shape();
  std::vector<float> xv(std::size_t(xs.size()), 0.5f), dout(std::size_t(pb.output_shape().size()), 0.25f),
      wv(std::size_t(ws.size()), 0.1f), dw(wv.size(), float(qnan)), dy(xv.size(), float(qnan)),
      dx(xv.size(), float(qnan)), dg(3, float(qnan)), db(3, float(qnan)),
      work(std::size_t(bnff::bn_relu_conv2d_backward_workspace_size<float>(pb)));
  xv[3] = 1.5f;
  const tensor_view<const float> x(xv.data(), xs);
  const global_bn bn(x, 7);
  std::vector<bnff::bn_backward_partial> partials(
      std::size_t(bnff::bn_relu_conv2d_backward_partition<float>(pb).size()));
  std::vector<double> sums(std::size_t(bnff::bn_backward_sums_size(pb.c)) - 1);
  bool synced = false;
  REQUIRE_THROWS_WITH(
      bnff::bn_relu_conv2d_backward<float>(
          pb, x, cvview(bn.mean), cvview(bn.invstd), cvview(bn.scale), cvview(bn.shift),
          tensor_view<const float>(wv.data(), ws), tensor_view<const float>(dout.data(), pb.output_shape()),
          tensor_view<float>(dw.data(), ws), tensor_view<float>(dy.data(), xs), vview(partials), vview(dg), vview(db),
          tensor_view<float>(dx.data(), xs), bnff::grad_overwrite{}, vview(work), vview(sums),
          [&](bnff::vector_view<double>) { synced = true; }),
      Catch::Contains("'sums'") && Catch::Contains(">= 7 doubles"));
  CHECK_FALSE(synced);
  for (const auto* v : {&dw, &dy, &dx, &dg, &db})
    for (float f : *v) CHECK(std::isnan(f));
}

TEST_CASE("dx and parameter gradients from a sums buffer check their arguments", "[backward][sync][errors]") {
  const shape4 s{2, 2, 1, 3};
  std::vector<float> xv(std::size_t(s.size()), 1.0f), dy(xv.size(), 1.0f), dx(xv.size(), float(qnan)), v(2, 1.0f),
      dg(2, float(qnan)), db(2, float(qnan));
  std::vector<double> sums = {1, 2, 3, 4, 5};  // a count of 5 < this shard's 6 elements
  const tensor_view<const float> x(xv.data(), s);
  REQUIRE_THROWS_WITH(
      bnff::bn_backward_dx_from_sums<float>(x, tensor_view<const float>(dy.data(), s), cvview(v), cvview(v), cvview(v),
                                            cvview(sums), tensor_view<float>(dx.data(), s)),
      Catch::Contains("count >= this shard's 6"));
  for (float f : dx) CHECK(std::isnan(f));
  sums.pop_back();
  REQUIRE_THROWS_WITH(bnff::bn_backward_params_from_sums<float>(cvview(sums), cvview(v), vview(dg), vview(db)),
                      Catch::Contains(">= 5 doubles"));
  for (float f : dg) CHECK(std::isnan(f));
  sums.push_back(6);
  bnff::bn_backward_params_from_sums<float>(cvview(sums), cvview(v), vview(dg), vview(db));
  CHECK(dg == std::vector<float>{2.0f, 4.0f});
  CHECK(db == std::vector<float>{1.0f, 3.0f});
}
