// Convolution data and weight gradients against the naive double reference and
// finite differences, over kernel sizes, strides, odd extents, channel slices and
// accumulate mode; thread-count independence; bad-argument errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "bnff/ops/conv2d_backward_data.hpp"
#include "bnff/ops/conv2d_backward_weights.hpp"
#include "bnff/ops/conv2d_forward.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"

namespace {

using bnff::conv2d_problem;
using bnff::index_t;
using bnff::shape4;
using bnff::tensor_view;
using bnff::vector_view;

// A packed tensor stored as channels [pad, pad + c) of a buffer with c + 2 * pad channels,
// the other channels holding `fill` (they must stay untouched).
template <class T>
struct sliced_tensor {
  shape4 shape;
  index_t pad;
  std::vector<T> buf;
  sliced_tensor(shape4 s, index_t p, T fill) : shape(s), pad(p), buf(std::size_t(full().size()), fill) {}
  shape4 full() const { return {shape.n, shape.c + 2 * pad, shape.h, shape.w}; }
  tensor_view<T> view() { return tensor_view<T>(buf.data(), full()).channels(pad, shape.c); }
  tensor_view<const T> cview() const { return tensor_view<const T>(buf.data(), full()).channels(pad, shape.c); }
  std::size_t at(index_t n, index_t c, index_t i) const {
    return std::size_t((n * (shape.c + 2 * pad) + c + pad) * shape.plane() + i);
  }
  void set(const std::vector<double>& v) {
    for (index_t n = 0; n < shape.n; ++n)
      for (index_t c = 0; c < shape.c; ++c)
        for (index_t i = 0; i < shape.plane(); ++i)
          buf[at(n, c, i)] = T(v[std::size_t((n * shape.c + c) * shape.plane() + i)]);
  }
  std::vector<double> get() const {
    std::vector<double> v(std::size_t(shape.size()));
    for (index_t n = 0; n < shape.n; ++n)
      for (index_t c = 0; c < shape.c; ++c)
        for (index_t i = 0; i < shape.plane(); ++i)
          v[std::size_t((n * shape.c + c) * shape.plane() + i)] = double(buf[at(n, c, i)]);
    return v;
  }
  // Channels outside the slice still hold `fill` (NaN compares by isnan).
  bool outside_untouched(T fill) const {
    for (index_t n = 0; n < shape.n; ++n)
      for (index_t c = 0; c < shape.c + 2 * pad; ++c) {
        if (c >= pad && c < pad + shape.c) continue;
        for (index_t i = 0; i < shape.plane(); ++i) {
          const T v = buf[std::size_t((n * (shape.c + 2 * pad) + c) * shape.plane() + i)];
          if (!(std::isnan(fill) ? std::isnan(v) : v == fill)) return false;
        }
      }
    return true;
  }
};

std::vector<double> abs_of(const std::vector<double>& v) {
  std::vector<double> a(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) a[i] = std::abs(v[i]);
  return a;
}

// Rounds values to T, so the reference sees exactly what the kernel sees.
template <class T>
std::vector<double> as_t(std::vector<double> v) {
  for (auto& x : v) x = double(T(x));
  return v;
}

template <class T>
void check_close(const std::vector<double>& got, const std::vector<double>& want, const std::vector<double>& bound,
                 double terms, const char* what) {
  // A float sum of `terms` products: at most (terms + 2) * u * sum |products| off, doubled for margin.
  const double u = std::numeric_limits<T>::epsilon() / 2;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double tol = 2 * (terms + 2) * u * bound[i] + 1e-300;
    if (!(std::abs(got[i] - want[i]) <= tol))
      FAIL(what << "[" << i << "] = " << got[i] << ", reference " << want[i] << ", tol " << tol);
  }
}

template <class T>
void check_data_gradient(const conv2d_problem& pb, bool accumulate, index_t slice_pad) {
  const auto dyv = as_t<T>(bnff::test::random_vector(std::size_t(pb.output_shape().size()), 21));
  const auto wv = as_t<T>(bnff::test::random_vector(std::size_t(pb.filter_shape().size()), 22));
  const auto dx0 = as_t<T>(bnff::test::random_vector(std::size_t(pb.input_shape().size()), 23));
  sliced_tensor<T> dy(pb.output_shape(), slice_pad, std::numeric_limits<T>::quiet_NaN());
  dy.set(dyv);
  const auto wf = bnff::test::cast_vector<T>(wv);
  const T fill = accumulate ? T(0) : std::numeric_limits<T>::quiet_NaN();
  sliced_tensor<T> dx(pb.input_shape(), slice_pad, T(-7));
  if (accumulate)
    dx.set(dx0);
  else
    dx.set(std::vector<double>(dx0.size(), double(fill)));
  bnff::with_grad_mode(accumulate, [&](auto mode) {
    bnff::conv2d_backward_data<T>(pb, dy.cview(), tensor_view<const T>(wf.data(), pb.filter_shape()), dx.view(), mode);
  });
  REQUIRE(dx.outside_untouched(T(-7)));
  auto want = bnff::ref::conv2d_backward_data(pb, dyv, wv);
  auto bound = bnff::ref::conv2d_backward_data(pb, abs_of(dyv), abs_of(wv));
  if (accumulate)
    for (std::size_t i = 0; i < want.size(); ++i) want[i] += dx0[i], bound[i] += std::abs(dx0[i]);
  check_close<T>(dx.get(), want, bound, double(pb.k * pb.r * pb.s), "dx");
}

// The rounding error bound of every weight on the Winograd path (conv/winograd_wgrad.hpp),
// scaled by u: S_ab = sum_t Z_ab V_ab is a float chain over the tiles of a segment (at most
// all T tiles, plus one addition per band), Z = A dY A^T two passes of at most three
// roundings each, V = B^T x B two of at most three, G^T S G in double: to first order
// (T + 16) * sum_ab |G_ar||G_bs| sum_t Zd_ab Vd_ab, with Zd_ab = sum_ij |A_ai||A_bj||dY_ij|
// >= |Z_ab| and Vd_ab = sum_pq |B_ap||B_bq||x_pq| >= |V_ab| over the tile's 4 x 4 and 6 x 6.
std::vector<double> winograd_wgrad_bound(const conv2d_problem& pb, const std::vector<double>& x,
                                         const std::vector<double>& dy) {
  static constexpr double BT[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                      {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr double A[6][4] = {{1, 0, 0, 0}, {1, 1, 1, 1}, {1, -1, 1, -1}, {1, 2, 4, 8}, {1, -2, 4, -8},
                                     {0, 0, 0, 1}};
  static constexpr double G[6][3] = {{1.0 / 4, 0, 0},     {-1.0 / 6, -1.0 / 6, -1.0 / 6}, {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                     {1.0 / 24, 1.0 / 12, 1.0 / 6}, {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}};
  const index_t P = pb.p(), Q = pb.q(), TH = (P + 3) / 4, TW = (Q + 3) / 4, tiles = pb.n * TH * TW;
  std::vector<double> zd(std::size_t(tiles * pb.k * 36), 0.0), vd(std::size_t(tiles * pb.c * 36), 0.0);
  for (index_t n = 0; n < pb.n; ++n)
    for (index_t t = 0; t < TH * TW; ++t) {
      const index_t tile = n * TH * TW + t, p0 = t / TW * 4, q0 = t % TW * 4;
      for (index_t k = 0; k < pb.k; ++k)
        for (index_t i = 0; i < 4 && p0 + i < P; ++i)
          for (index_t j = 0; j < 4 && q0 + j < Q; ++j) {
            const double g = std::abs(dy[std::size_t(((n * pb.k + k) * P + p0 + i) * Q + q0 + j)]);
            for (int ab = 0; ab < 36; ++ab)
              zd[std::size_t((tile * pb.k + k) * 36 + ab)] += std::abs(A[ab / 6][i] * A[ab % 6][j]) * g;
          }
      for (index_t c = 0; c < pb.c; ++c)
        for (index_t i = 0; i < 6; ++i)
          for (index_t j = 0; j < 6; ++j) {
            const index_t ih = p0 - pb.pad + i, iw = q0 - pb.pad + j;
            if (ih < 0 || ih >= pb.h || iw < 0 || iw >= pb.w) continue;
            const double v = std::abs(x[std::size_t(((n * pb.c + c) * pb.h + ih) * pb.w + iw)]);
            for (int ab = 0; ab < 36; ++ab)
              vd[std::size_t((tile * pb.c + c) * 36 + ab)] += std::abs(BT[ab / 6][i] * BT[ab % 6][j]) * v;
          }
    }
  std::vector<double> bound(std::size_t(pb.filter_shape().size()), 0.0);
  for (index_t k = 0; k < pb.k; ++k)
    for (index_t c = 0; c < pb.c; ++c) {
      double s[36] = {};
      for (index_t tile = 0; tile < tiles; ++tile)
        for (int ab = 0; ab < 36; ++ab)
          s[ab] += zd[std::size_t((tile * pb.k + k) * 36 + ab)] * vd[std::size_t((tile * pb.c + c) * 36 + ab)];
      for (int r = 0; r < 3; ++r)
        for (int q = 0; q < 3; ++q) {
          double b = 0;
          for (int ab = 0; ab < 36; ++ab) b += std::abs(G[ab / 6][r] * G[ab % 6][q]) * s[ab];
          bound[std::size_t(((k * pb.c + c) * 3 + r) * 3 + q)] = (double(tiles) + 16) * b;
        }
    }
  return bound;
}

template <class T>
void check_weight_gradient(const conv2d_problem& pb, index_t slice_pad, bool bias) {
  const auto xv = as_t<T>(bnff::test::random_vector(std::size_t(pb.input_shape().size()), 31));
  const auto dyv = as_t<T>(bnff::test::random_vector(std::size_t(pb.output_shape().size()), 32));
  sliced_tensor<T> x(pb.input_shape(), slice_pad, std::numeric_limits<T>::quiet_NaN());
  sliced_tensor<T> dy(pb.output_shape(), slice_pad, std::numeric_limits<T>::quiet_NaN());
  x.set(xv);
  dy.set(dyv);
  std::vector<T> dw(std::size_t(pb.filter_shape().size()), std::numeric_limits<T>::quiet_NaN());
  std::vector<T> db(std::size_t(pb.k), std::numeric_limits<T>::quiet_NaN());
  bnff::conv2d_backward_weights<T>(pb, x.cview(), dy.cview(), tensor_view<T>(dw.data(), pb.filter_shape()),
                                   bias ? vector_view<T>(db.data(), pb.k) : vector_view<T>{});
  const auto want = bnff::ref::conv2d_backward_weights(pb, xv, dyv);
  if (bnff::conv2d_backward_weights_plan<T>(pb).winograd) {
    // The bound above, doubled for margin (a Winograd sum adds larger terms than a direct one).
    const auto bound = winograd_wgrad_bound(pb, xv, dyv);
    const double u = std::numeric_limits<T>::epsilon() / 2;
    for (std::size_t i = 0; i < want.size(); ++i) {
      const double tol = 2 * u * bound[i] + 1e-300;
      if (!(std::abs(double(dw[i]) - want[i]) <= tol))
        FAIL("dw[" << i << "] = " << dw[i] << ", reference " << want[i] << ", tol " << tol);
    }
  } else {
    const auto bound = bnff::ref::conv2d_backward_weights(pb, abs_of(xv), abs_of(dyv));
    check_close<T>(std::vector<double>(dw.begin(), dw.end()), want, bound, double(pb.n * pb.p() * pb.q()), "dw");
  }
  if (bias) {
    const auto wantb = bnff::ref::conv2d_backward_bias(pb, dyv);
    const auto boundb = bnff::ref::conv2d_backward_bias(pb, abs_of(dyv));
    check_close<T>(std::vector<double>(db.begin(), db.end()), wantb, boundb, double(pb.n * pb.p() * pb.q()), "dbias");
  } else {
    for (T v : db) REQUIRE(std::isnan(v));
  }
}

// The problems every gradient test sweeps: 1x1 and 3x3, strides 1 and 2, odd extents,
// channel counts around the register tiles (forward 8 x 48; weight gradient 1 to 4
// batches of dW rows, as many as K asks for).
std::vector<conv2d_problem> sweep() {
  return {
      {2, 3, 5, 7, 4, 1, 1, 0, 1},    // pointwise
      {1, 17, 9, 4, 9, 1, 1, 0, 1},   // pointwise, odd channel counts
      {2, 5, 7, 6, 3, 3, 3, 1, 1},    // 3x3 same padding
      {1, 4, 6, 5, 17, 3, 3, 0, 1},   // 3x3 valid
      {2, 3, 9, 7, 5, 3, 3, 1, 2},    // 3x3 stride 2
      {1, 6, 8, 8, 7, 1, 1, 0, 2},    // 1x1 stride 2 (projection shortcut)
      {1, 2, 11, 13, 3, 3, 2, 1, 1},  // rectangular kernel
      {1, 9, 1, 1, 33, 1, 1, 0, 1},   // 1 x 1 plane
      {1, 3, 31, 29, 2, 3, 2, 1, 1},  // plane wider than one register tile of columns
  };
}

// 3x3 stride-1 weight gradients on planes of more than 256 positions take the Winograd
// path: channel counts around the register tiles, K from one lane to several lane blocks,
// padding 0, 1 and 2 with odd P and Q (tiles cut by the plane's edges), batches of 1 to 5
// (fewer images than segments, and uneven segments), several bands per segment, C over
// one channel block.
std::vector<conv2d_problem> winograd_sweep() {
  std::vector<conv2d_problem> out;
  // n, c, h, w, k, r, s, pad, stride
  for (index_t c : {1, 3, 15, 16, 17, 33}) out.push_back({1, c, 17, 19, 17, 3, 3, 1, 1});
  for (index_t k : {1, 3, 16, 33, 64, 70}) out.push_back({3, 13, 18, 17, k, 3, 3, 1, 1});
  out.push_back({1, 16, 19, 21, 16, 3, 3, 0, 1});  // no padding: P x Q = 17 x 19
  out.push_back({2, 5, 15, 17, 7, 3, 3, 2, 1});    // padding 2: P x Q = 17 x 19
  out.push_back({5, 6, 20, 21, 9, 3, 3, 1, 1});    // 5 images in 4 segments
  out.push_back({2, 4, 61, 47, 10, 3, 3, 1, 1});   // 192 tiles per image: several bands
  out.push_back({2, 130, 17, 18, 12, 3, 3, 1, 1}); // channels in more than one block
  return out;
}

}  // namespace

TEST_CASE("conv2d_backward_data matches the double reference", "[conv][backward]") {
  for (const auto& pb : sweep()) {
    INFO("problem n" << pb.n << " c" << pb.c << " h" << pb.h << " w" << pb.w << " k" << pb.k << " r" << pb.r << " s"
                     << pb.s << " pad" << pb.pad << " stride" << pb.stride);
    check_data_gradient<float>(pb, false, 0);
    check_data_gradient<float>(pb, false, 2);
    check_data_gradient<float>(pb, true, 1);
    check_data_gradient<double>(pb, false, 1);
    check_data_gradient<double>(pb, true, 0);
  }
}

// The data gradient's transposed filter, Wt[c, k, r, s] = W[k, c, R-1-r, S-1-s]: 1x1 goes by
// register tiles with remainders in both directions, other kernels and strided views
// element by element; every element is checked against the definition.
template <class T>
void check_flip_transpose(index_t k, index_t c, index_t r, index_t s, bool strided) {
  using arch = xsimd::default_arch;
  const conv2d_problem pb{1, c, 8, 8, k, r, s, r / 2, 1};
  const shape4 fs = pb.filter_shape();
  // strided: a C stride of 2 (every other element of a wider buffer), so not the 1x1 tile path.
  const bnff::strides4 st = strided ? bnff::strides4{2 * c * r * s, 2 * r * s, s, 1} : bnff::strides4::packed(fs);
  std::vector<T> buf(std::size_t(k * st.n), std::numeric_limits<T>::quiet_NaN());
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = T(i) + T(0.5);
  const tensor_view<const T> w(buf.data(), fs, st);
  std::vector<T> wt(std::size_t(fs.size()) + 3, T(-3));
  bnff::detail::flip_transpose_weights<T, arch>(pb, w, wt.data());
  for (index_t cc = 0; cc < c; ++cc)
    for (index_t kk = 0; kk < k; ++kk)
      for (index_t rr = 0; rr < r; ++rr)
        for (index_t ss = 0; ss < s; ++ss)
          REQUIRE(wt[std::size_t(((cc * k + kk) * r + rr) * s + ss)] == w(kk, cc, r - 1 - rr, s - 1 - ss));
  for (std::size_t i = std::size_t(fs.size()); i < wt.size(); ++i) REQUIRE(wt[i] == T(-3));
}

TEST_CASE("flip_transpose_weights gives the transposed convolution's filter", "[conv][backward]") {
  check_flip_transpose<float>(35, 37, 1, 1, false);  // 2 x 2 tiles of 16 and remainders
  check_flip_transpose<float>(16, 48, 1, 1, false);  // whole tiles only
  check_flip_transpose<float>(5, 3, 1, 1, false);    // smaller than one tile
  check_flip_transpose<float>(35, 37, 1, 1, true);
  check_flip_transpose<float>(21, 19, 3, 3, false);
  check_flip_transpose<float>(4, 6, 3, 2, true);
  check_flip_transpose<double>(19, 17, 1, 1, false);  // tiles of 8
  check_flip_transpose<double>(9, 7, 3, 3, false);
}

TEST_CASE("conv2d_backward_data with register-tile weight transposes matches the double reference",
          "[conv][backward]") {
  for (const conv2d_problem& pb : {conv2d_problem{2, 33, 5, 3, 35, 1, 1, 0, 1}, conv2d_problem{3, 48, 4, 4, 16, 1, 1, 0, 1},
                                  conv2d_problem{2, 40, 7, 7, 19, 1, 1, 0, 1}}) {
    INFO("problem c" << pb.c << " k" << pb.k << " " << pb.h << "x" << pb.w);
    check_data_gradient<float>(pb, false, 0);
    check_data_gradient<float>(pb, false, 1);
    check_data_gradient<double>(pb, false, 0);
  }
}

TEST_CASE("conv2d_backward_weights matches the double reference", "[conv][backward]") {
  for (const auto& pb : sweep()) {
    INFO("problem n" << pb.n << " c" << pb.c << " h" << pb.h << " w" << pb.w << " k" << pb.k << " r" << pb.r << " s"
                     << pb.s << " pad" << pb.pad << " stride" << pb.stride);
    check_weight_gradient<float>(pb, 0, true);
    check_weight_gradient<float>(pb, 2, false);
    check_weight_gradient<double>(pb, 1, true);
  }
  // Many positions (several kc blocks per image) and rows past one 64-row block: a 3x2
  // kernel, since 3x3 stride 1 on such planes takes the Winograd path (tested below).
  check_weight_gradient<float>({2, 5, 23, 25, 70, 3, 2, 1, 1}, 0, true);
  check_weight_gradient<float>({1, 300, 5, 5, 9, 1, 1, 0, 1}, 0, false);
  // 64 dW rows: the tile of 4 batches, on the pointwise and the slab paths.
  check_weight_gradient<float>({2, 5, 6, 7, 64, 1, 1, 0, 1}, 0, true);
  check_weight_gradient<float>({1, 3, 24, 23, 64, 3, 2, 1, 1}, 1, false);
  // One run only: the 600 columns are cut into 4 groups of column blocks (tasks), and the
  // 20 dY rows fill part of the narrow tile's lanes.
  check_weight_gradient<float>({1, 600, 4, 4, 20, 1, 1, 0, 1}, 1, true);
  // Stride 1 reads im2col from a padded slab: several runs per image (a 40 x 39 grid), four
  // segments of partials, an odd count of dY rows, channel slices padded with NaN.
  const conv2d_problem slab{2, 3, 40, 37, 9, 3, 2, 1, 1};
  REQUIRE(bnff::conv2d_backward_weights_plan<float>(slab).slab);
  REQUIRE(!bnff::conv2d_backward_weights_plan<float>(slab).winograd);
  check_weight_gradient<float>(slab, 2, true);
  check_weight_gradient<double>(slab, 1, false);
  // Small planes with a small dW read im2col from a slab, one run per image.
  const conv2d_problem small_dw{11, 3, 7, 7, 5, 3, 3, 1, 1};
  REQUIRE(bnff::conv2d_backward_weights_plan<float>(small_dw).slab);
  check_weight_gradient<float>(small_dw, 1, true);
  check_weight_gradient<double>(small_dw, 0, false);
  // Otherwise (a dW of 553 KB, or stride 2) they build im2col from padded planes, run by run
  // of positions: runs that start inside an image (inside an output row: 11 images of 7 x 7
  // in two runs of 272).
  const conv2d_problem large_dw{11, 240, 7, 7, 64, 3, 3, 1, 1};
  REQUIRE(!bnff::conv2d_backward_weights_plan<float>(large_dw).slab);
  check_weight_gradient<float>(large_dw, 1, true);
  const conv2d_problem strided{10, 3, 15, 13, 4, 3, 3, 1, 2};
  REQUIRE(!bnff::conv2d_backward_weights_plan<float>(strided).slab);
  check_weight_gradient<float>(strided, 2, true);
}

TEST_CASE("3x3 stride-1 weight gradients on large planes take the Winograd path", "[conv][backward][winograd]") {
  for (const auto& pb : winograd_sweep()) {
    INFO("problem n" << pb.n << " c" << pb.c << " h" << pb.h << " w" << pb.w << " k" << pb.k << " pad" << pb.pad);
    REQUIRE(bnff::conv2d_backward_weights_plan<float>(pb).winograd);
    check_weight_gradient<float>(pb, 0, true);
    check_weight_gradient<float>(pb, 2, false);
  }
  check_weight_gradient<double>({3, 17, 17, 18, 9, 3, 3, 1, 1}, 1, true);
  // Where it does not apply: stride 2, other kernels, planes of at most 256 positions.
  CHECK_FALSE(bnff::conv2d_backward_weights_plan<float>({1, 8, 33, 33, 8, 3, 3, 1, 2}).winograd);
  CHECK_FALSE(bnff::conv2d_backward_weights_plan<float>({1, 8, 33, 33, 8, 5, 5, 2, 1}).winograd);
  CHECK_FALSE(bnff::conv2d_backward_weights_plan<float>({1, 8, 16, 16, 8, 3, 3, 1, 1}).winograd);
  CHECK(bnff::conv2d_backward_weights_plan<float>({1, 8, 17, 16, 8, 3, 3, 1, 1}).winograd);
  // The cuts the sweep relies on: segments, bands, channel blocks.
  const auto five = *bnff::conv2d_backward_weights_plan<float>({5, 6, 20, 21, 9, 3, 3, 1, 1}).winograd;
  CHECK(five.segments == 4);
  const auto bands = *bnff::conv2d_backward_weights_plan<float>({2, 4, 61, 47, 10, 3, 3, 1, 1}).winograd;
  CHECK(bands.lay.tiles == 192);
  CHECK(bands.lay.band < bands.lay.tiles);
  const auto wide = *bnff::conv2d_backward_weights_plan<float>({2, 130, 17, 18, 12, 3, 3, 1, 1}).winograd;
  CHECK(wide.channel_block < 130);
}

TEST_CASE("convolution gradients agree with finite differences in double", "[conv][backward][fd]") {
  // loss = sum(conv(x, w) * g) is linear in x and in w: central differences are exact up to
  // rounding, so 1e-7 relative is a tight bound.
  for (const conv2d_problem& pb :
       {conv2d_problem{1, 3, 5, 6, 4, 3, 3, 1, 2}, conv2d_problem{2, 4, 5, 5, 3, 1, 1, 0, 1}}) {
    auto x = bnff::test::random_vector(std::size_t(pb.input_shape().size()), 41);
    auto w = bnff::test::random_vector(std::size_t(pb.filter_shape().size()), 42);
    const auto g = bnff::test::random_vector(std::size_t(pb.output_shape().size()), 43);
    auto loss = [&] {
      std::vector<double> y(std::size_t(pb.output_shape().size()));
      bnff::conv2d_forward<double>(pb, tensor_view<const double>(x.data(), pb.input_shape()),
                                   tensor_view<const double>(w.data(), pb.filter_shape()), {},
                                   tensor_view<double>(y.data(), pb.output_shape()));
      double l = 0;
      for (std::size_t i = 0; i < y.size(); ++i) l += y[i] * g[i];
      return l;
    };
    std::vector<double> dx(x.size()), dw(w.size());
    bnff::conv2d_backward_data<double>(pb, tensor_view<const double>(g.data(), pb.output_shape()),
                                       tensor_view<const double>(w.data(), pb.filter_shape()),
                                       tensor_view<double>(dx.data(), pb.input_shape()));
    bnff::conv2d_backward_weights<double>(pb, tensor_view<const double>(x.data(), pb.input_shape()),
                                          tensor_view<const double>(g.data(), pb.output_shape()),
                                          tensor_view<double>(dw.data(), pb.filter_shape()));
    const double h = 1e-3;
    auto fd = [&](std::vector<double>& v, std::size_t i) {
      const double v0 = v[i];
      v[i] = v0 + h;
      const double lp = loss();
      v[i] = v0 - h;
      const double lm = loss();
      v[i] = v0;
      return (lp - lm) / (2 * h);
    };
    for (std::size_t i = 0; i < x.size(); i += 7) REQUIRE(fd(x, i) == Approx(dx[i]).epsilon(1e-7).margin(1e-9));
    for (std::size_t i = 0; i < w.size(); i += 3) REQUIRE(fd(w, i) == Approx(dw[i]).epsilon(1e-7).margin(1e-9));
  }
}

TEST_CASE("convolution gradients do not depend on the thread count", "[conv][backward][threads]") {
  for (const conv2d_problem& pb :
       {conv2d_problem{3, 70, 9, 10, 20, 3, 3, 1, 1}, conv2d_problem{3, 6, 24, 23, 10, 3, 3, 1, 1},
        conv2d_problem{5, 20, 19, 21, 18, 3, 3, 1, 1},
        conv2d_problem{4, 6, 11, 9, 5, 3, 3, 1, 2},
        conv2d_problem{2, 130, 6, 6, 72, 1, 1, 0, 1}}) {
    const auto x = bnff::test::cast_vector<float>(bnff::test::random_vector(std::size_t(pb.input_shape().size()), 51));
    const auto w = bnff::test::cast_vector<float>(bnff::test::random_vector(std::size_t(pb.filter_shape().size()), 52));
    const auto dy =
        bnff::test::cast_vector<float>(bnff::test::random_vector(std::size_t(pb.output_shape().size()), 53));
    auto run = [&](int threads, bool accumulate) {
      bnff::set_num_threads(threads);
      std::vector<float> dx(x.size(), 0.5f), dw(w.size()), db(std::size_t(pb.k));
      bnff::with_grad_mode(accumulate, [&](auto mode) {
        bnff::conv2d_backward_data<float>(pb, tensor_view<const float>(dy.data(), pb.output_shape()),
                                          tensor_view<const float>(w.data(), pb.filter_shape()),
                                          tensor_view<float>(dx.data(), pb.input_shape()), mode);
      });
      bnff::conv2d_backward_weights<float>(pb, tensor_view<const float>(x.data(), pb.input_shape()),
                                           tensor_view<const float>(dy.data(), pb.output_shape()),
                                           tensor_view<float>(dw.data(), pb.filter_shape()),
                                           vector_view<float>(db.data(), pb.k));
      dx.insert(dx.end(), dw.begin(), dw.end());
      dx.insert(dx.end(), db.begin(), db.end());
      return dx;
    };
    for (const bool acc : {false, true}) {
      const auto one = run(1, acc), two = run(2, acc);
      REQUIRE(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0);
    }
  }
  bnff::set_num_threads(2);
}

TEST_CASE("convolution gradients reject bad arguments before writing", "[conv][backward][errors]") {
  const conv2d_problem pb{2, 3, 6, 6, 4, 3, 3, 1, 1};
  std::vector<float> x(std::size_t(pb.input_shape().size()), 1.0f), w(std::size_t(pb.filter_shape().size()), 1.0f);
  std::vector<float> dy(std::size_t(pb.output_shape().size()), 1.0f);
  std::vector<float> dx(x.size(), 5.0f), dw(w.size(), 5.0f), db(std::size_t(pb.k), 5.0f);
  const tensor_view<const float> xv(x.data(), pb.input_shape()), wv(w.data(), pb.filter_shape()),
      dyv(dy.data(), pb.output_shape());
  auto untouched = [&] {
    for (float v : dx) REQUIRE(v == 5.0f);
    for (float v : dw) REQUIRE(v == 5.0f);
    for (float v : db) REQUIRE(v == 5.0f);
  };
  // dy with the wrong shape.
  REQUIRE_THROWS_WITH(bnff::conv2d_backward_data<float>(pb, tensor_view<const float>(dy.data(), 2, 4, 6, 5), wv,
                                                        tensor_view<float>(dx.data(), pb.input_shape())),
                      Catch::Contains("conv2d_backward_data") && Catch::Contains("'dy'"));
  // dx overlapping dy.
  REQUIRE_THROWS_WITH(bnff::conv2d_backward_data<float>(pb, tensor_view<const float>(dx.data(), pb.output_shape()), wv,
                                                        tensor_view<float>(dx.data(), pb.input_shape())),
                      Catch::Contains("'dx'"));
  // Too small a workspace.
  std::vector<float> ws(8);
  REQUIRE_THROWS_WITH(bnff::conv2d_backward_data<float>(pb, dyv, wv, tensor_view<float>(dx.data(), pb.input_shape()),
                                                        bnff::grad_overwrite{}, vector_view<float>(ws.data(), 8)),
                      Catch::Contains("'workspace'"));
  // dw with the wrong shape, dbias with the wrong size, dw strided.
  REQUIRE_THROWS_WITH(bnff::conv2d_backward_weights<float>(pb, xv, dyv, tensor_view<float>(dw.data(), 4, 3, 3, 2)),
                      Catch::Contains("conv2d_backward_weights") && Catch::Contains("'dw'"));
  REQUIRE_THROWS_WITH(
      bnff::conv2d_backward_weights<float>(pb, xv, dyv, tensor_view<float>(dw.data(), pb.filter_shape()),
                                           vector_view<float>(db.data(), 3)),
      Catch::Contains("'dbias'"));
  REQUIRE_THROWS_WITH(bnff::conv2d_backward_weights<float>(pb, tensor_view<const float>(x.data(), 2, 3, 6, 7), dyv,
                                                           tensor_view<float>(dw.data(), pb.filter_shape())),
                      Catch::Contains("'x'"));
  // A bad problem.
  REQUIRE_THROWS_WITH(bnff::conv2d_backward_weights<float>(conv2d_problem{2, 3, 6, 6, 4, 3, 3, 3, 1}, xv, dyv,
                                                           tensor_view<float>(dw.data(), pb.filter_shape())),
                      Catch::Contains("problem.pad"));
  untouched();
}
