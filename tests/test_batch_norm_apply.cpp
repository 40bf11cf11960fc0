#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "bnff/ops/batch_norm_apply.hpp"
#include "bnff/ops/batch_norm_finalize.hpp"
#include "bnff/ops/batch_norm_fold.hpp"
#include "bnff/ops/batch_norm_inference.hpp"
#include "bnff/ops/batch_norm_stats.hpp"
#include "bnff/parallel/parallel.hpp"
#include "support/reference.hpp"
#include "test_batch_norm_support.hpp"

namespace {

using bnff::index_t;
using bnff::moments;
using bnff::shape4;
using namespace bnff::test;

// Per-channel state of a training forward, as batch_norm_finalize leaves it.
template <class T>
struct bn_state {
  std::vector<T> gamma, beta, mean, invstd, scale, shift;
};

template <class T>
bn_state<T> train_state(const slice_tensor<T>& x, std::uint64_t seed) {
  const auto c = std::size_t(x.shape.c);
  bn_state<T> st;
  st.gamma = to_vector<T>(random_vector(c, seed, 0.5, 2.0));
  st.beta = to_vector<T>(random_vector(c, seed + 1, -1.0, 1.0));
  st.mean.resize(c), st.invstd.resize(c), st.scale.resize(c), st.shift.resize(c);
  std::vector<moments> m(c);
  bnff::batch_norm_stats(x.cview(), vview(m));
  bnff::batch_norm_finalize<T>(cvview(m), cvview(st.gamma), cvview(st.beta), 1e-5, vview(st.mean), vview(st.invstd),
                               vview(st.scale), vview(st.shift));
  return st;
}

template <class T>
std::vector<double> ref_forward(const slice_tensor<T>& x, const bn_state<T>& st, bool relu) {
  const auto ref_stats = bnff::ref::batch_stats(x.shape, x.packed());
  auto y = bnff::ref::bn_normalize(x.shape, x.packed(), ref_stats.mean, ref_stats.var,
                                   {st.gamma.begin(), st.gamma.end()}, {st.beta.begin(), st.beta.end()}, 1e-5);
  return relu ? bnff::ref::relu(y) : y;
}

// Float: mean and scale are rounded to float once each and the FMA rounds
// once, so |y - ref| stays within a few ulps of |x - mean| * |scale| + |beta|
// (a few units here, ulp ~5e-7; worst seen 4e-7): 4e-6 leaves a margin of ten.
// Double: 1e-12.
template <class T>
constexpr double apply_tol = std::is_same_v<T, float> ? 4e-6 : 1e-12;

}  // namespace

TEMPLATE_TEST_CASE("batch_norm_apply (+ReLU) matches the reference, slices in and out", "[batch_norm]", float, double) {
  for (const shape4& s : bn_shapes()) {
    for (index_t offset : {0, 1}) {
      slice_tensor<TestType> x(s, 1, 2, offset);
      x.fill_random(100 + std::uint64_t(s.size()), -2.0, 2.0);
      const auto st = train_state(x, 9);
      CAPTURE(s, offset);

      slice_tensor<TestType> y(s, 2, 1, 1 - offset);
      y.fill_nan();
      bnff::batch_norm_apply(x.cview(), y.view(), cvview(st.mean), cvview(st.scale), cvview(st.beta));
      CHECK(max_abs_diff(y.packed(), ref_forward(x, st, false)) <= apply_tol<TestType>);
      CHECK(y.outside_untouched());

      y.fill_nan();
      bnff::batch_norm_apply<bnff::bn_relu>(x.cview(), y.view(), cvview(st.mean), cvview(st.scale), cvview(st.beta));
      CHECK(max_abs_diff(y.packed(), ref_forward(x, st, true)) <= apply_tol<TestType>);
      CHECK(y.outside_untouched());
    }
  }
}

TEST_CASE("batch_norm_apply in place", "[batch_norm]") {
  const shape4 s{2, 3, 5, 7};
  slice_tensor<float> x(s, 1, 1, 1);
  x.fill_random(4);
  const auto st = train_state(x, 2);
  const auto want = ref_forward(x, st, true);
  bnff::batch_norm_apply<bnff::bn_relu>(x.cview(), x.view(), cvview(st.mean), cvview(st.scale), cvview(st.beta));
  CHECK(max_abs_diff(x.packed(), want) <= apply_tol<float>);
  CHECK(x.outside_untouched());
}

TEST_CASE("a constant channel normalizes to exactly beta", "[batch_norm]") {
  const shape4 s{3, 2, 7, 9};
  for (float value : {0.0f, 0.1f, -3.7f, 1234.567f}) {
    slice_tensor<float> x(s, 0, 0, 1);
    x.fill(value);
    const auto st = train_state(x, 5);
    slice_tensor<float> y(s, 0, 0, 0), z(s, 0, 0, 0);
    y.fill_nan(), z.fill_nan();
    bnff::batch_norm_apply(x.cview(), y.view(), cvview(st.mean), cvview(st.scale), cvview(st.beta));
    bnff::batch_norm_apply<bnff::bn_relu>(x.cview(), z.view(), cvview(st.mean), cvview(st.scale), cvview(st.beta));
    CAPTURE(value);
    for (index_t n = 0; n < s.n; ++n)
      for (index_t c = 0; c < s.c; ++c)
        for (index_t i = 0; i < s.plane(); ++i) {
          const float beta = st.beta[std::size_t(c)];
          REQUIRE(y.cview().plane_ptr(n, c)[i] == beta);
          REQUIRE(z.cview().plane_ptr(n, c)[i] == std::max(beta, 0.0f));
        }
  }
}

TEST_CASE("batch_norm_apply: NaN statistics reach the output, even through ReLU", "[batch_norm]") {
  const shape4 s{2, 2, 3, 5};
  slice_tensor<float> x(s, 0, 0, 0);
  x.fill_random(12);
  x.view()(1, 0, 2, 4) = std::numeric_limits<float>::quiet_NaN();
  const auto st = train_state(x, 1);
  slice_tensor<float> z(s, 0, 0, 0);
  bnff::batch_norm_apply<bnff::bn_relu>(x.cview(), z.view(), cvview(st.mean), cvview(st.scale), cvview(st.beta));
  for (index_t n = 0; n < s.n; ++n)
    for (index_t i = 0; i < s.plane(); ++i) {
      CHECK(std::isnan(z.cview().plane_ptr(n, 0)[i]));
      CHECK(!std::isnan(z.cview().plane_ptr(n, 1)[i]));
    }
}

TEST_CASE("batch_norm_apply gives the same bits with 1 and 2 threads", "[batch_norm]") {
  const shape4 s{4, 16, 33, 35};  // large enough for several tasks
  slice_tensor<float> x(s, 0, 0, 1);
  x.fill_random(77);
  const auto st = train_state(x, 3);
  slice_tensor<float> a(s, 0, 0, 0), b(s, 0, 0, 0);
  bnff::set_num_threads(1);
  bnff::batch_norm_apply<bnff::bn_relu>(x.cview(), a.view(), cvview(st.mean), cvview(st.scale), cvview(st.beta));
  bnff::set_num_threads(2);
  bnff::batch_norm_apply<bnff::bn_relu>(x.cview(), b.view(), cvview(st.mean), cvview(st.scale), cvview(st.beta));
  bnff::set_num_threads(1);
  CHECK(a.storage == b.storage);
}

TEMPLATE_TEST_CASE("inference: scale and shift once, then one affine (+ReLU) sweep", "[batch_norm]", float, double) {
  for (const shape4& s : bn_shapes()) {
    const auto c = std::size_t(s.c);
    slice_tensor<TestType> x(s, 1, 1, 1);
    x.fill_random(50 + std::uint64_t(s.size()), -2.0, 2.0);
    const auto gamma = random_vector(c, 1, 0.5, 2.0), beta = random_vector(c, 2, -1.0, 1.0);
    const auto rm = random_vector(c, 3, -0.5, 0.5), rv = random_vector(c, 4, 0.2, 3.0);
    const auto tg = to_vector<TestType>(gamma), tb = to_vector<TestType>(beta), trm = to_vector<TestType>(rm),
               trv = to_vector<TestType>(rv);
    std::vector<TestType> scale(c), shift(c);
    bnff::batch_norm_inference_params<TestType>(cvview(tg), cvview(tb), cvview(trm), cvview(trv), 1e-3, vview(scale),
                                                vview(shift));
    const auto want = bnff::ref::bn_forward_infer(s, x.packed(), {tg.begin(), tg.end()}, {tb.begin(), tb.end()},
                                                  {trm.begin(), trm.end()}, {trv.begin(), trv.end()}, 1e-3);
    slice_tensor<TestType> y(s, 0, 1, 0);
    y.fill_nan();
    bnff::batch_norm_apply_affine<bnff::bn_relu>(x.cview(), y.view(), cvview(scale), cvview(shift));
    CAPTURE(s);
    CHECK(max_abs_diff(y.packed(), bnff::ref::relu(want)) <= apply_tol<TestType>);
    CHECK(y.outside_untouched());
    bnff::batch_norm_apply_affine(x.cview(), x.view(), cvview(scale), cvview(shift));  // in place
    CHECK(max_abs_diff(x.packed(), want) <= apply_tol<TestType>);
  }
}

TEST_CASE("folding BN into the preceding convolution equals conv then BN", "[batch_norm]") {
  const bnff::conv2d_problem pb{2, 3, 6, 5, 4, 3, 3, 1, 1};
  const auto x = random_vector(std::size_t(pb.input_shape().size()), 1);
  const auto w = random_vector(std::size_t(pb.filter_shape().size()), 2);
  const auto k = std::size_t(pb.k);
  const auto gamma = random_vector(k, 3, 0.5, 2.0), beta = random_vector(k, 4, -1.0, 1.0);
  const auto rm = random_vector(k, 5, -0.5, 0.5), rv = random_vector(k, 6, 0.2, 3.0);
  const double eps = 1e-3;
  for (bool with_bias : {false, true}) {
    const auto bias = with_bias ? random_vector(k, 7) : std::vector<double>{};
    const auto y = bnff::ref::conv2d_forward(pb, x, w, with_bias ? &bias : nullptr);
    const auto want = bnff::ref::bn_forward_infer(pb.output_shape(), y, gamma, beta, rm, rv, eps);

    std::vector<double> fw(w.size(), std::nan("")), fb(k, std::nan(""));
    bnff::batch_norm_fold_into_conv<double>(bnff::tensor_view<const double>(w.data(), pb.filter_shape()), cvview(bias),
                                            cvview(gamma), cvview(beta), cvview(rm), cvview(rv), eps,
                                            bnff::tensor_view<double>(fw.data(), pb.filter_shape()), vview(fb));
    const auto got = bnff::ref::conv2d_forward(pb, x, fw, &fb);
    CAPTURE(with_bias);
    // Both sides in double; only the summation order differs.
    CHECK(max_abs_diff(got, want) <= 1e-12 * (1 + max_abs(want)));

    // In place, in float: the weights and bias buffers become the folded ones.
    auto w32 = to_vector<float>(w);
    auto b32 = to_vector<float>(with_bias ? bias : std::vector<double>(k, 0.0));
    const auto g32 = to_vector<float>(gamma), be32 = to_vector<float>(beta), rm32 = to_vector<float>(rm),
               rv32 = to_vector<float>(rv);
    bnff::tensor_view<float> wv(w32.data(), pb.filter_shape());
    bnff::batch_norm_fold_into_conv<float>(wv, cvview(b32), cvview(g32), cvview(be32), cvview(rm32), cvview(rv32), eps,
                                           wv, vview(b32));
    const auto got32 = bnff::ref::conv2d_forward(pb, x, to_double(w32), nullptr);
    std::vector<double> with_b(got32);
    const index_t plane = pb.output_shape().plane();
    for (index_t i = 0; i < index_t(with_b.size()); ++i) with_b[std::size_t(i)] += b32[std::size_t((i / plane) % pb.k)];
    // Each folded weight and bias is rounded to float once: relative 1e-6 of the sums of magnitudes.
    CHECK(max_abs_diff(with_b, want) <= 1e-5 * (1 + max_abs(want)));
  }
}

TEST_CASE("batch_norm_apply with streaming stores gives the same bits at any alignment", "[batch_norm]") {
  // Large outputs take the streaming path; the sweep is run on both paths directly here.
  for (const shape4& s : {shape4{2, 3, 7, 7}, shape4{1, 2, 5, 33}, shape4{2, 2, 1, 3}}) {
    for (index_t offset : {0, 1, 5}) {
      slice_tensor<float> x(s, 1, 0, 1);
      x.fill_random(21);
      const auto st = train_state(x, 4);
      slice_tensor<float> a(s, 0, 1, offset), b(s, 0, 1, offset);
      a.fill_nan(), b.fill_nan();
      bnff::detail::bn_apply_sweep<bnff::bn_relu, bnff::simd::temporal_stores, xsimd::default_arch, float>(
          x.cview(), a.view(), st.mean.data(), st.scale.data(), st.beta.data());
      bnff::detail::bn_apply_sweep<bnff::bn_relu, bnff::simd::streaming_stores, xsimd::default_arch, float>(
          x.cview(), b.view(), st.mean.data(), st.scale.data(), st.beta.data());
      CAPTURE(s, offset);
      CHECK(a.packed() == b.packed());
      CHECK(b.outside_untouched());
      CHECK(max_abs_diff(b.packed(), ref_forward(x, st, true)) <= apply_tol<float>);
    }
  }
}
