// Backward families, each fused path beside its unfused baseline on DenseNet-121 and
// ResNet-50 shapes (batch 16):
//   conv_bwd_data     data gradient: plain; fused (ReLU mask + BN sums in the epilogue) vs
//                     unfused (data gradient, ReLU-backward pass, reduction pass)
//   conv_bwd_weights  weight gradient: fused (BN+ReLU recomputed in the prologue, from x) vs
//                     unfused (from the stored activation)
//   cpl_bwd           a DenseNet composite layer's backward (after one forward)
//   cpl_step          a composite layer's forward + backward
//   bottleneck_step   a ResNet-50 bottleneck's forward + backward: conv1x1-BN-ReLU-conv3x3-BN-ReLU-
//                     conv1x1-BN + identity + ReLU (fused: stats in epilogues, BN+ReLU in prologues,
//                     backward reductions in epilogues; unfused: one sweep per step)
// flops: the convolutions' problem flops (forward 1x, data + weight gradient 2x);
// bytes: the compulsory traffic of the problem, the same for every variant of a family
// (every input read once, every output written once), as the other benchmark families count it.
#include <cmath>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "bnff/conv/layer_catalog.hpp"
#include "bnff/ops/dense_composite_layer.hpp"
#include "bnff/stats/bn_channel_params.hpp"

namespace {

using bnff::bn_backward_partial;
using bnff::conv2d_problem;
using bnff::index_t;
using bnff::moments;
using bnff::shape4;
using bnff::tensor_view;
using bnff::vector_view;
namespace bench = bnff::bench;
namespace unf = bnff::unfused;

constexpr double eps = 1e-5;

template <class T>
vector_view<T> vv(bench::buffer<T>& b) {
  return {b.data(), index_t(b.size)};
}
template <class T>
vector_view<const T> cv(const bench::buffer<T>& b) {
  return {b.data(), index_t(b.size)};
}
template <class T>
tensor_view<T> tv(bench::buffer<T>& b, const shape4& s) {
  return {b.data(), s};
}
template <class T>
tensor_view<const T> ctv(const bench::buffer<T>& b, const shape4& s) {
  return {b.data(), s};
}

// mean, invstd, scale, shift of every channel from merged partials (gamma 1, beta 0).
struct bn_params {
  bench::buffer<float> mean, invstd, scale, shift;
  explicit bn_params(index_t c)
      : mean(std::size_t(c)), invstd(std::size_t(c)), scale(std::size_t(c)), shift(std::size_t(c)) {}
  void set(const bnff::stats_partition& part, const moments* partials) {
    for (index_t c = 0; c < part.channels; ++c) {
      const bnff::bn_channel_params bn =
          bnff::bn_params_from_moments(bnff::merge_channel(part, partials, c), 1, 0, eps);
      mean.data()[c] = float(bn.mean);
      invstd.data()[c] = float(bn.invstd);
      scale.data()[c] = float(bn.scale);
      shift.data()[c] = float(bn.shift);
    }
  }
};

// One BN + ReLU + conv problem's tensors for its backward: x (pre-BN input), a (activated,
// for the unfused), dout, w, and the outputs.
struct conv_bwd_data {
  conv2d_problem pb;
  bench::buffer<float> x, a, dout, w, dy, dx, dw, dgamma, dbeta, ws;
  bn_params bn;
  std::vector<bn_backward_partial> partials;
  explicit conv_bwd_data(const conv2d_problem& p)
      : pb(p),
        x(std::size_t(p.input_shape().size())),
        a(std::size_t(p.input_shape().size())),
        dout(std::size_t(p.output_shape().size())),
        w(std::size_t(p.filter_shape().size())),
        dy(std::size_t(p.input_shape().size())),
        dx(std::size_t(p.input_shape().size())),
        dw(std::size_t(p.filter_shape().size())),
        dgamma(std::size_t(p.c)),
        dbeta(std::size_t(p.c)),
        ws(std::size_t(bnff::bn_relu_conv2d_backward_workspace_size<float>(p, 2))),
        bn(p.c),
        partials(std::size_t(bnff::bn_relu_conv2d_backward_partition<float>(p).size())) {
    x.fill_random(1, 0.0f, 2.0f);
    dout.fill_random(2);
    w.fill_random(3, -0.1f, 0.1f);
    for (index_t c = 0; c < p.c; ++c) {
      bn.mean.data()[c] = 1.0f, bn.invstd.data()[c] = 2.0f, bn.scale.data()[c] = 2.0f, bn.shift.data()[c] = -2.0f;
    }
    for (std::size_t i = 0; i < a.size; ++i) a.data()[i] = std::max(0.0f, 2.0f * x.data()[i] - 2.0f);
  }
  shape4 xs() const { return pb.input_shape(); }
  shape4 ys() const { return pb.output_shape(); }
  vector_view<bn_backward_partial> pv() { return {partials.data(), index_t(partials.size())}; }
};

void add_conv_families(const bench::options& o) {
  for (const auto& s : bench::conv_problems(o)) {
    const conv2d_problem pb = s.problem;
    const double bytes = bench::model::conv_bytes(pb), fl = bench::model::conv_flops(pb);
    bench::add("conv_bwd_data", "plain", s.name, [=](benchmark::State& st) {
      bench::use_threads(st);
      conv_bwd_data d(pb);
      for (auto _ : st)
        bnff::conv2d_backward_data<float>(pb, ctv(d.dout, d.ys()), ctv(d.w, pb.filter_shape()), tv(d.dx, d.xs()),
                                          bnff::grad_overwrite{}, vv(d.ws));
      bench::set_counters(st, bytes, fl);
    });
    bench::add("conv_bwd_data", "fused", s.name, [=](benchmark::State& st) {
      bench::use_threads(st);
      conv_bwd_data d(pb);
      for (auto _ : st)
        bnff::conv2d_backward_data_bn_relu<float>(pb, ctv(d.dout, d.ys()), ctv(d.w, pb.filter_shape()),
                                                  ctv(d.x, d.xs()), cv(d.bn.scale), cv(d.bn.shift), cv(d.bn.mean),
                                                  tv(d.dy, d.xs()), d.pv(), vv(d.ws));
      bench::set_counters(st, bytes, fl);
    });
    bench::add("conv_bwd_data", "unfused", s.name, [=](benchmark::State& st) {
      bench::use_threads(st);
      conv_bwd_data d(pb);
      for (auto _ : st) {
        bnff::conv2d_backward_data<float>(pb, ctv(d.dout, d.ys()), ctv(d.w, pb.filter_shape()), tv(d.dy, d.xs()),
                                          bnff::grad_overwrite{}, vv(d.ws));
        unf::relu_backward(ctv(d.a, d.xs()), ctv(d.dy, d.xs()), tv(d.dy, d.xs()));
        unf::batch_norm_backward_reduce(ctv(d.x, d.xs()), ctv(d.dy, d.xs()), cv(d.bn.mean), cv(d.bn.invstd),
                                        vv(d.dbeta), vv(d.dgamma));
      }
      bench::set_counters(st, bytes, fl);
    });
    bench::add("conv_bwd_weights", "fused", s.name, [=](benchmark::State& st) {
      bench::use_threads(st);
      conv_bwd_data d(pb);
      for (auto _ : st)
        bnff::bn_relu_conv2d_backward_weights<float>(pb, ctv(d.x, d.xs()), cv(d.bn.scale), cv(d.bn.shift),
                                                     ctv(d.dout, d.ys()), tv(d.dw, pb.filter_shape()), {}, vv(d.ws));
      bench::set_counters(st, bytes, fl);
    });
    bench::add("conv_bwd_weights", "unfused", s.name, [=](benchmark::State& st) {
      bench::use_threads(st);
      conv_bwd_data d(pb);
      for (auto _ : st)
        bnff::conv2d_backward_weights<float>(pb, ctv(d.a, d.xs()), ctv(d.dout, d.ys()), tv(d.dw, pb.filter_shape()), {},
                                             vv(d.ws));
      bench::set_counters(st, bytes, fl);
    });
  }
}

// ---- DenseNet composite layer ----

struct cpl_data {
  bnff::composite_layer_problem pb;
  index_t total;
  bench::buffer<float> cat, gcat, w1, w2, g1, b1, g2, b2, dw1, dw2, dg1, db1, dg2, db2;
  std::vector<moments> xst, outst;
  explicit cpl_data(const bnff::catalog::composite_layer& l)
      : pb{l.n, l.c_in, l.h, l.w, l.bottleneck, l.growth},
        total(l.c_in + l.growth),
        cat(std::size_t(l.n * total * l.h * l.w)),
        gcat(std::size_t(l.n * total * l.h * l.w)),
        w1(std::size_t(pb.conv1().filter_shape().size())),
        w2(std::size_t(pb.conv2().filter_shape().size())),
        g1(std::size_t(l.c_in), 1.0f),
        b1(std::size_t(l.c_in), 0.0f),
        g2(std::size_t(l.bottleneck), 1.0f),
        b2(std::size_t(l.bottleneck), 0.0f),
        dw1(w1.size),
        dw2(w2.size),
        dg1(g1.size),
        db1(g1.size),
        dg2(g2.size),
        db2(g2.size),
        xst(std::size_t(l.c_in)),
        outst(std::size_t(l.growth)) {
    cat.fill_random(1);
    gcat.fill_random(2);
    w1.fill_random(3, -0.1f, 0.1f);
    w2.fill_random(4, -0.1f, 0.1f);
    const auto x = xv();
    for (index_t c = 0; c < pb.c_in; ++c)
      for (index_t n = 0; n < pb.n; ++n)
        xst[std::size_t(c)] = bnff::merge(xst[std::size_t(c)], bnff::block_moments(x.plane_ptr(n, c), pb.h * pb.w));
  }
  shape4 cat_shape() const { return {pb.n, total, pb.h, pb.w}; }
  tensor_view<const float> xv() const { return tensor_view<const float>(cat.data(), cat_shape()).channels(0, pb.c_in); }
  tensor_view<float> outv() { return tensor_view<float>(cat.data(), cat_shape()).channels(pb.c_in, pb.growth); }
  tensor_view<float> dxv() { return tensor_view<float>(gcat.data(), cat_shape()).channels(0, pb.c_in); }
  tensor_view<const float> doutv() const {
    return tensor_view<const float>(gcat.data(), cat_shape()).channels(pb.c_in, pb.growth);
  }
  bnff::composite_layer_params<float> params() const {
    return {ctv(w1, pb.conv1().filter_shape()), ctv(w2, pb.conv2().filter_shape()), cv(g1), cv(b1), cv(g2), cv(b2)};
  }
  bnff::composite_layer_grads<float> grads() {
    return {tv(dw1, pb.conv1().filter_shape()), tv(dw2, pb.conv2().filter_shape()), vv(dg1), vv(db1), vv(dg2), vv(db2)};
  }
};

void add_cpl(const bench::options& o) {
  for (const auto& l : bench::composite_layers(o)) {
    for (const bool step : {false, true}) {
      const std::string family = step ? "cpl_step" : "cpl_bwd";
      bench::add(family, "fused", l.name, [l, step](benchmark::State& st) {
        bench::use_threads(st);
        cpl_data d(l);
        bnff::dense_composite_layer<float> layer(d.pb, 2);
        layer.forward(d.xv(), {d.xst.data(), d.pb.c_in}, d.params(), eps, d.outv(), {d.outst.data(), d.pb.growth});
        for (auto _ : st) {
          if (step)
            layer.forward(d.xv(), {d.xst.data(), d.pb.c_in}, d.params(), eps, d.outv(), {d.outst.data(), d.pb.growth});
          layer.backward(d.xv(), d.params(), d.doutv(), d.dxv(), bnff::grad_accumulate{}, d.grads());
        }
        bench::set_counters(st, step ? bench::model::cpl_step_bytes(l) : bench::model::cpl_bwd_bytes(l),
                            step ? bench::model::cpl_step_flops(l) : bench::model::cpl_bwd_flops(l),
                            (step ? 3 : 2) * bench::model::cpl_pass_gemm_flops(l));
        st.counters["kept_MB"] = double(bnff::dense_composite_layer<float>::activation_bytes(d.pb)) / 1e6;
      });
      bench::add(family, "unfused", l.name, [l, step](benchmark::State& st) {
        bench::use_threads(st);
        cpl_data d(l);
        unf::dense_composite_layer<float> layer(d.pb, 2);
        layer.forward(d.xv(), d.params(), eps, d.outv());
        for (auto _ : st) {
          if (step) layer.forward(d.xv(), d.params(), eps, d.outv());
          layer.backward(d.xv(), d.params(), d.doutv(), d.dxv(), bnff::grad_accumulate{}, d.grads());
        }
        bench::set_counters(st, step ? bench::model::cpl_step_bytes(l) : bench::model::cpl_bwd_bytes(l),
                            step ? bench::model::cpl_step_flops(l) : bench::model::cpl_bwd_flops(l),
                            (step ? 3 : 2) * bench::model::cpl_pass_gemm_flops(l));
        st.counters["kept_MB"] = double(unf::dense_composite_layer<float>::activation_bytes(d.pb)) / 1e6;
      });
    }
  }
}

// ---- ResNet-50 bottleneck: conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1-BN + identity, ReLU ----

struct bottleneck_data {
  conv2d_problem p1, p2, p3;
  shape4 xs, ms;  // block input/output (c channels), middle tensors (mid channels)
  bench::buffer<float> x, out, dout, dx, dz, w1, w2, w3, dw1, dw2, dw3, y1, y2, y3, a1, a2, s1, s2, dy3, dg, db, ws;
  bn_params bn1, bn2, bn3;
  std::vector<moments> partials;
  std::vector<bn_backward_partial> bpartials;
  explicit bottleneck_data(const bnff::catalog::bottleneck_block& b)
      : p1(b.conv1()),
        p2(b.conv2()),
        p3(b.conv3()),
        xs{b.n, b.c, b.h, b.w},
        ms{b.n, b.mid, b.h, b.w},
        x(std::size_t(xs.size())),
        out(x.size),
        dout(x.size),
        dx(x.size),
        dz(x.size),
        w1(std::size_t(p1.filter_shape().size())),
        w2(std::size_t(p2.filter_shape().size())),
        w3(std::size_t(p3.filter_shape().size())),
        dw1(w1.size),
        dw2(w2.size),
        dw3(w3.size),
        y1(std::size_t(ms.size())),
        y2(y1.size),
        y3(x.size),
        a1(y1.size),
        a2(y1.size),
        s1(y1.size),
        s2(y1.size),
        dy3(x.size),
        dg(std::size_t(b.c)),
        db(std::size_t(b.c)),
        ws(std::size_t(std::max({bnff::conv2d_forward_workspace_size<float>(p1, 2),
                                 bnff::conv2d_forward_workspace_size<float>(p2, 2),
                                 bnff::conv2d_forward_workspace_size<float>(p3, 2),
                                 bnff::bn_relu_conv2d_backward_workspace_size<float>(p1, 2),
                                 bnff::bn_relu_conv2d_backward_workspace_size<float>(p2, 2),
                                 bnff::bn_relu_conv2d_backward_workspace_size<float>(p3, 2)}))),
        bn1(b.mid),
        bn2(b.mid),
        bn3(b.c),
        partials(std::size_t(
            std::max({bnff::conv2d_stats_partition<float>(p1).size(), bnff::conv2d_stats_partition<float>(p2).size(),
                      bnff::conv2d_stats_partition<float>(p3).size()}))),
        bpartials(std::size_t(std::max(bnff::bn_relu_conv2d_backward_partition<float>(p2).size(),
                                       bnff::bn_relu_conv2d_backward_partition<float>(p3).size()))) {
    x.fill_random(1, 0.0f, 1.0f);
    dout.fill_random(2);
    w1.fill_random(3, -0.1f, 0.1f);
    w2.fill_random(4, -0.05f, 0.05f);
    w3.fill_random(5, -0.1f, 0.1f);
  }
  vector_view<moments> pv() { return {partials.data(), index_t(partials.size())}; }
  vector_view<bn_backward_partial> bpv() { return {bpartials.data(), index_t(bpartials.size())}; }
  tensor_view<const float> wv(const bench::buffer<float>& w, const conv2d_problem& p) const {
    return ctv(w, p.filter_shape());
  }
  tensor_view<float> dwv(bench::buffer<float>& w, const conv2d_problem& p) { return tv(w, p.filter_shape()); }

  // out = max(0, y3 * scale3 + shift3 + x), one sweep.
  void residual_relu() {
    const index_t plane = xs.plane();
    bnff::parallel_for(xs.n * xs.c, [&](index_t t) {
      const index_t c = t % xs.c;
      const float sc = bn3.scale.data()[c], sh = bn3.shift.data()[c];
      const float* yp = y3.data() + t * plane;
      const float* xp = x.data() + t * plane;
      float* op = out.data() + t * plane;
      for (index_t i = 0; i < plane; ++i) op[i] = std::max(0.0f, std::fma(yp[i], sc, sh) + xp[i]);
    });
  }
  // dx += dz (the identity's gradient), one sweep.
  void add_identity_grad() {
    bnff::parallel_for(xs.n * xs.c, [&](index_t t) {
      float* d = dx.data() + t * xs.plane();
      const float* z = dz.data() + t * xs.plane();
      for (index_t i = 0; i < xs.plane(); ++i) d[i] += z[i];
    });
  }
  // The tail's backward, the same sweeps in both variants: dz = dout * [out > 0], BN3's sums, dY3.
  void tail_backward() {
    unf::relu_backward(ctv(out, xs), ctv(dout, xs), tv(dz, xs));
    unf::batch_norm_backward_reduce(ctv(y3, xs), ctv(dz, xs), cv(bn3.mean), cv(bn3.invstd), vv(db), vv(dg));
    bnff::bn_backward_dx<float>(ctv(y3, xs), ctv(dz, xs), cv(bn3.mean), cv(bn3.invstd), cv(bn3.scale), cv(dg), cv(db),
                                tv(dy3, xs));
  }

  void fused_step() {
    bnff::conv2d_forward_stats<float>(p1, ctv(x, xs), wv(w1, p1), tv(y1, ms), pv(), vv(ws));
    bn1.set(bnff::conv2d_stats_partition<float>(p1), partials.data());
    bnff::bn_relu_conv2d_forward_stats<float>(p2, ctv(y1, ms), cv(bn1.scale), cv(bn1.shift), wv(w2, p2), tv(y2, ms),
                                              pv(), vv(ws));
    bn2.set(bnff::conv2d_stats_partition<float>(p2), partials.data());
    bnff::bn_relu_conv2d_forward_stats<float>(p3, ctv(y2, ms), cv(bn2.scale), cv(bn2.shift), wv(w3, p3), tv(y3, xs),
                                              pv(), vv(ws));
    bn3.set(bnff::conv2d_stats_partition<float>(p3), partials.data());
    residual_relu();
    tail_backward();
    const vector_view<float> dgm = vv(dg).subview(0, ms.c), dbm = vv(db).subview(0, ms.c);
    bnff::bn_relu_conv2d_backward<float>(p3, ctv(y2, ms), cv(bn2.mean), cv(bn2.invstd), cv(bn2.scale), cv(bn2.shift),
                                         wv(w3, p3), ctv(dy3, xs), dwv(dw3, p3), tv(s2, ms), bpv(), dgm, dbm,
                                         tv(s2, ms), bnff::grad_overwrite{}, vv(ws));
    bnff::bn_relu_conv2d_backward<float>(p2, ctv(y1, ms), cv(bn1.mean), cv(bn1.invstd), cv(bn1.scale), cv(bn1.shift),
                                         wv(w2, p2), ctv(s2, ms), dwv(dw2, p2), tv(s1, ms), bpv(), dgm, dbm, tv(s1, ms),
                                         bnff::grad_overwrite{}, vv(ws));
    bnff::conv2d_backward_weights<float>(p1, ctv(x, xs), ctv(s1, ms), dwv(dw1, p1), {}, vv(ws));
    bnff::conv2d_backward_data<float>(p1, ctv(s1, ms), wv(w1, p1), tv(dx, xs), bnff::grad_overwrite{}, vv(ws));
    add_identity_grad();
  }

  void unfused_step() {
    const auto part1 = bnff::stats_partition{ms.n, ms.c, ms.plane()},
               part3 = bnff::stats_partition{xs.n, xs.c, xs.plane()};
    bnff::conv2d_forward<float>(p1, ctv(x, xs), wv(w1, p1), {}, tv(y1, ms), vv(ws));
    bnff::batch_norm_stats_partials(ctv(y1, ms), part1, pv().subview(0, part1.size()));
    bn1.set(part1, partials.data());
    bnff::batch_norm_apply_affine<bnff::bn_identity>(ctv(y1, ms), tv(a1, ms), cv(bn1.scale), cv(bn1.shift));
    unf::relu(ctv(a1, ms), tv(a1, ms));
    bnff::conv2d_forward<float>(p2, ctv(a1, ms), wv(w2, p2), {}, tv(y2, ms), vv(ws));
    bnff::batch_norm_stats_partials(ctv(y2, ms), part1, pv().subview(0, part1.size()));
    bn2.set(part1, partials.data());
    bnff::batch_norm_apply_affine<bnff::bn_identity>(ctv(y2, ms), tv(a2, ms), cv(bn2.scale), cv(bn2.shift));
    unf::relu(ctv(a2, ms), tv(a2, ms));
    bnff::conv2d_forward<float>(p3, ctv(a2, ms), wv(w3, p3), {}, tv(y3, xs), vv(ws));
    bnff::batch_norm_stats_partials(ctv(y3, xs), part3, pv().subview(0, part3.size()));
    bn3.set(part3, partials.data());
    bnff::batch_norm_apply_affine<bnff::bn_identity>(ctv(y3, xs), tv(out, xs), cv(bn3.scale),
                                                     cv(bn3.shift));  // z3, stored
    bnff::parallel_for(xs.n * xs.c, [&](index_t t) {                  // the residual add, its own sweep
      float* o = out.data() + t * xs.plane();
      const float* xp = x.data() + t * xs.plane();
      for (index_t i = 0; i < xs.plane(); ++i) o[i] += xp[i];
    });
    unf::relu(ctv(out, xs), tv(out, xs));
    tail_backward();
    const vector_view<float> dgm = vv(dg).subview(0, ms.c), dbm = vv(db).subview(0, ms.c);
    unf::bn_relu_conv2d_backward<float>(p3, ctv(y2, ms), ctv(a2, ms), cv(bn2.mean), cv(bn2.invstd), cv(bn2.scale),
                                        wv(w3, p3), ctv(dy3, xs), dwv(dw3, p3), tv(s2, ms), dgm, dbm, tv(s2, ms),
                                        bnff::grad_overwrite{}, vv(ws));
    unf::bn_relu_conv2d_backward<float>(p2, ctv(y1, ms), ctv(a1, ms), cv(bn1.mean), cv(bn1.invstd), cv(bn1.scale),
                                        wv(w2, p2), ctv(s2, ms), dwv(dw2, p2), tv(s1, ms), dgm, dbm, tv(s1, ms),
                                        bnff::grad_overwrite{}, vv(ws));
    bnff::conv2d_backward_weights<float>(p1, ctv(x, xs), ctv(s1, ms), dwv(dw1, p1), {}, vv(ws));
    bnff::conv2d_backward_data<float>(p1, ctv(s1, ms), wv(w1, p1), tv(dx, xs), bnff::grad_overwrite{}, vv(ws));
    add_identity_grad();
  }
};

void add_bottleneck(const bench::options& o) {
  for (const auto& b : bench::bottlenecks(o))
    for (const bool fused : {true, false})
      bench::add("bottleneck_step", fused ? "fused" : "unfused", b.name, [b, fused](benchmark::State& st) {
        bench::use_threads(st);
        bottleneck_data d(b);
        for (auto _ : st) fused ? d.fused_step() : d.unfused_step();
        bench::set_counters(st, bench::model::bottleneck_step_bytes(b), bench::model::bottleneck_step_flops(b),
                            3 * bench::model::bottleneck_pass_gemm_flops(b));
      });
}

const int registered = bench::register_family([](const bench::options& o) {
  add_conv_families(o);
  add_cpl(o);
  add_bottleneck(o);
});

}  // namespace
