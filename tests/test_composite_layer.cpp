// The DenseNet composite layer (BN-ReLU-conv1x1 -> BN-ReLU-conv3x3), fused and unfused,
// forward and backward over channel slices of one concatenation buffer: against the double
// reference, finite differences of the whole layer, each other, and thread counts.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "bnff/conv/layer_catalog.hpp"
#include "bnff/ops/dense_composite_layer.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"

namespace {

using bnff::composite_layer_problem;
using bnff::index_t;
using bnff::moments;
using bnff::shape4;
using bnff::tensor_view;
using bnff::vector_view;
using vec = std::vector<double>;

constexpr double eps = 1e-5;

struct layer_grads {
  vec out, dx, dw1, dw2, dgamma1, dbeta1, dgamma2, dbeta2;
};

// The layer in double, as the math is written (reference forward and backward).
struct reference_layer {
  composite_layer_problem pb;
  vec w1, w2, gamma1, beta1, gamma2, beta2;

  vec forward(const vec& x) const {
    const shape4 xs = pb.input_shape(), ys = pb.bottleneck_shape();
    const auto st1 = bnff::ref::batch_stats(xs, x);
    const auto a1 = bnff::ref::relu(bnff::ref::bn_normalize(xs, x, st1.mean, st1.var, gamma1, beta1, eps));
    const auto y1 = bnff::ref::conv2d_forward(pb.conv1(), a1, w1);
    const auto st2 = bnff::ref::batch_stats(ys, y1);
    const auto a2 = bnff::ref::relu(bnff::ref::bn_normalize(ys, y1, st2.mean, st2.var, gamma2, beta2, eps));
    return bnff::ref::conv2d_forward(pb.conv2(), a2, w2);
  }

  layer_grads gradients(const vec& x, const vec& g) const {
    const shape4 xs = pb.input_shape(), ys = pb.bottleneck_shape();
    const auto st1 = bnff::ref::batch_stats(xs, x);
    const auto z1 = bnff::ref::bn_normalize(xs, x, st1.mean, st1.var, gamma1, beta1, eps);
    const auto a1 = bnff::ref::relu(z1);
    const auto y1 = bnff::ref::conv2d_forward(pb.conv1(), a1, w1);
    const auto st2 = bnff::ref::batch_stats(ys, y1);
    const auto z2 = bnff::ref::bn_normalize(ys, y1, st2.mean, st2.var, gamma2, beta2, eps);
    const auto a2 = bnff::ref::relu(z2);
    layer_grads r;
    r.out = bnff::ref::conv2d_forward(pb.conv2(), a2, w2);
    r.dw2 = bnff::ref::conv2d_backward_weights(pb.conv2(), a2, g);
    const auto bn2 = bnff::ref::bn_backward(
        ys, y1, bnff::ref::relu_backward(z2, bnff::ref::conv2d_backward_data(pb.conv2(), g, w2)), gamma2, eps);
    r.dw1 = bnff::ref::conv2d_backward_weights(pb.conv1(), a1, bn2.dx);
    const auto bn1 = bnff::ref::bn_backward(
        xs, x, bnff::ref::relu_backward(z1, bnff::ref::conv2d_backward_data(pb.conv1(), bn2.dx, w1)), gamma1, eps);
    r.dx = bn1.dx;
    r.dgamma1 = bn1.dgamma, r.dbeta1 = bn1.dbeta, r.dgamma2 = bn2.dgamma, r.dbeta2 = bn2.dbeta;
    return r;
  }
};

reference_layer make_reference(const composite_layer_problem& pb, bool round_float) {
  reference_layer r{pb,
                    bnff::test::random_vector(std::size_t(pb.conv1().filter_shape().size()), 71),
                    bnff::test::random_vector(std::size_t(pb.conv2().filter_shape().size()), 72),
                    bnff::test::random_vector(std::size_t(pb.c_in), 73, 0.5, 1.5),
                    bnff::test::random_vector(std::size_t(pb.c_in), 74, -0.5, 0.5),
                    bnff::test::random_vector(std::size_t(pb.bottleneck), 75, 0.5, 1.5),
                    bnff::test::random_vector(std::size_t(pb.bottleneck), 76, -0.5, 0.5)};
  if (round_float)
    for (auto* v : {&r.w1, &r.w2, &r.gamma1, &r.beta1, &r.gamma2, &r.beta2})
      for (auto& e : *v) e = double(float(e));
  return r;
}

// Runs a layer implementation (fused or unfused) on x stored as channels [pad, pad + c_in) of
// a concatenation buffer of c_in + growth + 2 * pad channels, its output in the channels after
// x, and the gradient accumulated into the matching slice of a concatenation gradient.
template <class T, bool Fused>
layer_grads run_layer(const reference_layer& r, const vec& x, const vec& g, const vec& dx0, index_t pad) {
  const composite_layer_problem& pb = r.pb;
  const index_t total = pb.c_in + pb.growth + 2 * pad, plane = pb.h * pb.w;
  const shape4 cat{pb.n, total, pb.h, pb.w};
  std::vector<T> buf(std::size_t(cat.size()), std::numeric_limits<T>::quiet_NaN());
  std::vector<T> gbuf(std::size_t(cat.size()), T(-3));
  auto put = [&](std::vector<T>& b, const vec& v, index_t first, index_t channels) {
    for (index_t n = 0; n < pb.n; ++n)
      for (index_t c = 0; c < channels; ++c)
        for (index_t i = 0; i < plane; ++i)
          b[std::size_t((n * total + first + c) * plane + i)] = T(v[std::size_t((n * channels + c) * plane + i)]);
  };
  auto get = [&](const std::vector<T>& b, index_t first, index_t channels) {
    vec v(std::size_t(pb.n * channels * plane));
    for (index_t n = 0; n < pb.n; ++n)
      for (index_t c = 0; c < channels; ++c)
        for (index_t i = 0; i < plane; ++i)
          v[std::size_t((n * channels + c) * plane + i)] = double(b[std::size_t((n * total + first + c) * plane + i)]);
    return v;
  };
  put(buf, x, pad, pb.c_in);
  put(gbuf, g, pad + pb.c_in, pb.growth);
  put(gbuf, dx0, pad, pb.c_in);
  const tensor_view<T> catv(buf.data(), cat), gcatv(gbuf.data(), cat);
  const auto xv = catv.channels(pad, pb.c_in), outv = catv.channels(pad + pb.c_in, pb.growth);
  const auto dxv = gcatv.channels(pad, pb.c_in), doutv = gcatv.channels(pad + pb.c_in, pb.growth);
  const auto w1 = bnff::test::cast_vector<T>(r.w1), w2 = bnff::test::cast_vector<T>(r.w2),
             g1 = bnff::test::cast_vector<T>(r.gamma1), b1 = bnff::test::cast_vector<T>(r.beta1),
             g2 = bnff::test::cast_vector<T>(r.gamma2), b2 = bnff::test::cast_vector<T>(r.beta2);
  const bnff::composite_layer_params<T> params{{w1.data(), pb.conv1().filter_shape()},
                                               {w2.data(), pb.conv2().filter_shape()},
                                               {g1.data(), pb.c_in},
                                               {b1.data(), pb.c_in},
                                               {g2.data(), pb.bottleneck},
                                               {b2.data(), pb.bottleneck}};
  std::vector<T> dw1(w1.size(), std::numeric_limits<T>::quiet_NaN()),
      dw2(w2.size(), std::numeric_limits<T>::quiet_NaN()), dg1(g1.size()), db1(b1.size()), dg2(g2.size()),
      db2(b2.size());
  const bnff::composite_layer_grads<T> grads{{dw1.data(), pb.conv1().filter_shape()},
                                             {dw2.data(), pb.conv2().filter_shape()},
                                             {dg1.data(), pb.c_in},
                                             {db1.data(), pb.c_in},
                                             {dg2.data(), pb.bottleneck},
                                             {db2.data(), pb.bottleneck}};
  if constexpr (Fused) {
    // The input's moments, as the convolutions that produced its channels would have left them.
    std::vector<moments> xst(std::size_t(pb.c_in)), outst(std::size_t(pb.growth));
    for (index_t c = 0; c < pb.c_in; ++c)
      for (index_t n = 0; n < pb.n; ++n)
        xst[std::size_t(c)] = bnff::merge(xst[std::size_t(c)], bnff::block_moments(xv.plane_ptr(n, c), plane));
    bnff::dense_composite_layer<T> layer(pb);
    layer.forward(xv, {xst.data(), pb.c_in}, params, eps, outv, {outst.data(), pb.growth});
    // The output's moments are those of the output.
    const auto out = get(buf, pad + pb.c_in, pb.growth);
    const auto st = bnff::ref::batch_stats(pb.output_shape(), out);
    // block_moments sums float blocks in float lanes (a few ulps, merged in double):
    // 1e-6 relative for float, and the double path is exact to a few double ulps.
    const double var_tol = std::is_same_v<T, float> ? 1e-6 : 1e-12;
    for (index_t k = 0; k < pb.growth; ++k) {
      REQUIRE(outst[std::size_t(k)].mean == Approx(st.mean[std::size_t(k)]).margin(1e-12));
      REQUIRE(outst[std::size_t(k)].variance() == Approx(st.var[std::size_t(k)]).epsilon(var_tol));
    }
    layer.backward(xv, params, doutv, dxv, bnff::grad_accumulate{}, grads);
  } else {
    bnff::unfused::dense_composite_layer<T> layer(pb);
    layer.forward(xv, params, eps, outv);
    layer.backward(xv, params, doutv, dxv, bnff::grad_accumulate{}, grads);
  }
  // Channels outside the slices are untouched.
  for (index_t n = 0; n < pb.n; ++n)
    for (index_t c = 0; c < total; ++c)
      for (index_t i = 0; i < plane; ++i) {
        const std::size_t j = std::size_t((n * total + c) * plane + i);
        if (c < pad || c >= pad + pb.c_in + pb.growth) {
          REQUIRE(std::isnan(buf[j]));
          REQUIRE(gbuf[j] == T(-3));
        }
      }
  auto d = [](const std::vector<T>& v) { return vec(v.begin(), v.end()); };
  return {get(buf, pad + pb.c_in, pb.growth), get(gbuf, pad, pb.c_in), d(dw1), d(dw2), d(dg1), d(db1), d(dg2), d(db2)};
}

double max_abs(const vec& v) {
  double m = 0;
  for (double e : v) m = std::max(m, std::abs(e));
  return m;
}

void require_close(const vec& got, const vec& want, double rel, const char* what) {
  REQUIRE(got.size() == want.size());
  const double tol = rel * max_abs(want) + 1e-300;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (!(std::abs(got[i] - want[i]) <= tol))
      FAIL(what << "[" << i << "] = " << got[i] << ", want " << want[i] << ", tol " << tol);
}

void require_all_close(const layer_grads& a, const layer_grads& b, double rel) {
  require_close(a.out, b.out, rel, "out");
  require_close(a.dx, b.dx, rel, "dx");
  require_close(a.dw1, b.dw1, rel, "dw1");
  require_close(a.dw2, b.dw2, rel, "dw2");
  require_close(a.dgamma1, b.dgamma1, rel, "dgamma1");
  require_close(a.dbeta1, b.dbeta1, rel, "dbeta1");
  require_close(a.dgamma2, b.dgamma2, rel, "dgamma2");
  require_close(a.dbeta2, b.dbeta2, rel, "dbeta2");
}

struct inputs {
  vec x, g, dx0;
};
inputs make_inputs(const composite_layer_problem& pb, bool round_float) {
  inputs in{bnff::test::random_vector(std::size_t(pb.input_shape().size()), 81, -1.0, 3.0),
            bnff::test::random_vector(std::size_t(pb.output_shape().size()), 82),
            bnff::test::random_vector(std::size_t(pb.input_shape().size()), 83)};
  if (round_float)
    for (auto* v : {&in.x, &in.g, &in.dx0})
      for (auto& e : *v) e = double(float(e));
  return in;
}

const composite_layer_problem layers[] = {{2, 5, 5, 5, 8, 3}, {2, 7, 7, 6, 16, 4}, {1, 3, 9, 11, 9, 5}};

}  // namespace

TEST_CASE("composite layer matches the double reference", "[composite][backward]") {
  for (const auto& pb : layers) {
    INFO("layer c_in " << pb.c_in << " h " << pb.h << " w " << pb.w << " bottleneck " << pb.bottleneck);
    const auto r = make_reference(pb, true);
    const auto in = make_inputs(pb, true);
    auto want = r.gradients(in.x, in.g);
    for (std::size_t i = 0; i < want.dx.size(); ++i) want.dx[i] += in.dx0[i];
    // double: the same math in another order, 1e-9 of the largest magnitude (two BNs deep).
    require_all_close(run_layer<double, true>(r, in.x, in.g, in.dx0, 1), want, 1e-9);
    require_all_close(run_layer<double, false>(r, in.x, in.g, in.dx0, 0), want, 1e-9);
    // float: two convolutions and two BN backwards, each adding ~1e-6 relative; 5e-4 of the
    // largest magnitude leaves room for the amplification through BN2's dx.
    require_all_close(run_layer<float, true>(r, in.x, in.g, in.dx0, 2), want, 5e-4);
    require_all_close(run_layer<float, false>(r, in.x, in.g, in.dx0, 1), want, 5e-4);
  }
}

TEST_CASE("fused and unfused composite layers agree in float", "[composite][backward][unfused]") {
  for (const auto& pb : layers) {
    const auto r = make_reference(pb, true);
    const auto in = make_inputs(pb, true);
    // Two float computations of the same values in different orders: 5e-4 as above.
    require_all_close(run_layer<float, true>(r, in.x, in.g, in.dx0, 1),
                      run_layer<float, false>(r, in.x, in.g, in.dx0, 1), 5e-4);
  }
}

TEST_CASE("composite layer gradients agree with finite differences in double", "[composite][backward][fd]") {
  // loss = sum(out * g) through both BNs in training mode; central differences with h = 1e-6
  // (truncation ~h^2, rounding ~1e-16 / h): 1e-6 relative with a 1e-8 margin near zero.
  const composite_layer_problem pb{2, 3, 5, 4, 6, 2};
  auto r = make_reference(pb, false);
  auto in = make_inputs(pb, false);
  const vec zero(in.dx0.size(), 0.0);
  const auto got = run_layer<double, true>(r, in.x, in.g, zero, 1);
  const double h = 1e-6;
  auto loss = [&] {
    const auto out = r.forward(in.x);
    double l = 0;
    for (std::size_t i = 0; i < out.size(); ++i) l += out[i] * in.g[i];
    return l;
  };
  auto fd = [&](vec& v, std::size_t i) {
    const double v0 = v[i];
    v[i] = v0 + h;
    const double lp = loss();
    v[i] = v0 - h;
    const double lm = loss();
    v[i] = v0;
    return (lp - lm) / (2 * h);
  };
  for (std::size_t i = 0; i < in.x.size(); i += 3) REQUIRE(fd(in.x, i) == Approx(got.dx[i]).epsilon(1e-6).margin(1e-8));
  for (std::size_t i = 0; i < r.w1.size(); i += 2)
    REQUIRE(fd(r.w1, i) == Approx(got.dw1[i]).epsilon(1e-6).margin(1e-8));
  for (std::size_t i = 0; i < r.w2.size(); i += 5)
    REQUIRE(fd(r.w2, i) == Approx(got.dw2[i]).epsilon(1e-6).margin(1e-8));
  for (std::size_t c = 0; c < r.gamma1.size(); ++c) {
    REQUIRE(fd(r.gamma1, c) == Approx(got.dgamma1[c]).epsilon(1e-6).margin(1e-8));
    REQUIRE(fd(r.beta1, c) == Approx(got.dbeta1[c]).epsilon(1e-6).margin(1e-8));
  }
  for (std::size_t c = 0; c < r.gamma2.size(); ++c) {
    REQUIRE(fd(r.gamma2, c) == Approx(got.dgamma2[c]).epsilon(1e-6).margin(1e-8));
    REQUIRE(fd(r.beta2, c) == Approx(got.dbeta2[c]).epsilon(1e-6).margin(1e-8));
  }
}

TEST_CASE("composite layer does not depend on the thread count", "[composite][backward][threads]") {
  const composite_layer_problem pb{3, 20, 9, 10, 32, 8};
  const auto r = make_reference(pb, true);
  const auto in = make_inputs(pb, true);
  auto flat = [](const layer_grads& g) {
    vec all;
    for (const auto* v : {&g.out, &g.dx, &g.dw1, &g.dw2, &g.dgamma1, &g.dbeta1, &g.dgamma2, &g.dbeta2})
      all.insert(all.end(), v->begin(), v->end());
    return all;
  };
  bnff::set_num_threads(1);
  const auto one = flat(run_layer<float, true>(r, in.x, in.g, in.dx0, 1));
  bnff::set_num_threads(2);
  const auto two = flat(run_layer<float, true>(r, in.x, in.g, in.dx0, 1));
  REQUIRE(std::memcmp(one.data(), two.data(), one.size() * sizeof(double)) == 0);
}

TEST_CASE("composite layer activation memory: fused keeps Y1 and per-channel vectors", "[composite][memory]") {
  for (const auto& l : bnff::catalog::densenet121_composite_layers(16)) {
    const composite_layer_problem pb{l.n, l.c_in, l.h, l.w, l.bottleneck, l.growth};
    const std::size_t plane = std::size_t(l.h * l.w), n = std::size_t(l.n);
    const std::size_t vectors = 4 * 4 * std::size_t(l.c_in + l.bottleneck);  // mean, invstd, scale, shift in float
    REQUIRE(bnff::dense_composite_layer<float>::activation_bytes(pb) ==
            4 * n * std::size_t(l.bottleneck) * plane + vectors);
    // Unfused also keeps both activated tensors: A1 (c_in channels) and A2 (bottleneck channels).
    REQUIRE(bnff::unfused::dense_composite_layer<float>::activation_bytes(pb) ==
            4 * n * std::size_t(l.c_in + 2 * l.bottleneck) * plane + vectors);
  }
}

TEST_CASE("composite layer rejects bad arguments before writing", "[composite][errors]") {
  const composite_layer_problem pb{2, 4, 5, 5, 8, 3};
  const auto r = make_reference(pb, true);
  const auto w1 = bnff::test::cast_vector<float>(r.w1), w2 = bnff::test::cast_vector<float>(r.w2),
             g1 = bnff::test::cast_vector<float>(r.gamma1), b1 = bnff::test::cast_vector<float>(r.beta1),
             g2 = bnff::test::cast_vector<float>(r.gamma2), b2 = bnff::test::cast_vector<float>(r.beta2);
  const bnff::composite_layer_params<float> params{{w1.data(), pb.conv1().filter_shape()},
                                                   {w2.data(), pb.conv2().filter_shape()},
                                                   {g1.data(), pb.c_in},
                                                   {b1.data(), pb.c_in},
                                                   {g2.data(), pb.bottleneck},
                                                   {b2.data(), pb.bottleneck}};
  std::vector<float> x(std::size_t(pb.input_shape().size()), 1.0f), out(std::size_t(pb.output_shape().size()), 5.0f);
  std::vector<moments> xst(std::size_t(pb.c_in), moments{50, 1, 2}), outst(std::size_t(pb.growth), moments{5, 5, 5});
  bnff::dense_composite_layer<float> layer(pb);
  const tensor_view<const float> xv(x.data(), pb.input_shape());
  const tensor_view<float> outv(out.data(), pb.output_shape());
  REQUIRE_THROWS_WITH(layer.forward(xv, {xst.data(), 3}, params, eps, outv, {outst.data(), pb.growth}),
                      Catch::Contains("dense_composite_layer::forward") && Catch::Contains("'x_stats'"));
  REQUIRE_THROWS_WITH(layer.forward(xv, {xst.data(), pb.c_in}, params, 0.0, outv, {outst.data(), pb.growth}),
                      Catch::Contains("'eps'"));
  auto bad = params;
  bad.gamma2 = {g2.data(), 3};
  REQUIRE_THROWS_WITH(layer.forward(xv, {xst.data(), pb.c_in}, bad, eps, outv, {outst.data(), pb.growth}),
                      Catch::Contains("'params.gamma2'"));
  for (float v : out) REQUIRE(v == 5.0f);
  for (const auto& m : outst) REQUIRE((m.count == 5 && m.mean == 5 && m.m2 == 5));
}
