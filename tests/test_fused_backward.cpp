// The fused backward of BN + ReLU + convolution (mask and reductions in the data
// gradient's epilogue, activation recomputed in the weight gradient's prologue)
// against the naive double reference, finite differences, the unfused passes and
// itself on another thread count; bad-argument errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "bnff/ops/bn_relu_conv2d_backward.hpp"
#include "bnff/ops/unfused/bn_relu_conv2d_backward_unfused.hpp"
#include "bnff/simd/fma.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"

namespace {

using bnff::bn_backward_partial;
using bnff::conv2d_problem;
using bnff::index_t;
using bnff::shape4;
using bnff::tensor_view;
using bnff::vector_view;

constexpr double eps = 1e-5;

// Copies between a packed double tensor and channels [first, first + s.c) of a buffer with `total` channels.
template <class T>
void put(const shape4& s, const std::vector<double>& v, std::vector<T>& buf, index_t total, index_t first) {
  for (index_t n = 0; n < s.n; ++n)
    for (index_t c = 0; c < s.c; ++c)
      for (index_t i = 0; i < s.plane(); ++i)
        buf[std::size_t((n * total + first + c) * s.plane() + i)] = T(v[std::size_t((n * s.c + c) * s.plane() + i)]);
}
template <class T>
std::vector<double> get(const shape4& s, const std::vector<T>& buf, index_t total, index_t first) {
  std::vector<double> v(std::size_t(s.size()));
  for (index_t n = 0; n < s.n; ++n)
    for (index_t c = 0; c < s.c; ++c)
      for (index_t i = 0; i < s.plane(); ++i)
        v[std::size_t((n * s.c + c) * s.plane() + i)] =
            double(buf[std::size_t((n * total + first + c) * s.plane() + i)]);
  return v;
}

// Everything one BN + ReLU + conv backward needs: x and dout as channel slices of larger
// buffers, the BN parameters from x's batch statistics, and the double reference.
template <class T>
struct bn_relu_conv_case {
  conv2d_problem pb;
  index_t xpad;  // channels of the concatenation buffer before the slice (and as many after)
  std::vector<double> x, w, dout, gamma, beta, dx0;
  std::vector<T> xbuf, wf, doutbuf, mean, invstd, scale, shift;

  bn_relu_conv_case(const conv2d_problem& p, index_t pad) : pb(p), xpad(pad) {
    const shape4 xs = pb.input_shape();
    // A mean far from zero relative to the spread: the (x - mean) form must not cancel.
    x = bnff::test::random_vector(std::size_t(xs.size()), 61, 2.0, 5.0);
    w = bnff::test::random_vector(std::size_t(pb.filter_shape().size()), 62);
    dout = bnff::test::random_vector(std::size_t(pb.output_shape().size()), 63);
    gamma = bnff::test::random_vector(std::size_t(pb.c), 64, 0.5, 1.5);
    beta = bnff::test::random_vector(std::size_t(pb.c), 65, -0.5, 0.5);
    dx0 = bnff::test::random_vector(std::size_t(xs.size()), 66);
    for (auto* v : {&x, &w, &dout, &gamma, &beta, &dx0})
      for (auto& e : *v) e = double(T(e));
    xbuf.assign(std::size_t(xtotal_shape().size()), std::numeric_limits<T>::quiet_NaN());
    put(xs, x, xbuf, xtotal(), xpad);
    wf = bnff::test::cast_vector<T>(w);
    doutbuf.assign(std::size_t(pb.n * (pb.k + 1) * pb.p() * pb.q()), std::numeric_limits<T>::quiet_NaN());
    put(pb.output_shape(), dout, doutbuf, pb.k + 1, 1);
    const auto st = bnff::ref::batch_stats(xs, x);
    for (std::size_t c = 0; c < std::size_t(pb.c); ++c) {
      const double is = 1.0 / std::sqrt(st.var[c] + eps);
      mean.push_back(T(st.mean[c]));
      invstd.push_back(T(is));
      scale.push_back(T(gamma[c] * is));
      shift.push_back(T(beta[c] - st.mean[c] * gamma[c] * is));
    }
  }
  index_t xtotal() const { return pb.c + 2 * xpad; }
  shape4 xtotal_shape() const { return {pb.n, xtotal(), pb.h, pb.w}; }
  tensor_view<const T> xv() const { return tensor_view<const T>(xbuf.data(), xtotal_shape()).channels(xpad, pb.c); }
  tensor_view<const T> doutv() const {
    return tensor_view<const T>(doutbuf.data(), shape4{pb.n, pb.k + 1, pb.p(), pb.q()}).channels(1, pb.k);
  }
  tensor_view<const T> wv() const { return {wf.data(), pb.filter_shape()}; }
  vector_view<const T> vec(const std::vector<T>& v) const { return {v.data(), pb.c}; }

  struct grads {
    std::vector<double> dx, dw, dgamma, dbeta;
  };

  // The reference: relu_backward(z, conv2d_backward_data(dout)) through bn_backward; dw from a.
  grads reference(bool accumulate) const {
    const shape4 xs = pb.input_shape();
    const auto st = bnff::ref::batch_stats(xs, x);
    const auto z = bnff::ref::bn_normalize(xs, x, st.mean, st.var, gamma, beta, eps);
    const auto a = bnff::ref::relu(z);
    const auto dy = bnff::ref::relu_backward(z, bnff::ref::conv2d_backward_data(pb, dout, w));
    auto bn = bnff::ref::bn_backward(xs, x, dy, gamma, eps);
    if (accumulate)
      for (std::size_t i = 0; i < bn.dx.size(); ++i) bn.dx[i] += dx0[i];
    return {bn.dx, bnff::ref::conv2d_backward_weights(pb, a, dout), bn.dgamma, bn.dbeta};
  }

  // The fused operation; dx accumulated into (or written over) a slice of a concatenation gradient.
  grads fused(bool accumulate, bool in_place = false) const {
    const shape4 xs = pb.input_shape();
    std::vector<T> dxbuf(std::size_t(xtotal_shape().size()), T(-3));
    if (accumulate)
      put(xs, dx0, dxbuf, xtotal(), xpad);
    else
      put(xs, std::vector<double>(dx0.size(), std::numeric_limits<double>::quiet_NaN()), dxbuf, xtotal(), xpad);
    std::vector<T> dy(std::size_t(xs.size()), std::numeric_limits<T>::quiet_NaN());
    std::vector<T> dw(wf.size(), std::numeric_limits<T>::quiet_NaN()), dg(std::size_t(pb.c)), db(std::size_t(pb.c));
    std::vector<bn_backward_partial> partials(std::size_t(bnff::bn_relu_conv2d_backward_partition<T>(pb).size()));
    std::vector<T> ws(std::size_t(bnff::bn_relu_conv2d_backward_workspace_size<T>(pb)));
    const auto dxv = tensor_view<T>(dxbuf.data(), xtotal_shape()).channels(xpad, pb.c);
    const tensor_view<T> dyv(dy.data(), xs);
    bnff::with_grad_mode(accumulate, [&](auto mode) {
      bnff::bn_relu_conv2d_backward<T>(pb, xv(), vec(mean), vec(invstd), vec(scale), vec(shift), wv(), doutv(),
                                       tensor_view<T>(dw.data(), pb.filter_shape()), dyv,
                                       vector_view<bn_backward_partial>(partials.data(), index_t(partials.size())),
                                       vector_view<T>(dg.data(), pb.c), vector_view<T>(db.data(), pb.c),
                                       in_place ? dyv : dxv, mode, vector_view<T>(ws.data(), index_t(ws.size())));
    });
    // The concatenation's other channels are untouched.
    for (index_t n = 0; n < pb.n; ++n)
      for (index_t c = 0; c < xtotal(); ++c)
        if (c < xpad || c >= xpad + pb.c)
          for (index_t i = 0; i < xs.plane(); ++i)
            REQUIRE(dxbuf[std::size_t((n * xtotal() + c) * xs.plane() + i)] == T(-3));
    return {in_place ? std::vector<double>(dy.begin(), dy.end()) : get(xs, dxbuf, xtotal(), xpad),
            std::vector<double>(dw.begin(), dw.end()), std::vector<double>(dg.begin(), dg.end()),
            std::vector<double>(db.begin(), db.end())};
  }

  // The unfused passes, from the stored activation a (computed in T as the unfused forward would).
  grads unfused(bool accumulate) const {
    const shape4 xs = pb.input_shape();
    std::vector<T> xp(std::size_t(xs.size())), a(std::size_t(xs.size()));
    put(xs, x, xp, pb.c, 0);
    for (index_t n = 0; n < pb.n; ++n)
      for (index_t c = 0; c < pb.c; ++c)
        for (index_t i = 0; i < xs.plane(); ++i) {
          const auto j = std::size_t((n * pb.c + c) * xs.plane() + i);
          // Rounded as the library's batch fma rounds a lane (once with FMA, twice without).
          const T v = bnff::simd::fma_lane<xsimd::default_arch>(xp[j], scale[std::size_t(c)], shift[std::size_t(c)]);
          a[j] = v > T(0) ? v : T(0);
        }
    std::vector<T> dx(std::size_t(xs.size())), da(dx.size()), dw(wf.size()), dg(std::size_t(pb.c)),
        db(std::size_t(pb.c));
    if (accumulate) put(xs, dx0, dx, pb.c, 0);
    std::vector<T> ws(std::size_t(bnff::bn_relu_conv2d_backward_workspace_size<T>(pb)));
    bnff::with_grad_mode(accumulate, [&](auto mode) {
      bnff::unfused::bn_relu_conv2d_backward<T>(
          pb, tensor_view<const T>(xp.data(), xs), tensor_view<const T>(a.data(), xs), vec(mean), vec(invstd),
          vec(scale), wv(), doutv(), tensor_view<T>(dw.data(), pb.filter_shape()), tensor_view<T>(da.data(), xs),
          vector_view<T>(dg.data(), pb.c), vector_view<T>(db.data(), pb.c), tensor_view<T>(dx.data(), xs), mode,
          vector_view<T>(ws.data(), index_t(ws.size())));
    });
    return {std::vector<double>(dx.begin(), dx.end()), std::vector<double>(dw.begin(), dw.end()),
            std::vector<double>(dg.begin(), dg.end()), std::vector<double>(db.begin(), db.end())};
  }
};

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double e : v) m = std::max(m, std::abs(e));
  return m;
}

// |got - want| <= rel * max |want| element-wise: the gradients are sums of many terms of
// both signs, so the error scales with the largest magnitudes involved, not each element.
void require_close(const std::vector<double>& got, const std::vector<double>& want, double rel, const char* what) {
  REQUIRE(got.size() == want.size());
  const double tol = rel * max_abs(want) + 1e-300;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (!(std::abs(got[i] - want[i]) <= tol))
      FAIL(what << "[" << i << "] = " << got[i] << ", want " << want[i] << ", tol " << tol);
}

template <class T>
void require_grads_close(const typename bn_relu_conv_case<T>::grads& got,
                         const typename bn_relu_conv_case<T>::grads& want, double rel) {
  require_close(got.dx, want.dx, rel, "dx");
  require_close(got.dw, want.dw, rel, "dw");
  require_close(got.dgamma, want.dgamma, rel, "dgamma");
  require_close(got.dbeta, want.dbeta, rel, "dbeta");
}

std::vector<conv2d_problem> problems() {
  return {
      {2, 5, 7, 9, 6, 1, 1, 0, 1},     // 1x1 (a composite layer's conv1)
      {2, 6, 7, 5, 3, 3, 3, 1, 1},     // 3x3 same (conv2)
      {3, 4, 9, 7, 5, 3, 3, 1, 2},     // 3x3 stride 2 (col2im path)
      {2, 3, 8, 9, 4, 1, 1, 0, 2},     // 1x1 stride 2
      {1, 17, 13, 11, 9, 3, 3, 0, 1},  // 3x3 valid, odd sizes
      {2, 6, 19, 17, 5, 3, 3, 1, 1},   // 3x3 on 323 positions: the Winograd weight gradient
  };
}

}  // namespace

TEST_CASE("fused BN-ReLU-conv backward matches the double reference", "[fused][backward]") {
  for (const auto& pb : problems()) {
    INFO("problem c" << pb.c << " h" << pb.h << " w" << pb.w << " k" << pb.k << " r" << pb.r << " stride" << pb.stride);
    for (const bool acc : {false, true}) {
      INFO("accumulate " << acc);
      // double: the same math in another order; 1e-10 of the largest magnitude.
      const bn_relu_conv_case<double> d(pb, 2);
      require_grads_close<double>(d.fused(acc), d.reference(acc), 1e-10);
      // float: sums of up to a few thousand terms in float blocks, merged in double; with
      // unit-size data the error stays below 1e-5 of the largest magnitude, 1e-4 is the margin.
      const bn_relu_conv_case<float> f(pb, 1);
      require_grads_close<float>(f.fused(acc), f.reference(acc), 1e-4);
    }
    // dx written over the dy scratch (in place).
    const bn_relu_conv_case<float> f(pb, 0);
    require_grads_close<float>(f.fused(false, true), f.reference(false), 1e-4);
  }
}

TEST_CASE("fused and unfused BN-ReLU-conv backward agree in float", "[fused][backward][unfused]") {
  for (const auto& pb : problems()) {
    for (const bool acc : {false, true}) {
      const bn_relu_conv_case<float> f(pb, 1);
      // Both are float computations of the same sums in different orders: 1e-4 of the largest magnitude.
      require_grads_close<float>(f.fused(acc), f.unfused(acc), 1e-4);
      require_grads_close<float>(f.unfused(acc), f.reference(acc), 1e-4);
    }
  }
}

TEST_CASE("fused and unfused BN-ReLU-conv backward give the same bits from the same activation",
          "[fused][backward][unfused]") {
  // The unfused reductions run in the fused epilogue's blocks and order, its dx and weight
  // gradient are the same sweeps: with a = max(0, x * scale + shift) stored by the unfused
  // forward, every gradient is bitwise the fused one (what keeps the trainer's engines together).
  for (const conv2d_problem& pb : problems())
    for (bool acc : {false, true}) {
      CAPTURE(pb.n, pb.c, pb.h, pb.w, pb.k, pb.r, pb.stride, acc);
      const bn_relu_conv_case<float> f(pb, 23);
      const auto a = f.fused(acc), b = f.unfused(acc);
      CHECK(a.dx == b.dx);
      CHECK(a.dw == b.dw);
      CHECK(a.dgamma == b.dgamma);
      CHECK(a.dbeta == b.dbeta);
    }
}

TEST_CASE("fused BN-ReLU-conv backward agrees with finite differences in double", "[fused][backward][fd]") {
  // loss = sum(conv(relu(BN_train(x)), w) * g), BN with the batch statistics of x (they move
  // with x). Central differences with h = 1e-6 have truncation error ~h^2 * third derivative
  // and rounding ~1e-16 / h; 1e-6 relative (plus a 1e-8 margin near zero) covers both, and
  // fails on any missing term (the mean and variance paths are each larger than that).
  for (const conv2d_problem& pb : {conv2d_problem{2, 3, 5, 6, 4, 3, 3, 1, 1}, conv2d_problem{2, 4, 5, 5, 3, 1, 1, 0, 2},
                                   conv2d_problem{1, 3, 7, 6, 2, 3, 3, 1, 2}, conv2d_problem{1, 1, 17, 16, 1, 3, 3, 1, 1}}) {
    bn_relu_conv_case<double> d(pb, 1);
    const shape4 xs = pb.input_shape();
    auto loss = [&](const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& gamma,
                    const std::vector<double>& beta) {
      const auto st = bnff::ref::batch_stats(xs, x);
      const auto a = bnff::ref::relu(bnff::ref::bn_normalize(xs, x, st.mean, st.var, gamma, beta, eps));
      const auto y = bnff::ref::conv2d_forward(pb, a, w);
      double l = 0;
      for (std::size_t i = 0; i < y.size(); ++i) l += y[i] * d.dout[i];
      return l;
    };
    const auto g = d.fused(false);
    const double h = 1e-6;
    auto fd = [&](std::vector<double>& v, std::size_t i) {
      const double v0 = v[i];
      v[i] = v0 + h;
      const double lp = loss(d.x, d.w, d.gamma, d.beta);
      v[i] = v0 - h;
      const double lm = loss(d.x, d.w, d.gamma, d.beta);
      v[i] = v0;
      return (lp - lm) / (2 * h);
    };
    for (std::size_t i = 0; i < d.x.size(); i += 5) REQUIRE(fd(d.x, i) == Approx(g.dx[i]).epsilon(1e-6).margin(1e-8));
    for (std::size_t i = 0; i < d.w.size(); i += 3) REQUIRE(fd(d.w, i) == Approx(g.dw[i]).epsilon(1e-6).margin(1e-8));
    for (std::size_t c = 0; c < d.gamma.size(); ++c) {
      REQUIRE(fd(d.gamma, c) == Approx(g.dgamma[c]).epsilon(1e-6).margin(1e-8));
      REQUIRE(fd(d.beta, c) == Approx(g.dbeta[c]).epsilon(1e-6).margin(1e-8));
    }
  }
}

TEST_CASE("fused BN-ReLU-conv backward does not depend on the thread count", "[fused][backward][threads]") {
  for (const conv2d_problem& pb :
       {conv2d_problem{3, 40, 12, 11, 24, 3, 3, 1, 1}, conv2d_problem{4, 6, 11, 9, 5, 3, 3, 1, 2},
        conv2d_problem{2, 70, 9, 9, 40, 1, 1, 0, 1}, conv2d_problem{5, 7, 19, 17, 9, 3, 3, 1, 1}}) {
    const bn_relu_conv_case<float> f(pb, 1);
    auto run = [&](int threads) {
      bnff::set_num_threads(threads);
      const auto g = f.fused(true);
      std::vector<double> all = g.dx;
      for (const auto* v : {&g.dw, &g.dgamma, &g.dbeta}) all.insert(all.end(), v->begin(), v->end());
      return all;
    };
    const auto one = run(1), two = run(2);
    REQUIRE(std::memcmp(one.data(), two.data(), one.size() * sizeof(double)) == 0);
  }
  bnff::set_num_threads(2);
}

TEST_CASE("fused BN-ReLU-conv backward rejects bad arguments before writing", "[fused][backward][errors]") {
  const conv2d_problem pb{2, 3, 6, 6, 4, 3, 3, 1, 1};
  const bn_relu_conv_case<float> f(pb, 0);
  const shape4 xs = pb.input_shape();
  std::vector<float> dy(std::size_t(xs.size()), 5.0f), dx(dy.size(), 5.0f), dw(f.wf.size(), 5.0f), dg(3, 5.0f),
      db(3, 5.0f);
  std::vector<bn_backward_partial> partials(std::size_t(bnff::bn_relu_conv2d_backward_partition<float>(pb).size()),
                                            bn_backward_partial{5.0, 5.0});
  std::vector<float> ws(std::size_t(bnff::bn_relu_conv2d_backward_workspace_size<float>(pb)));
  auto call = [&](vector_view<const float> scale, tensor_view<float> dxv, std::size_t npartials, bool acc,
                  tensor_view<const float> x) {
    bnff::with_grad_mode(acc, [&](auto mode) {
      bnff::bn_relu_conv2d_backward<float>(
          pb, x, f.vec(f.mean), f.vec(f.invstd), scale, f.vec(f.shift), f.wv(), f.doutv(),
          tensor_view<float>(dw.data(), pb.filter_shape()), tensor_view<float>(dy.data(), xs),
          vector_view<bn_backward_partial>(partials.data(), index_t(npartials)), vector_view<float>(dg.data(), 3),
          vector_view<float>(db.data(), 3), dxv, mode, vector_view<float>(ws.data(), index_t(ws.size())));
    });
  };
  const tensor_view<float> dxv(dx.data(), xs);
  REQUIRE_THROWS_WITH(call(vector_view<const float>(f.scale.data(), 2), dxv, partials.size(), false, f.xv()),
                      Catch::Contains("bn_relu_conv2d_backward") && Catch::Contains("'scale'"));
  REQUIRE_THROWS_WITH(call(f.vec(f.scale), dxv, 1, false, f.xv()), Catch::Contains("'partials'"));
  // Accumulating into the dy scratch itself is not allowed (dy is read while dx is written).
  REQUIRE_THROWS_WITH(call(f.vec(f.scale), tensor_view<float>(dy.data(), xs), partials.size(), true, f.xv()),
                      Catch::Contains("'dx'"));
  REQUIRE_THROWS_WITH(call(f.vec(f.scale), dxv, partials.size(), false, tensor_view<const float>(dx.data(), xs)),
                      Catch::Contains("'dx'"));
  for (float v : dy) REQUIRE(v == 5.0f);
  for (float v : dx) REQUIRE(v == 5.0f);
  for (float v : dw) REQUIRE(v == 5.0f);
  for (float v : dg) REQUIRE(v == 5.0f);
  for (float v : db) REQUIRE(v == 5.0f);
  for (const auto& p : partials) REQUIRE((p.sum_dy == 5.0 && p.sum_dy_xc == 5.0));
  // The standalone dx sweep: wrong vector size.
  REQUIRE_THROWS_WITH(
      bnff::bn_backward_dx<float>(f.xv(), tensor_view<const float>(dy.data(), xs), f.vec(f.mean), f.vec(f.invstd),
                                  f.vec(f.scale), vector_view<const float>(dg.data(), 2),
                                  vector_view<const float>(db.data(), 3), dxv),
      Catch::Contains("bn_backward_dx") && Catch::Contains("'dgamma'"));
  for (float v : dx) REQUIRE(v == 5.0f);
}

TEST_CASE("fused BN-ReLU-conv backward step by step equals the whole operation", "[fused][backward]") {
  // The public steps (epilogue data gradient, finalize, dx sweep, prologue weight gradient)
  // compose to exactly what bn_relu_conv2d_backward computes.
  for (const conv2d_problem& pb :
       {conv2d_problem{2, 6, 7, 5, 3, 3, 3, 1, 1}, conv2d_problem{3, 4, 9, 7, 5, 3, 3, 1, 2}}) {
    const bn_relu_conv_case<float> f(pb, 1);
    const auto whole = f.fused(true);
    const shape4 xs = pb.input_shape();
    std::vector<float> dy(std::size_t(xs.size())), dx(dy.size()), dw(f.wf.size()), dg(std::size_t(pb.c)),
        db(std::size_t(pb.c));
    for (index_t n = 0; n < pb.n; ++n)
      for (index_t c = 0; c < pb.c; ++c)
        for (index_t i = 0; i < xs.plane(); ++i)
          dx[std::size_t((n * pb.c + c) * xs.plane() + i)] = float(f.dx0[std::size_t((n * pb.c + c) * xs.plane() + i)]);
    const auto part = bnff::bn_relu_conv2d_backward_partition<float>(pb);
    std::vector<bn_backward_partial> partials(std::size_t(part.size()));
    std::vector<float> ws(std::size_t(bnff::bn_relu_conv2d_backward_workspace_size<float>(pb)));
    const vector_view<float> wsv(ws.data(), index_t(ws.size()));
    bnff::conv2d_backward_data_bn_relu<float>(pb, f.doutv(), f.wv(), f.xv(), f.vec(f.scale), f.vec(f.shift),
                                              f.vec(f.mean), tensor_view<float>(dy.data(), xs),
                                              {partials.data(), index_t(partials.size())}, wsv);
    bnff::bn_backward_finalize<float>(part, {partials.data(), index_t(partials.size())}, f.vec(f.invstd),
                                      {dg.data(), pb.c}, {db.data(), pb.c});
    bnff::bn_backward_dx<float>(f.xv(), tensor_view<const float>(dy.data(), xs), f.vec(f.mean), f.vec(f.invstd),
                                f.vec(f.scale), {dg.data(), pb.c}, {db.data(), pb.c}, tensor_view<float>(dx.data(), xs),
                                bnff::grad_accumulate{});
    bnff::bn_relu_conv2d_backward_weights<float>(pb, f.xv(), f.vec(f.scale), f.vec(f.shift), f.doutv(),
                                                 tensor_view<float>(dw.data(), pb.filter_shape()), {}, wsv);
    REQUIRE(whole.dx == std::vector<double>(dx.begin(), dx.end()));
    REQUIRE(whole.dw == std::vector<double>(dw.begin(), dw.end()));
    REQUIRE(whole.dgamma == std::vector<double>(dg.begin(), dg.end()));
    REQUIRE(whole.dbeta == std::vector<double>(db.begin(), db.end()));
  }
}
