// The fused convolution forward operations against the composition of the naive
// double reference steps, and against the unfused float path.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "bnff/ops/bn_relu_conv2d_forward_stats.hpp"
#include "bnff/ops/conv2d_forward.hpp"
#include "bnff/ops/conv2d_forward_stats.hpp"
#include "bnff/ops/unfused/conv_bn_relu_unfused.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"

namespace {

using bnff::conv2d_problem;
using bnff::index_t;
using bnff::moments;
using bnff::shape4;
using bnff::tensor_view;
using bnff::vector_view;

enum class op { conv, conv_bias, conv_stats, bn_relu_conv_stats };

// One fused-forward check: builds inputs (optionally as channel slices of larger
// buffers), runs the operation into a NaN-filled output, and compares with the
// double reference, the statistics contract and the unfused path.
template <class T>
struct conv_tester {
  conv2d_problem pb;
  op kind = op::conv;
  index_t x_pad_c = 0, y_pad_c = 0;  // extra channels around the slice (0: packed tensors)

  conv_tester& problem(const conv2d_problem& p) { return pb = p, *this; }
  conv_tester& operation(op o) { return kind = o, *this; }
  conv_tester& sliced(index_t xc, index_t yc) { return x_pad_c = xc, y_pad_c = yc, *this; }

  struct result {
    std::vector<T> ybuf;
    std::vector<moments> partials;
  };

  // Inputs, fixed by the problem and seeds.
  std::vector<double> x, w, bias, gamma, beta;
  std::vector<T> xbuf, wf, bf, scale, shift;

  shape4 xbuf_shape() const { return {pb.n, pb.c + 2 * x_pad_c, pb.h, pb.w}; }
  shape4 ybuf_shape() const { return {pb.n, pb.k + 2 * y_pad_c, pb.p(), pb.q()}; }

  void make_inputs() {
    const shape4 xs = pb.input_shape();
    x = bnff::test::random_vector(std::size_t(xs.size()), 11, -1.0, 2.0);
    w = bnff::test::random_vector(std::size_t(pb.filter_shape().size()), 12);
    bias = bnff::test::random_vector(std::size_t(pb.k), 13);
    gamma = bnff::test::random_vector(std::size_t(pb.c), 14, 0.5, 1.5);
    beta = bnff::test::random_vector(std::size_t(pb.c), 15, -0.5, 0.5);
    // x stored in the middle channels of a larger buffer (its other channels NaN: never read).
    xbuf.assign(std::size_t(xbuf_shape().size()), std::numeric_limits<T>::quiet_NaN());
    for (index_t n = 0; n < pb.n; ++n)
      for (index_t c = 0; c < pb.c; ++c)
        for (index_t i = 0; i < xs.plane(); ++i)
          xbuf[std::size_t(((n * (pb.c + 2 * x_pad_c)) + c + x_pad_c) * xs.plane() + i)] =
              T(x[std::size_t((n * pb.c + c) * xs.plane() + i)]);
    // The reference sees exactly the values the kernel sees.
    for (index_t n = 0; n < pb.n; ++n)
      for (index_t c = 0; c < pb.c; ++c)
        for (index_t i = 0; i < xs.plane(); ++i)
          x[std::size_t((n * pb.c + c) * xs.plane() + i)] =
              double(xbuf[std::size_t(((n * (pb.c + 2 * x_pad_c)) + c + x_pad_c) * xs.plane() + i)]);
    wf = bnff::test::cast_vector<T>(w);
    w = std::vector<double>(wf.begin(), wf.end());
    bf = bnff::test::cast_vector<T>(bias);
    bias = std::vector<double>(bf.begin(), bf.end());
    // BN of x with its batch statistics: scale = gamma * invstd, shift = beta - mean * scale.
    const auto st = bnff::ref::batch_stats(xs, x);
    scale.resize(std::size_t(pb.c));
    shift.resize(std::size_t(pb.c));
    for (std::size_t c = 0; c < std::size_t(pb.c); ++c) {
      const double invstd = 1.0 / std::sqrt(st.var[c] + 1e-5);
      scale[c] = T(gamma[c] * invstd);
      shift[c] = T(beta[c] - st.mean[c] * gamma[c] * invstd);
    }
  }

  tensor_view<const T> xview() const { return tensor_view<const T>(xbuf.data(), xbuf_shape()).channels(x_pad_c, pb.c); }

  result run_fused() const {
    result r;
    r.ybuf.assign(std::size_t(ybuf_shape().size()), std::numeric_limits<T>::quiet_NaN());
    const auto y = tensor_view<T>(r.ybuf.data(), ybuf_shape()).channels(y_pad_c, pb.k);
    const tensor_view<const T> wv(wf.data(), pb.filter_shape());
    const auto part = bnff::conv2d_stats_partition<T>(pb);
    r.partials.assign(std::size_t(part.size()), moments{-1, -1, -1});
    vector_view<moments> pv(r.partials.data(), index_t(r.partials.size()));
    switch (kind) {
      case op::conv:
        bnff::conv2d_forward<T>(pb, xview(), wv, {}, y);
        break;
      case op::conv_bias:
        bnff::conv2d_forward<T>(pb, xview(), wv, vector_view<const T>(bf.data(), pb.k), y);
        break;
      case op::conv_stats:
        bnff::conv2d_forward_stats<T>(pb, xview(), wv, y, pv);
        break;
      case op::bn_relu_conv_stats:
        bnff::bn_relu_conv2d_forward_stats<T>(pb, xview(), vector_view<const T>(scale.data(), pb.c),
                                              vector_view<const T>(shift.data(), pb.c), wv, y, pv);
        break;
    }
    return r;
  }

  // The input the convolution sees, in double: x, or relu(bn_normalize(x)); and a bound on
  // its elements' magnitude before rounding (for the error bound).
  std::vector<double> conv_input(std::vector<double>& mag) const {
    const shape4 xs = pb.input_shape();
    mag.resize(x.size());
    if (kind != op::bn_relu_conv_stats) {
      for (std::size_t i = 0; i < x.size(); ++i) mag[i] = std::abs(x[i]);
      return x;
    }
    // bn_normalize with mean/var chosen so that it computes x * scale + shift exactly as given:
    // mean = -shift / scale, invstd * gamma = scale with gamma = scale, var = 1 - eps.
    std::vector<double> mean(std::size_t(pb.c)), var(std::size_t(pb.c), 1.0 - 1e-5), g(std::size_t(pb.c)),
        b(std::size_t(pb.c), 0.0);
    for (std::size_t c = 0; c < std::size_t(pb.c); ++c) {
      g[c] = double(scale[c]);
      mean[c] = -double(shift[c]) / double(scale[c]);
    }
    const auto a = bnff::ref::relu(bnff::ref::bn_normalize(xs, x, mean, var, g, b, 1e-5));
    for (index_t n = 0; n < pb.n; ++n)
      for (index_t c = 0; c < pb.c; ++c)
        for (index_t i = 0; i < xs.plane(); ++i) {
          const auto j = std::size_t((n * pb.c + c) * xs.plane() + i);
          mag[j] = std::abs(x[j] * double(scale[std::size_t(c)])) + std::abs(double(shift[std::size_t(c)]));
        }
    return a;
  }

  // The rounding error bound of each output, without the bias term: scaled by u, it bounds
  // |y - y_exact| (doubled for margin where it is used).
  //  - direct engine: a k-term float dot product (k = C*R*S) plus one rounding of the
  //    prologue: (k + 2) * sum |a||w|;
  //  - Winograd F(4x4, 3x3) (conv/winograd.hpp): M_xi = sum_c U_xi V_xi in float (C
  //    roundings), U rounded once from double, V from two passes of the 1-d transform (at
  //    most three roundings each), the output transform two passes of at most four, the
  //    prologue one: at most (C + 16) * S to first order, where S bounds every term the
  //    computation adds up: S = sum_c sum_ab |A_ia||A_jb| Ug_ab Vd_ab, with
  //    Ug_ab = sum_rs |G_ar||G_bs||g_rs| >= |U_ab| and Vd_ab = sum_pq |B_ap||B_bq||a_pq| >= |V_ab|.
  std::vector<double> error_bound(const std::vector<double>& mag) const {
    std::vector<double> wabs(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) wabs[i] = std::abs(w[i]);
    auto bound = bnff::ref::conv2d_forward(pb, mag, wabs);
    const double kdim = double(pb.c * pb.r * pb.s);
    for (double& b : bound) b *= kdim + 2;
    if (!bnff::conv2d_plan<T>(pb).winograd) return bound;
    static constexpr double BT[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                        {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
    static constexpr double G[6][3] = {{1.0 / 4, 0, 0},     {-1.0 / 6, -1.0 / 6, -1.0 / 6}, {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                       {1.0 / 24, 1.0 / 12, 1.0 / 6}, {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}};
    static constexpr double AT[4][6] = {
        {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
    const index_t P = pb.p(), Q = pb.q(), TH = (P + 3) / 4, TW = (Q + 3) / 4;
    std::vector<double> ug(std::size_t(pb.k * pb.c * 36), 0.0), vd(std::size_t(pb.n * pb.c * TH * TW * 36), 0.0);
    for (index_t k = 0; k < pb.k; ++k)
      for (index_t c = 0; c < pb.c; ++c)
        for (int ab = 0; ab < 36; ++ab)
          for (int r = 0; r < 3; ++r)
            for (int s2 = 0; s2 < 3; ++s2)
              ug[std::size_t((k * pb.c + c) * 36 + ab)] += std::abs(G[ab / 6][r] * G[ab % 6][s2]) *
                                                           wabs[std::size_t(((k * pb.c + c) * 3 + r) * 3 + s2)];
    for (index_t n = 0; n < pb.n; ++n)
      for (index_t c = 0; c < pb.c; ++c)
        for (index_t t = 0; t < TH * TW; ++t)
          for (int pr = 0; pr < 6; ++pr)
            for (int qc = 0; qc < 6; ++qc) {
              const index_t ih = t / TW * 4 - pb.pad + pr, iw = t % TW * 4 - pb.pad + qc;
              if (ih < 0 || ih >= pb.h || iw < 0 || iw >= pb.w) continue;
              const double d = mag[std::size_t(((n * pb.c + c) * pb.h + ih) * pb.w + iw)];
              for (int ab = 0; ab < 36; ++ab)
                vd[std::size_t(((n * pb.c + c) * TH * TW + t) * 36 + ab)] += std::abs(BT[ab / 6][pr] * BT[ab % 6][qc]) * d;
            }
    for (index_t n = 0; n < pb.n; ++n)
      for (index_t k = 0; k < pb.k; ++k)
        for (index_t p = 0; p < P; ++p)
          for (index_t q = 0; q < Q; ++q) {
            const index_t t = p / 4 * TW + q / 4;
            double sum = 0;
            for (index_t c = 0; c < pb.c; ++c) {
              const double* g = &ug[std::size_t((k * pb.c + c) * 36)];
              const double* d = &vd[std::size_t(((n * pb.c + c) * TH * TW + t) * 36)];
              for (int ab = 0; ab < 36; ++ab) sum += std::abs(AT[p % 4][ab / 6] * AT[q % 4][ab % 6]) * g[ab] * d[ab];
            }
            const auto j = std::size_t(((n * pb.k + k) * P + p) * Q + q);
            bound[j] = std::max(bound[j], (double(pb.c) + 16) * sum);
          }
    return bound;
  }

  void run() {
    make_inputs();
    const result r = run_fused();
    const shape4 ys = pb.output_shape(), yb = ybuf_shape();
    std::vector<double> mag;
    const auto a = conv_input(mag);
    const auto ref = bnff::ref::conv2d_forward(pb, a, w, kind == op::conv_bias ? &bias : nullptr);
    const auto bound = error_bound(mag);
    // u * bound plus one rounding of the bias, doubled for margin.
    const double u = std::numeric_limits<T>::epsilon() / 2;
    std::vector<double> y(std::size_t(ys.size()));
    for (index_t n = 0; n < pb.n; ++n)
      for (index_t k = 0; k < yb.c; ++k)
        for (index_t i = 0; i < ys.plane(); ++i) {
          const double got = double(r.ybuf[std::size_t((n * yb.c + k) * ys.plane() + i)]);
          const index_t kk = k - y_pad_c;
          if (kk < 0 || kk >= pb.k) {
            REQUIRE(std::isnan(got));  // channels outside the output slice untouched
            continue;
          }
          const auto j = std::size_t((n * pb.k + kk) * ys.plane() + i);
          y[j] = got;
          const double tol =
              2 * (u * bound[j] + u * std::abs(kind == op::conv_bias ? bias[std::size_t(kk)] : 0.0)) +
              1e-300;
          if (!(std::abs(got - ref[j]) <= tol)) {
            FAIL("y(" << n << ", " << kk << ", " << i << ") = " << got << ", reference " << ref[j] << ", tol " << tol);
          }
        }
    if (kind == op::conv_stats || kind == op::bn_relu_conv_stats) check_stats(r, y, ref, bound);
  }

  void check_stats(const result& r, const std::vector<double>& y, const std::vector<double>& ref,
                   const std::vector<double>& bound) const {
    const shape4 ys = pb.output_shape(), yb = ybuf_shape();
    const auto part = bnff::conv2d_stats_partition<T>(pb);
    // Bitwise: block_moments over the finished output with the same partition.
    const auto yv = tensor_view<const T>(r.ybuf.data(), yb).channels(y_pad_c, pb.k);
    for (index_t k = 0; k < pb.k; ++k)
      for (index_t n = 0; n < pb.n; ++n)
        for (index_t b = 0; b < part.blocks_per_plane(); ++b) {
          const moments m =
              bnff::block_moments(yv.plane_ptr(n, k) + part.block_begin(b), part.block_end(b) - part.block_begin(b));
          const moments& e = r.partials[std::size_t(part.slot(k, n, b))];
          REQUIRE(std::memcmp(&m, &e, sizeof(moments)) == 0);
        }
    // Merged, against the reference statistics of the reference output: the output itself is
    // off by at most tol_max per element, so the mean by tol_max and the variance by about
    // 2 * std * tol_max (plus rounding of the double merge, far smaller).
    const auto st = bnff::ref::batch_stats(ys, ref);
    const double u = std::numeric_limits<T>::epsilon() / 2;
    double bmax = 0;
    for (double v : bound) bmax = std::max(bmax, v);
    const double tol = 2 * u * bmax + 1e-12;
    for (index_t k = 0; k < pb.k; ++k) {
      const moments m = bnff::merge_channel(part, r.partials.data(), k);
      REQUIRE(m.count == double(pb.n * ys.plane()));
      REQUIRE(std::abs(m.mean - st.mean[std::size_t(k)]) <= tol);
      REQUIRE(std::abs(m.variance() - st.var[std::size_t(k)]) <=
              2 * std::sqrt(st.var[std::size_t(k)]) * tol + tol * tol + 1e-12);
    }
    (void)y;
  }
};

std::vector<conv2d_problem> sweep() {
  std::vector<conv2d_problem> out;
  // n, c, h, w, k, r, s, pad, stride
  for (index_t c : {1, 3, 15, 16, 17, 33}) out.push_back({1, c, 5, 7, 17, 1, 1, 0, 1});
  for (index_t k : {1, 3, 16, 33}) out.push_back({3, 16, 7, 5, k, 1, 1, 0, 1});
  out.push_back({3, 15, 7, 9, 16, 3, 3, 1, 1});
  out.push_back({1, 3, 9, 7, 17, 3, 3, 1, 2});
  out.push_back({3, 17, 6, 5, 3, 3, 3, 0, 1});
  out.push_back({1, 33, 5, 5, 8, 3, 3, 1, 1});    // C*R*S = 297 > kc: two depth blocks
  out.push_back({1, 3, 11, 13, 16, 7, 7, 3, 2});  // the stem: 7x7 stride 2 pad 3
  out.push_back({3, 16, 7, 9, 15, 1, 1, 0, 2});   // strided 1x1: the im2col path
  out.push_back({1, 1, 27, 25, 3, 3, 3, 1, 1});   // P*Q = 675: several column tiles
  out.push_back({1, 4, 40, 41, 9, 1, 1, 0, 1});   // pointwise with several column tiles
  out.push_back({7, 5, 10, 10, 9, 1, 1, 0, 1});   // pointwise, small planes: image groups of 4 and 3
  out.push_back({7, 6, 9, 9, 10, 3, 3, 1, 1});    // 3x3, small planes: im2col in groups of 4 and 3
  // Stride 1 with Q == W packs each B row as one shifted run: the second tile starts
  // inside a row (column 2, or 27 of 29) so edge-padding runs cross its first column.
  out.push_back({1, 2, 20, 26, 5, 5, 5, 2, 1});
  out.push_back({1, 2, 18, 29, 5, 7, 7, 3, 1});
  return out;
}

}  // namespace

TEST_CASE("conv2d_forward matches the double reference", "[conv]") {
  for (const auto& pb : sweep()) {
    INFO("problem n" << pb.n << " c" << pb.c << " h" << pb.h << " w" << pb.w << " k" << pb.k << " r" << pb.r << " pad"
                     << pb.pad << " stride" << pb.stride);
    conv_tester<float>().problem(pb).operation(op::conv).run();
    conv_tester<float>().problem(pb).operation(op::conv_bias).sliced(2, 1).run();
  }
}

TEST_CASE("conv2d_forward_stats: output and epilogue statistics", "[conv]") {
  for (const auto& pb : sweep()) {
    INFO("problem n" << pb.n << " c" << pb.c << " h" << pb.h << " w" << pb.w << " k" << pb.k << " r" << pb.r << " pad"
                     << pb.pad << " stride" << pb.stride);
    conv_tester<float>().problem(pb).operation(op::conv_stats).sliced(0, 3).run();
  }
}

TEST_CASE("bn_relu_conv2d_forward_stats: prologue, output and statistics", "[conv]") {
  for (const auto& pb : sweep()) {
    INFO("problem n" << pb.n << " c" << pb.c << " h" << pb.h << " w" << pb.w << " k" << pb.k << " r" << pb.r << " pad"
                     << pb.pad << " stride" << pb.stride);
    conv_tester<float>().problem(pb).operation(op::bn_relu_conv_stats).run();
    conv_tester<float>().problem(pb).operation(op::bn_relu_conv_stats).sliced(1, 2).run();
  }
}

TEST_CASE("conv forward in double", "[conv]") {
  conv_tester<double>().problem({3, 17, 7, 5, 9, 3, 3, 1, 1}).operation(op::bn_relu_conv_stats).sliced(1, 1).run();
  conv_tester<double>().problem({1, 5, 9, 9, 17, 1, 1, 0, 1}).operation(op::conv_bias).run();
}

TEST_CASE("fused forward equals the unfused passes and is thread-count independent", "[conv]") {
  for (const conv2d_problem& pb : {conv2d_problem{3, 17, 30, 29, 16, 1, 1, 0, 1},
                                   conv2d_problem{2, 9, 23, 24, 7, 3, 3, 1, 1},
                                   conv2d_problem{5, 19, 61, 47, 10, 3, 3, 1, 1},  // Winograd: 3 tasks of 2, 2, 1 images
                                   conv2d_problem{9, 9, 9, 9, 16, 1, 1, 0, 1}}) {
    conv_tester<float> t;
    t.problem(pb).operation(op::bn_relu_conv_stats);
    t.make_inputs();
    bnff::set_num_threads(1);
    const auto r1 = t.run_fused();
    bnff::set_num_threads(2);
    const auto r2 = t.run_fused();
    REQUIRE(r1.ybuf.size() == r2.ybuf.size());
    REQUIRE(std::memcmp(r1.ybuf.data(), r2.ybuf.data(), r1.ybuf.size() * sizeof(float)) == 0);
    REQUIRE(std::memcmp(r1.partials.data(), r2.partials.data(), r1.partials.size() * sizeof(moments)) == 0);

    // Unfused: apply pass, ReLU pass, conv, statistics pass. The prologue and the apply pass
    // compute the same fma and max, and the engine is the same, so the results are identical.
    const shape4 xs = pb.input_shape(), ys = pb.output_shape();
    std::vector<float> z(std::size_t(xs.size())), y(std::size_t(ys.size()), std::nanf(""));
    const auto part = bnff::conv2d_stats_partition<float>(pb);
    std::vector<moments> partials(std::size_t(part.size()));
    std::vector<float> ws(std::size_t(bnff::conv2d_forward_workspace_size<float>(pb)));
    bnff::unfused::bn_relu_conv2d_forward_stats<float>(
        pb, t.xview(), vector_view<const float>(t.scale.data(), pb.c), vector_view<const float>(t.shift.data(), pb.c),
        tensor_view<const float>(t.wf.data(), pb.filter_shape()), tensor_view<float>(y.data(), ys),
        vector_view<moments>(partials.data(), index_t(partials.size())), tensor_view<float>(z.data(), xs),
        vector_view<float>(ws.data(), index_t(ws.size())));
    REQUIRE(std::memcmp(y.data(), r1.ybuf.data(), y.size() * sizeof(float)) == 0);
    REQUIRE(std::memcmp(partials.data(), r1.partials.data(), partials.size() * sizeof(moments)) == 0);
  }
}

// The epilogue's statistics equal the standalone stats kernel's bit for bit on any Arch, not
// only the default one (both must run block_moments with the engine's Arch).
template <class Arch>
void check_epilogue_stats_equal_standalone(const conv2d_problem& pb) {
  const shape4 xs = pb.input_shape(), ys = pb.output_shape();
  const auto x = bnff::test::cast_vector<float>(bnff::test::random_vector(std::size_t(xs.size()), 91, -2.0, 3.0));
  const auto w = bnff::test::cast_vector<float>(bnff::test::random_vector(std::size_t(pb.filter_shape().size()), 92));
  const auto part = bnff::conv2d_stats_partition<float, Arch>(pb);
  std::vector<float> y1(std::size_t(ys.size()), std::nanf("")), y2(y1);
  std::vector<moments> p1(std::size_t(part.size()), moments{-1, -1, -1}), p2(p1);
  std::vector<float> ws(std::size_t(bnff::conv2d_forward_workspace_size<float, Arch>(pb)));
  const tensor_view<const float> xv(x.data(), xs), wv(w.data(), pb.filter_shape());
  const vector_view<float> wsv(ws.data(), index_t(ws.size()));
  bnff::conv2d_forward_stats<float, Arch>(pb, xv, wv, tensor_view<float>(y1.data(), ys),
                                          vector_view<moments>(p1.data(), index_t(p1.size())), wsv);
  bnff::unfused::conv2d_forward_stats<float, Arch>(pb, xv, wv, tensor_view<float>(y2.data(), ys),
                                                   vector_view<moments>(p2.data(), index_t(p2.size())), wsv);
  REQUIRE(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)) == 0);
  REQUIRE(std::memcmp(p1.data(), p2.data(), p1.size() * sizeof(moments)) == 0);
}

TEST_CASE("epilogue statistics equal the standalone kernel's on a non-default arch", "[conv]") {
  const conv2d_problem pb{2, 5, 37, 41, 9, 3, 3, 1, 1};  // planes of 1517: blocks cut inside a plane
  check_epilogue_stats_equal_standalone<xsimd::sse2>(pb);
  check_epilogue_stats_equal_standalone<xsimd::fma3<xsimd::avx2>>(pb);
}

// Small planes are computed several images per task; the cases above cover that path
// only while the plan takes it.
TEST_CASE("small planes are computed in image groups", "[conv]") {
  const bnff::conv2d_plan<float> sevens({7, 5, 10, 10, 9, 1, 1, 0, 1});
  CHECK(sevens.group == 4);
  CHECK(sevens.tasks == 2);
  const bnff::conv2d_plan<float> nines({9, 9, 9, 9, 16, 1, 1, 0, 1});
  CHECK(nines.group == 5);
  CHECK(nines.tasks == 2);
  CHECK(bnff::conv2d_plan<float>({3, 16, 7, 5, 3, 1, 1, 0, 1}).group == 3);
  // 3x3 stride 1 leaves its in-place grid only where the grid wastes a third of its
  // columns. Rounding the grid up to whole register tiles (nr columns) adds waste, so
  // these shapes take the same path for any nr.
  const bnff::conv2d_plan<float> small3({3, 15, 7, 3, 16, 3, 3, 1, 1});  // grid 7 x 5 for 21 positions
  CHECK(small3.group == 3);
  CHECK_FALSE(small3.in_place);
  const bnff::conv2d_plan<float> fourteen({2, 4, 14, 14, 8, 3, 3, 1, 1});  // grid 14 x 16 for 196
  CHECK(fourteen.group == 1);
  CHECK(fourteen.in_place);
  CHECK(bnff::conv2d_plan<float>({3, 16, 7, 9, 15, 1, 1, 0, 2}).group == 3);  // strided: im2col
  CHECK(bnff::conv2d_plan<float>({7, 6, 25, 3, 10, 3, 3, 1, 1}).group == 4);  // 75 positions: 6 images fit
  // Large planes and single images keep one image per task.
  CHECK(bnff::conv2d_plan<float>({3, 17, 30, 29, 16, 1, 1, 0, 1}).group == 1);
  CHECK(bnff::conv2d_plan<float>({1, 5, 9, 9, 17, 1, 1, 0, 1}).group == 1);
}

// 3x3 stride-1 convolutions on planes of more than 256 positions take the Winograd path
// (F(4x4, 3x3)): every operation, against the double reference within the bound of
// error_bound, with padding 0, 1 and 2, odd P and Q (tiles cut by the plane's edge), channel
// counts around the SIMD width, several bands of tiles per image, batch 1 and 3, channel
// slices, and in double.
namespace {

std::vector<conv2d_problem> winograd_sweep() {
  std::vector<conv2d_problem> out;
  // n, c, h, w, k, r, s, pad, stride
  for (index_t c : {1, 3, 15, 16, 17, 33}) out.push_back({1, c, 17, 19, 17, 3, 3, 1, 1});
  for (index_t k : {1, 3, 16, 33}) out.push_back({3, 16, 18, 17, k, 3, 3, 1, 1});
  out.push_back({1, 16, 19, 21, 16, 3, 3, 0, 1});  // no padding: P x Q = 17 x 19
  out.push_back({1, 5, 15, 17, 7, 3, 3, 2, 1});    // padding 2: P x Q = 17 x 19
  out.push_back({3, 33, 40, 41, 9, 3, 3, 1, 1});   // 3 x 110 tiles in bands of 96 across images
  out.push_back({2, 300, 17, 16, 8, 3, 3, 1, 1});  // C > kc: the GEMMs in two depth blocks
  return out;
}

}  // namespace

TEST_CASE("3x3 stride-1 convolutions on large planes take the Winograd path", "[conv][winograd]") {
  for (const auto& pb : winograd_sweep()) {
    INFO("problem n" << pb.n << " c" << pb.c << " h" << pb.h << " w" << pb.w << " k" << pb.k << " pad" << pb.pad);
    REQUIRE(bnff::conv2d_plan<float>(pb).winograd);
    conv_tester<float>().problem(pb).operation(op::conv).run();
    conv_tester<float>().problem(pb).operation(op::conv_bias).sliced(2, 1).run();
    conv_tester<float>().problem(pb).operation(op::conv_stats).sliced(0, 3).run();
    conv_tester<float>().problem(pb).operation(op::bn_relu_conv_stats).sliced(1, 2).run();
  }
  conv_tester<double>().problem({3, 17, 17, 18, 9, 3, 3, 1, 1}).operation(op::bn_relu_conv_stats).sliced(1, 1).run();
  // Where it does not apply: stride 2, other kernels, planes of at most 256 positions.
  CHECK_FALSE(bnff::conv2d_plan<float>({1, 8, 33, 33, 8, 3, 3, 1, 2}).winograd);
  CHECK_FALSE(bnff::conv2d_plan<float>({1, 8, 33, 33, 8, 5, 5, 2, 1}).winograd);
  CHECK_FALSE(bnff::conv2d_plan<float>({1, 8, 16, 16, 8, 3, 3, 1, 1}).winograd);
  CHECK(bnff::conv2d_plan<float>({1, 8, 17, 16, 8, 3, 3, 1, 1}).winograd);
  // Tasks are groups of images whose tiles run on in one sequence: 5 images of 192 tiles
  // in tasks of 2, 2 and 1; 3 images of 110 tiles in one task, in bands across images.
  const bnff::conv2d_plan<float> five({5, 19, 61, 47, 10, 3, 3, 1, 1});
  CHECK(five.wg.tiles == 192);
  CHECK(five.wg.group == 2);
  CHECK(five.tasks == 3);
  const bnff::conv2d_plan<float> three({3, 33, 40, 41, 9, 3, 3, 1, 1});
  CHECK(three.wg.tiles == 110);
  CHECK(three.tasks == 1);
  CHECK(three.wg.band == 96);
}

// (Thread-count independence and fused == unfused on this path: the 23 x 24 and 61 x 47
// problems of "fused forward equals the unfused passes and is thread-count independent".)
TEST_CASE("Winograd: epilogue statistics equal the standalone kernel's, on other archs too", "[conv][winograd]") {
  const conv2d_problem pb{2, 19, 61, 47, 10, 3, 3, 1, 1};
  REQUIRE(bnff::conv2d_plan<float>(pb).winograd);
  check_epilogue_stats_equal_standalone<xsimd::default_arch>(pb);
  check_epilogue_stats_equal_standalone<xsimd::sse2>(pb);
  check_epilogue_stats_equal_standalone<xsimd::fma3<xsimd::avx2>>(pb);
}

// The Winograd path hands each output tile to the epilogue right after the band that
// completes it: over a task's bands, every column tile of every image is handed over
// exactly once, never before the Winograd tiles under it are all transformed.
TEST_CASE("Winograd: every output tile reaches the epilogue once, after its band", "[conv][winograd]") {
  for (const conv2d_problem& pb : {conv2d_problem{3, 33, 40, 41, 9, 3, 3, 1, 1},   // bands across images
                                   conv2d_problem{5, 19, 61, 47, 10, 3, 3, 1, 1},  // several bands per image
                                   conv2d_problem{16, 32, 56, 56, 128, 3, 3, 1, 1},
                                   conv2d_problem{1, 300, 17, 16, 8, 3, 3, 1, 1}}) {
    INFO("problem n" << pb.n << " c" << pb.c << " h" << pb.h << " w" << pb.w << " k" << pb.k);
    const bnff::conv2d_plan<float> plan(pb);
    REQUIRE(plan.winograd);
    const auto& lay = plan.wg;
    const index_t P = pb.p(), Q = pb.q(), plane = P * Q, images = std::min(lay.group, pb.n);
    const index_t total = images * lay.tiles;
    std::vector<int> handed(std::size_t(images * plane), 0);
    for (index_t b0 = 0; b0 < total; b0 += lay.band) {
      const index_t done = std::min(total, b0 + lay.band);
      for (index_t i = 0; i < images; ++i) {
        const index_t from = bnff::detail::winograd_finished_columns(lay, P, Q, plan.tile, b0 - i * lay.tiles);
        const index_t to = bnff::detail::winograd_finished_columns(lay, P, Q, plan.tile, done - i * lay.tiles);
        REQUIRE(from <= to);
        if (to < plane) REQUIRE(to % plan.tile == 0);  // whole column tiles, the last one only at the end
        for (index_t col = from; col < to; ++col) {
          // Output (p, q) comes from Winograd tile (p / 4, q / 4), done once the sequence passed it.
          const index_t t = i * lay.tiles + (col / Q) / 4 * lay.tw + (col % Q) / 4;
          REQUIRE(t < done);
          ++handed[std::size_t(i * plane + col)];
        }
      }
    }
    CHECK(std::all_of(handed.begin(), handed.end(), [](int h) { return h == 1; }));
  }
}
