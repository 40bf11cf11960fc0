// The smallest integration: a framework's own buffers, one BN-ReLU between two
// convolutions, computed fused (BNFF) and step by step, and checked against each other.
//
// Fused:   y1 = conv1(x) with y1's statistics accumulated in conv1's epilogue;
//          y2 = conv2(max(0, y1 * scale + shift)) with the transform in conv2's prologue.
// Unfused: y1 = conv1(x); a statistics sweep over y1; an apply + ReLU sweep storing a1;
//          y2 = conv2(a1).
#include <bnff/bnff.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

using namespace bnff;

int main(int argc, char** argv) {
  if (argc > 1 && (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h"))) {
    std::puts(
        "usage: bnff_quickstart\n"
        "Runs conv1x1 -> BN -> ReLU -> conv3x3 on a small batch, fused and unfused,\n"
        "and prints how far apart the two results are (exit status 1 if they disagree).");
    return 0;
  }
  const index_t n = 4, c = 32, h = 28, w = 28, k1 = 64, k2 = 16;
  const conv2d_problem p1{n, c, h, w, k1, 1, 1, 0, 1}, p2{n, k1, h, w, k2, 3, 3, 1, 1};
  const auto K1 = static_cast<std::size_t>(k1);

  std::mt19937 gen(42);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  auto randoms = [&](index_t count, float scale) {
    std::vector<float> v(static_cast<std::size_t>(count));
    for (auto& e : v) e = dist(gen) * scale;
    return v;
  };
  // The framework's buffers.
  std::vector<float> x = randoms(p1.input_shape().size(), 1.0f), w1 = randoms(p1.filter_shape().size(), 0.25f),
                     w2 = randoms(p2.filter_shape().size(), 0.06f);
  std::vector<float> gamma(K1, 1.0f), beta(K1, 0.1f), run_mean(K1, 0.0f),
      run_var(K1, 1.0f);
  std::vector<float> y1(std::size_t(p1.output_shape().size())), y2(std::size_t(p2.output_shape().size()));
  std::vector<float> mean(K1), invstd(K1), scale(K1), shift(K1);

  tensor_view<const float> xv(x.data(), p1.input_shape()), w1v(w1.data(), p1.filter_shape()),
      w2v(w2.data(), p2.filter_shape());
  tensor_view<float> y1v(y1.data(), p1.output_shape()), y2v(y2.data(), p2.output_shape());
  auto vec = [](std::vector<float>& v) { return vector_view<float>(v.data(), index_t(v.size())); };

  // --- fused ---
  const stats_partition part = conv2d_stats_partition<float>(p1);
  std::vector<moments> partials(std::size_t(part.size())), stats(K1);
  conv2d_forward_stats<float>(p1, xv, w1v, y1v, {partials.data(), part.size()});
  for (index_t k = 0; k < k1; ++k) stats[std::size_t(k)] = merge_channel(part, partials.data(), k);
  batch_norm_finalize<float>({stats.data(), k1}, vec(gamma), vec(beta), 1e-5, 0.1, vec(run_mean), vec(run_var),
                             vec(mean), vec(invstd), vec(scale), vec(shift));
  std::vector<moments> partials2(std::size_t(conv2d_stats_partition<float>(p2).size()));
  bn_relu_conv2d_forward_stats<float>(p2, y1v, vec(scale), vec(shift), w2v, y2v,
                                      {partials2.data(), index_t(partials2.size())});

  // --- unfused, from the same y1 ---
  std::vector<moments> stats_u(K1);
  batch_norm_stats(tensor_view<const float>(y1v), {stats_u.data(), k1}, part.block);
  std::vector<float> mean_u(K1), invstd_u(K1), scale_u(K1),
      shift_u(K1), a1(y1.size()), y2_u(y2.size());
  batch_norm_finalize<float>({stats_u.data(), k1}, vec(gamma), vec(beta), 1e-5, vec(mean_u), vec(invstd_u),
                             vec(scale_u), vec(shift_u));
  tensor_view<float> a1v(a1.data(), p1.output_shape());
  batch_norm_apply<bn_relu>(tensor_view<const float>(y1v), a1v, vec(mean_u), vec(scale_u), vec(beta));
  conv2d_forward<float>(p2, tensor_view<const float>(a1v), w2v, {}, tensor_view<float>(y2_u.data(), p2.output_shape()));

  int same_stats = 0;
  for (index_t k = 0; k < k1; ++k)
    same_stats += stats[std::size_t(k)].mean == stats_u[std::size_t(k)].mean &&
                  stats[std::size_t(k)].m2 == stats_u[std::size_t(k)].m2;
  double max_diff = 0, max_val = 0;
  for (std::size_t i = 0; i < y2.size(); ++i) {
    max_diff = std::max(max_diff, double(std::abs(y2[i] - y2_u[i])));
    max_val = std::max(max_val, double(std::abs(y2_u[i])));
  }
  std::printf("bnff %d.%d.%d, %d thread(s)\n", version().major, version().minor, version().patch, max_threads());
  std::printf("conv1x1 %td->%td, BN-ReLU, conv3x3 %td->%td on %tdx%td, batch %td\n", c, k1, k1, k2, h, w, n);
  std::printf("epilogue statistics equal the standalone sweep's, bit for bit, in %d of %td channels\n", same_stats, k1);
  std::printf("fused vs unfused output: max |difference| %.3g (max |value| %.3g)\n", max_diff, max_val);
  const bool ok = same_stats == k1 && max_diff <= 1e-5 * std::max(1.0, max_val);
  std::puts(ok ? "ok" : "MISMATCH");
  return ok ? 0 : 1;
}
