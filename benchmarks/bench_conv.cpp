// Convolution forward families, each fused kernel beside its unfused baseline on
// DenseNet-121 and ResNet-50 shapes, plus the GEMM ceiling the engine runs on.
//   conv_fwd          plain conv (fused = the engine; eigen = Eigen GEMM per image, 1x1 only)
//   conv_fwd_stats    conv + output statistics: epilogue (fused) vs conv then a stats pass
//   bn_relu_conv_fwd  BN apply + ReLU + conv + stats: prologue/epilogue vs four passes
//   cpl_fwd           a DenseNet composite layer: BN-ReLU-conv1x1 -> BN-ReLU-conv3x3, with stats
//   ceiling_gemm      a large square-ish SGEMM: the engine's GEMM vs Eigen
#include <Eigen/Core>
#include <cmath>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "bnff/gemm/gemm.hpp"
#include "bnff/ops/bn_relu_conv2d_forward_stats.hpp"
#include "bnff/ops/unfused/conv_bn_relu_unfused.hpp"
#include "bnff/stats/bn_channel_params.hpp"

namespace {

using bnff::conv2d_problem;
using bnff::index_t;
using bnff::moments;
using bnff::tensor_view;
using bnff::vector_view;
namespace bench = bnff::bench;

// Everything one convolution needs, allocated and filled once per benchmark.
struct conv_data {
  conv2d_problem pb;
  bench::buffer<float> x, w, y, z, scale, shift, ws;
  std::vector<moments> partials;
  explicit conv_data(const conv2d_problem& p)
      : pb(p),
        x(std::size_t(p.input_shape().size())),
        w(std::size_t(p.filter_shape().size())),
        y(std::size_t(p.output_shape().size())),
        z(std::size_t(p.input_shape().size())),
        scale(std::size_t(p.c), 1.0f),
        shift(std::size_t(p.c), 0.0f),
        ws(std::size_t(bnff::conv2d_forward_workspace_size<float>(p, 2))),
        partials(std::size_t(bnff::conv2d_stats_partition<float>(p).size())) {
    x.fill_random(1);
    w.fill_random(2, -0.1f, 0.1f);
    scale.fill_random(3, 0.5f, 1.5f);
    shift.fill_random(4, -0.5f, 0.5f);
  }
  tensor_view<const float> xv() const { return {x.data(), pb.input_shape()}; }
  tensor_view<const float> wv() const { return {w.data(), pb.filter_shape()}; }
  tensor_view<float> yv() const { return {y.data(), pb.output_shape()}; }
  tensor_view<float> zv() const { return {z.data(), pb.input_shape()}; }
  vector_view<const float> sc() const { return {scale.data(), pb.c}; }
  vector_view<const float> sh() const { return {shift.data(), pb.c}; }
  vector_view<float> wsv() const { return {ws.data(), index_t(ws.size)}; }
  vector_view<moments> pv() { return {partials.data(), index_t(partials.size())}; }
};

// scale = gamma * invstd, shift = beta - mean * scale from the merged partials (gamma 1, beta 0).
void finalize(const bnff::stats_partition& part, const std::vector<moments>& partials, float* scale, float* shift) {
  for (index_t k = 0; k < part.channels; ++k) {
    const bnff::bn_channel_params bn =
        bnff::bn_params_from_moments(bnff::merge_channel(part, partials.data(), k), 1, 0, 1e-5);
    scale[k] = float(bn.scale);
    shift[k] = float(bn.shift);
  }
}

void add_conv_families(const bench::options& o) {
  for (const auto& s : bench::conv_problems(o)) {
    const conv2d_problem pb = s.problem;
    bench::add("conv_fwd", "fused", s.name, [pb](benchmark::State& st) {
      bench::use_threads(st);
      conv_data d(pb);
      for (auto _ : st) bnff::conv2d_forward<float>(pb, d.xv(), d.wv(), {}, d.yv(), d.wsv());
      bench::set_counters(st, bench::model::conv_bytes(pb), bench::model::conv_flops(pb));
    });
    if (pb.is_pointwise())
      bench::add("conv_fwd", "eigen", s.name, [pb](benchmark::State& st) {
        const int t = bench::use_threads(st);
        Eigen::setNbThreads(t);
        conv_data d(pb);
        using mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
        const index_t plane = pb.h * pb.w;
        Eigen::Map<const mat> w(d.w.data(), pb.k, pb.c);
        for (auto _ : st)
          for (index_t n = 0; n < pb.n; ++n) {
            Eigen::Map<const mat> x(d.x.data() + n * pb.c * plane, pb.c, plane);
            Eigen::Map<mat> y(d.y.data() + n * pb.k * plane, pb.k, plane);
            y.noalias() = w * x;
          }
        bench::set_counters(st, bench::model::conv_bytes(pb), bench::model::conv_flops(pb));
      });
    bench::add("conv_fwd_stats", "fused", s.name, [pb](benchmark::State& st) {
      bench::use_threads(st);
      conv_data d(pb);
      for (auto _ : st) bnff::conv2d_forward_stats<float>(pb, d.xv(), d.wv(), d.yv(), d.pv(), d.wsv());
      bench::set_counters(st, bench::model::conv_bytes(pb), bench::model::conv_flops(pb));
    });
    bench::add("conv_fwd_stats", "unfused", s.name, [pb](benchmark::State& st) {
      bench::use_threads(st);
      conv_data d(pb);
      for (auto _ : st) bnff::unfused::conv2d_forward_stats<float>(pb, d.xv(), d.wv(), d.yv(), d.pv(), d.wsv());
      bench::set_counters(st, bench::model::conv_bytes(pb), bench::model::conv_flops(pb));
    });
    bench::add("bn_relu_conv_fwd", "fused", s.name, [pb](benchmark::State& st) {
      bench::use_threads(st);
      conv_data d(pb);
      for (auto _ : st)
        bnff::bn_relu_conv2d_forward_stats<float>(pb, d.xv(), d.sc(), d.sh(), d.wv(), d.yv(), d.pv(), d.wsv());
      bench::set_counters(st, bench::model::conv_bytes(pb), bench::model::conv_flops(pb));
    });
    bench::add("bn_relu_conv_fwd", "unfused", s.name, [pb](benchmark::State& st) {
      bench::use_threads(st);
      conv_data d(pb);
      for (auto _ : st)
        bnff::unfused::bn_relu_conv2d_forward_stats<float>(pb, d.xv(), d.sc(), d.sh(), d.wv(), d.yv(), d.pv(), d.zv(),
                                                           d.wsv());
      bench::set_counters(st, bench::model::conv_bytes(pb), bench::model::conv_flops(pb));
    });
  }
}

void add_cpl(const bench::options& o) {
  for (const auto& l : bench::composite_layers(o)) {
    for (const bool fused : {true, false}) {
      bench::add("cpl_fwd", fused ? "fused" : "unfused", l.name, [l, fused](benchmark::State& st) {
        bench::use_threads(st);
        const conv2d_problem p1 = l.conv1(), p2 = l.conv2();
        conv_data d1(p1), d2(p2);  // d2.x holds Y1 (conv1's output, conv2's input)
        const auto part1 = bnff::conv2d_stats_partition<float>(p1);
        for (auto _ : st) {
          const tensor_view<float> y1(d2.x.data(), p1.output_shape());
          if (fused) {
            bnff::bn_relu_conv2d_forward_stats<float>(p1, d1.xv(), d1.sc(), d1.sh(), d1.wv(), y1, d1.pv(), d1.wsv());
            finalize(part1, d1.partials, d2.scale.data(), d2.shift.data());
            bnff::bn_relu_conv2d_forward_stats<float>(p2, d2.xv(), d2.sc(), d2.sh(), d2.wv(), d2.yv(), d2.pv(),
                                                      d2.wsv());
          } else {
            bnff::unfused::bn_relu_conv2d_forward_stats<float>(p1, d1.xv(), d1.sc(), d1.sh(), d1.wv(), y1, d1.pv(),
                                                               d1.zv(), d1.wsv());
            finalize(part1, d1.partials, d2.scale.data(), d2.shift.data());
            bnff::unfused::bn_relu_conv2d_forward_stats<float>(p2, d2.xv(), d2.sc(), d2.sh(), d2.wv(), d2.yv(), d2.pv(),
                                                               d2.zv(), d2.wsv());
          }
        }
        bench::set_counters(st, bench::model::cpl_fwd_bytes(l), bench::model::cpl_fwd_flops(l),
                            bench::model::cpl_pass_gemm_flops(l));
      });
    }
  }
}

void add_ceiling_gemm(const bench::options&) {
  constexpr index_t m = 1024, n = 3136, k = 1024;  // square-ish, one DenseNet plane wide
  const double flops = 2.0 * m * n * k, bytes = 4.0 * (m * k + k * n + m * n);
  bench::add("ceiling_gemm", "ceiling", "1024x3136x1024", [=](benchmark::State& st) {
    bench::use_threads(st);
    bench::buffer<float> a(std::size_t(m * k)), b(std::size_t(k * n)), c(std::size_t(m * n));
    a.fill_random(1);
    b.fill_random(2);
    for (auto _ : st) bnff::gemm::matmul<float>(m, n, k, a.data(), k, b.data(), n, c.data(), n);
    bench::set_counters(st, bytes, flops);
  });
  bench::add("ceiling_gemm", "eigen", "1024x3136x1024", [=](benchmark::State& st) {
    Eigen::setNbThreads(bench::use_threads(st));
    using mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    bench::buffer<float> a(std::size_t(m * k)), b(std::size_t(k * n)), c(std::size_t(m * n));
    a.fill_random(1);
    b.fill_random(2);
    Eigen::Map<const mat> am(a.data(), m, k), bm(b.data(), k, n);
    Eigen::Map<mat> cm(c.data(), m, n);
    for (auto _ : st) cm.noalias() = am * bm;
    bench::set_counters(st, bytes, flops);
  });
}

const int registered = bench::register_family([](const bench::options& o) {
  add_conv_families(o);
  add_cpl(o);
  add_ceiling_gemm(o);
});

}  // namespace
