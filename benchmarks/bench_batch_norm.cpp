// Standalone batch-norm families, each fused kernel beside its unfused
// baseline (same SIMD building blocks, same threads) on catalog shapes:
//   stats          per-channel mean and variance: one sweep (fused) vs mean pass + variance pass
//   bn_apply_relu  y = max(0, BN(x)): one sweep vs normalize pass + ReLU pass
//   bn_backward    dx, dgamma, dbeta through BN + ReLU: mask recomputed from x, two
//                  per-channel sweeps (fused) vs ReLU-backward + reductions + dx passes
// Every iteration takes a fresh copy of its tensors (see bn_data), so the
// kernels are timed from main memory like the ceilings they are judged against.
// bytes_per_second counts the minimum traffic each operation needs (bench::model),
// so fused and unfused are measured against the same yardstick and the ceilings:
//   stats: read x once;  bn_apply_relu: read x, write y;  bn_backward: read x and dz, write dx.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "bnff/conv/layer_catalog.hpp"
#include "bnff/ops/batch_norm_apply.hpp"
#include "bnff/ops/batch_norm_backward.hpp"
#include "bnff/ops/batch_norm_finalize.hpp"
#include "bnff/ops/batch_norm_stats.hpp"
#include "bnff/ops/unfused/batch_norm_unfused.hpp"

namespace {

using bnff::index_t;
using bnff::moments;
using bnff::shape4;
using bnff::tensor_view;
using bnff::vector_view;
namespace bench = bnff::bench;

// Each iteration works on the next of `copies` identical sets of tensors, so
// that the memory-bound kernels are timed from main memory, as the ceilings
// are: on the reference machine a 51 MB tensor read again right away stays in
// cache (about 30 GB/s up to 64 MB, half that from 128 MB on), which would
// flatter every kernel here. The copies of one array span at least as many
// bytes as a ceiling's array (512 MiB).
constexpr double kRotationBytes = double(std::size_t(512) << 20);

// Tensors and per-channel state of one shape: x, dz and outputs, plus the
// forward's y kept for the unfused backward; `copies` of each tensor.
struct bn_data {
  shape4 s;
  index_t copies;
  bench::buffer<float> x, y, z, dz, dy, dx;
  bench::buffer<float> gamma, beta, mean, var, invstd, scale, shift, dgamma, dbeta;
  std::vector<moments> stats;
  index_t turn = 0;

  static index_t copies_for(const shape4& shape) {
    const double one = double(shape.size()) * sizeof(float);
    return std::max<index_t>(2, index_t((kRotationBytes + one - 1) / one));
  }
  std::size_t all() const { return std::size_t(s.size() * copies); }

  explicit bn_data(const shape4& shape)
      : s(shape),
        copies(copies_for(shape)),
        x(all()),
        y(all()),
        z(all()),
        dz(all()),
        dy(all()),
        dx(all()),
        gamma(std::size_t(s.c), 1.0f),
        beta(std::size_t(s.c), 0.1f),
        mean(std::size_t(s.c)),
        var(std::size_t(s.c)),
        invstd(std::size_t(s.c)),
        scale(std::size_t(s.c)),
        shift(std::size_t(s.c)),
        dgamma(std::size_t(s.c)),
        dbeta(std::size_t(s.c)),
        stats(std::size_t(s.c)) {
    // A cheap deterministic pattern in [-1, 2): random fills of these sizes take seconds.
    std::uint32_t h = 12345;
    const std::size_t n = std::size_t(s.size());
    for (std::size_t i = 0; i < n; ++i) {
      h = h * 1664525u + 1013904223u;
      x.data()[i] = float(h >> 8) * (3.0f / 16777216.0f) - 1.0f;
      dz.data()[i] = float((h >> 4) & 0xffff) * (1.0f / 32768.0f) - 1.0f;
    }
    for (index_t k = 1; k < copies; ++k) {
      std::copy(x.data(), x.data() + n, x.data() + k * n);
      std::copy(dz.data(), dz.data() + n, dz.data() + k * n);
    }
    bnff::batch_norm_stats(xv(), vector_view<moments>(stats.data(), s.c));
    bnff::batch_norm_finalize<float>(vector_view<const moments>(stats.data(), s.c), vec(gamma), vec(beta), 1e-5,
                                     vec(mean), vec(invstd), vec(scale), vec(shift));
    for (index_t c = 0; c < s.c; ++c) var.data()[c] = float(stats[std::size_t(c)].variance());
    for (turn = 0; turn < copies; ++turn)
      bnff::unfused::batch_norm_normalize(xv(), t(y), vec(mean), vec(var), vec(gamma), vec(beta), 1e-5);
    turn = 0;
  }

  // The next set of tensors: call once per iteration, before the views below.
  void next() { turn = (turn + 1) % copies; }

  tensor_view<float> t(const bench::buffer<float>& b) const { return {b.data() + turn * s.size(), s}; }
  tensor_view<const float> xv() const { return {x.data() + turn * s.size(), s}; }
  vector_view<float> vec(const bench::buffer<float>& b) const { return {b.data(), s.c}; }
};

// One shape's data at a time: the benchmark function runs once per repetition,
// and filling several 50 MB tensors each time would dominate the run.
bn_data& data_for(const shape4& s) {
  static std::unique_ptr<bn_data> held;
  if (!held || held->s != s) {
    held.reset();
    held = std::make_unique<bn_data>(s);
  }
  return *held;
}

void stats_fused(benchmark::State& st, shape4 s) {
  bench::use_threads(st);
  auto& d = data_for(s);
  for (auto _ : st) {
    d.next();
    bnff::batch_norm_stats(d.xv(), vector_view<moments>(d.stats.data(), s.c));
  }
  bench::set_counters(st, bench::model::stats_bytes(s));
}

void stats_unfused(benchmark::State& st, shape4 s) {
  bench::use_threads(st);
  auto& d = data_for(s);
  for (auto _ : st) {
    d.next();
    bnff::unfused::batch_norm_mean(d.xv(), d.vec(d.mean));
    bnff::unfused::batch_norm_variance(d.xv(), d.vec(d.mean), d.vec(d.var));
  }
  bench::set_counters(st, bench::model::stats_bytes(s));
}

void apply_relu_fused(benchmark::State& st, shape4 s) {
  bench::use_threads(st);
  auto& d = data_for(s);
  for (auto _ : st) {
    d.next();
    bnff::batch_norm_apply<bnff::bn_relu>(d.xv(), d.t(d.z), d.vec(d.mean), d.vec(d.scale), d.vec(d.beta));
  }
  bench::set_counters(st, bench::model::bn_apply_relu_bytes(s));
}

void apply_relu_unfused(benchmark::State& st, shape4 s) {
  bench::use_threads(st);
  auto& d = data_for(s);
  for (auto _ : st) {
    d.next();
    bnff::unfused::batch_norm_normalize(d.xv(), d.t(d.y), d.vec(d.mean), d.vec(d.var), d.vec(d.gamma), d.vec(d.beta),
                                        1e-5);
    bnff::unfused::relu(d.t(d.y), d.t(d.z));
  }
  bench::set_counters(st, bench::model::bn_apply_relu_bytes(s));
}

void backward_fused(benchmark::State& st, shape4 s) {
  bench::use_threads(st);
  auto& d = data_for(s);
  for (auto _ : st) {
    d.next();
    bnff::batch_norm_backward<bnff::bn_relu>(d.xv(), d.t(d.dz), d.vec(d.mean), d.vec(d.invstd), d.vec(d.scale),
                                             d.vec(d.beta), d.t(d.dx), d.vec(d.dgamma), d.vec(d.dbeta));
  }
  bench::set_counters(st, bench::model::bn_backward_bytes(s));
}

void backward_unfused(benchmark::State& st, shape4 s) {
  bench::use_threads(st);
  auto& d = data_for(s);
  for (auto _ : st) {
    d.next();
    bnff::unfused::batch_norm_relu_backward(d.xv(), d.t(d.y), d.t(d.dz), d.t(d.dy), d.vec(d.mean), d.vec(d.invstd),
                                            d.vec(d.gamma), d.vec(d.dbeta), d.vec(d.dgamma), d.t(d.dx));
  }
  bench::set_counters(st, bench::model::bn_backward_bytes(s));
}

const int registered = bench::register_family([](const bench::options& o) {
  // The inputs of the selected transitions and composite layers (--quick:
  // densenet121.t1, 16x256x56x56, 51 MB of float, and densenet121.b1.l6).
  for (const auto& n : bench::bn_tensors(o)) {
    const shape4 s = n.shape;
    bench::add("stats", "fused", n.name, [s](benchmark::State& st) { stats_fused(st, s); });
    bench::add("stats", "unfused", n.name, [s](benchmark::State& st) { stats_unfused(st, s); });
    bench::add("bn_apply_relu", "fused", n.name, [s](benchmark::State& st) { apply_relu_fused(st, s); });
    bench::add("bn_apply_relu", "unfused", n.name, [s](benchmark::State& st) { apply_relu_unfused(st, s); });
    bench::add("bn_backward", "fused", n.name, [s](benchmark::State& st) { backward_fused(st, s); });
    bench::add("bn_backward", "unfused", n.name, [s](benchmark::State& st) { backward_unfused(st, s); });
  }
});

}  // namespace
