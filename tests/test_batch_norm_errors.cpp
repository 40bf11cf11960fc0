#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "bnff/ops/batch_norm_apply.hpp"
#include "bnff/ops/batch_norm_backward.hpp"
#include "bnff/ops/batch_norm_finalize.hpp"
#include "bnff/ops/batch_norm_fold.hpp"
#include "bnff/ops/batch_norm_inference.hpp"
#include "bnff/ops/batch_norm_stats.hpp"
#include "bnff/ops/unfused/batch_norm_unfused.hpp"
#include "test_batch_norm_support.hpp"

namespace {

using bnff::index_t;
using bnff::moments;
using bnff::shape4;
using Catch::Contains;
using namespace bnff::test;

const shape4 s{2, 3, 4, 5};

// Inputs for every operation, and outputs filled with a value to check untouched.
struct bad_input_case {
  slice_tensor<float> x{s, 0, 0, 0}, dz{s, 0, 0, 0}, out{s, 0, 0, 0};
  std::vector<float> gamma = std::vector<float>(3, 1.0f), beta = std::vector<float>(3, 0.0f),
                     mean = std::vector<float>(3, 0.0f), invstd = std::vector<float>(3, 1.0f),
                     scale = std::vector<float>(3, 1.0f), vec_out = std::vector<float>(3, 7.0f),
                     vec_out2 = std::vector<float>(3, 7.0f);
  std::vector<moments> stats = std::vector<moments>(3, moments{40.0, 0.5, 3.0});
  bad_input_case() {
    x.fill_random(1);
    dz.fill_random(2);
    out.fill(7.0f);
  }
  bool outputs_untouched() const {
    for (double v : out.packed())
      if (v != 7.0) return false;
    for (float v : vec_out)
      if (v != 7.0f) return false;
    for (float v : vec_out2)
      if (v != 7.0f) return false;
    return true;
  }
};

}  // namespace

TEST_CASE("batch_norm_stats rejects bad arguments, naming them", "[batch_norm][errors]") {
  bad_input_case b;
  std::vector<moments> out(2, moments{-1, -1, -1});
  CHECK_THROWS_WITH(bnff::batch_norm_stats(b.x.cview(), vview(out)), Contains("batch_norm_stats") &&
                                                                         Contains("'out'") && Contains("3 elements") &&
                                                                         Contains("got 2 elements"));
  CHECK(out[0].count == -1);
  out.resize(3, moments{-1, -1, -1});
  CHECK_THROWS_WITH(bnff::batch_norm_stats(b.x.cview(), vview(out), 0), Contains("'block'"));
  // Planes that are not contiguous (every other column).
  const bnff::tensor_view<const float> strided(b.x.storage.data(), shape4{2, 3, 4, 2}, bnff::strides4{60, 20, 5, 2});
  CHECK_THROWS_WITH(bnff::batch_norm_stats(strided, vview(out)), Contains("'x'") && Contains("contiguous H x W"));
  // Output memory inside the input.
  auto* inside = reinterpret_cast<moments*>(b.x.storage.data());
  CHECK_THROWS_WITH(bnff::batch_norm_stats(b.x.cview(), bnff::vector_view<moments>(inside, 3)),
                    Contains("'out'") && Contains("no element shared with 'x'"));
  CHECK(out[2].count == -1);
}

TEST_CASE("batch_norm_finalize rejects bad arguments before writing", "[batch_norm][errors]") {
  bad_input_case b;
  auto run = [&](double eps, double momentum, std::vector<float>& gamma) {
    bnff::batch_norm_finalize<float>(cvview(b.stats), cvview(gamma), cvview(b.beta), eps, momentum, vview(b.vec_out),
                                     vview(b.vec_out2), vview(b.vec_out2).subview(0, 0), {}, {}, {});
  };
  for (double eps : {0.0, -1e-5, double(NAN)})
    CHECK_THROWS_WITH(run(eps, 0.1, b.gamma), Contains("batch_norm_finalize") && Contains("'eps'"));
  for (double momentum : {-0.1, 1.5, double(NAN)})
    CHECK_THROWS_WITH(run(1e-5, momentum, b.gamma), Contains("'momentum'") && Contains("[0, 1]"));
  std::vector<float> short_gamma(2, 1.0f);
  CHECK_THROWS_WITH(run(1e-5, 0.1, short_gamma), Contains("'gamma'") && Contains("3 elements"));
  CHECK(b.outputs_untouched());

  // An output that is an input.
  CHECK_THROWS_WITH(bnff::batch_norm_finalize<float>(cvview(b.stats), vview(b.vec_out), cvview(b.beta), 1e-5,
                                                     vview(b.vec_out), {}, {}, {}),
                    Contains("'mean'") && Contains("'gamma'"));
  // Running statistics on a one-element batch: unbiased variance undefined.
  b.stats[1].count = 1;
  CHECK_THROWS_WITH(run(1e-5, 0.1, b.gamma), Contains("'stats'") && Contains("count >= 2") && Contains("channel 1"));
  CHECK(b.outputs_untouched());
}

TEST_CASE("batch_norm_apply rejects bad arguments before writing", "[batch_norm][errors]") {
  bad_input_case b;
  slice_tensor<float> wrong(shape4{2, 3, 5, 4}, 0, 0, 0);
  wrong.fill(7.0f);
  CHECK_THROWS_WITH(
      bnff::batch_norm_apply<bnff::bn_relu>(b.x.cview(), wrong.view(), cvview(b.mean), cvview(b.scale), cvview(b.beta)),
      Contains("batch_norm_apply") && Contains("'y'") && Contains("[2, 3, 4, 5]") && Contains("[2, 3, 5, 4]"));
  for (double v : wrong.packed()) REQUIRE(v == 7.0);
  std::vector<float> short_scale(2, 1.0f);
  CHECK_THROWS_WITH(
      bnff::batch_norm_apply(b.x.cview(), b.out.view(), cvview(b.mean), cvview(short_scale), cvview(b.beta)),
      Contains("'scale'"));
  // y one element past x: partial overlap.
  std::vector<float> buf(std::size_t(s.size()) + 1, 7.0f);
  const bnff::tensor_view<float> x0(buf.data(), s), x1(buf.data() + 1, s);
  CHECK_THROWS_WITH(bnff::batch_norm_apply(x0, x1, cvview(b.mean), cvview(b.scale), cvview(b.beta)),
                    Contains("'y'") && Contains("partially overlapping"));
  for (float v : buf) REQUIRE(v == 7.0f);
  CHECK(b.outputs_untouched());
}

TEST_CASE("batch_norm_backward rejects bad arguments before writing", "[batch_norm][errors]") {
  bad_input_case b;
  auto run_overwrite = [&](bnff::tensor_view<const float> dz, bnff::tensor_view<float> dx, std::vector<float>& dgamma) {
    bnff::batch_norm_backward<bnff::bn_relu>(b.x.cview(), dz, cvview(b.mean), cvview(b.invstd), cvview(b.scale),
                                             cvview(b.beta), dx, vview(dgamma), vview(b.vec_out2));
  };
  slice_tensor<float> small(shape4{2, 2, 4, 5}, 0, 0, 0);
  CHECK_THROWS_WITH(run_overwrite(small.cview(), b.out.view(), b.vec_out),
                    Contains("batch_norm_backward") && Contains("'dz'"));
  std::vector<float> short_dgamma(1, 7.0f);
  CHECK_THROWS_WITH(run_overwrite(b.dz.cview(), b.out.view(), short_dgamma), Contains("'dgamma'"));
  // dx one element past dz: partial overlap.
  std::vector<float> buf(std::size_t(s.size()) + 1, 7.0f);
  const bnff::tensor_view<float> d0(buf.data(), s), d1(buf.data() + 1, s);
  CHECK_THROWS_WITH(run_overwrite(d0, d1, b.vec_out), Contains("'dx'") && Contains("partially overlapping"));
  // Accumulating into the tensor it reads is not supported.
  CHECK_THROWS_WITH((bnff::batch_norm_backward<bnff::bn_relu, bnff::grad_accumulate>(
                        b.x.cview(), b.dz.cview(), cvview(b.mean), cvview(b.invstd), cvview(b.scale), cvview(b.beta),
                        b.dz.view(), vview(b.vec_out), vview(b.vec_out2))),
                    Contains("'dx'") && Contains("no element shared with 'dz'"));
  // dgamma inside dx.
  CHECK_THROWS_WITH(bnff::batch_norm_backward<bnff::bn_relu>(
                        b.x.cview(), b.dz.cview(), cvview(b.mean), cvview(b.invstd), cvview(b.scale), cvview(b.beta),
                        b.out.view(), bnff::vector_view<float>(b.out.storage.data() + 5, 3), vview(b.vec_out2)),
                    Contains("'dgamma'") && Contains("'dx'"));
  CHECK(b.outputs_untouched());
}

TEST_CASE("inference operations reject bad arguments before writing", "[batch_norm][errors]") {
  bad_input_case b;
  CHECK_THROWS_WITH(
      bnff::batch_norm_inference_params<float>(cvview(b.gamma), cvview(b.beta), cvview(b.mean), cvview(b.invstd), -1.0,
                                               vview(b.vec_out), vview(b.vec_out2)),
      Contains("batch_norm_inference_params") && Contains("'eps'") && Contains("-1"));
  CHECK_THROWS_WITH(
      bnff::batch_norm_inference_params<float>(cvview(b.gamma), cvview(b.beta), cvview(b.mean), cvview(b.invstd), 1e-5,
                                               vview(b.vec_out), vview(b.vec_out)),
      Contains("'shift'") && Contains("'scale'"));
  CHECK_THROWS_WITH(
      bnff::batch_norm_apply_affine(b.x.cview(), b.out.view().images(0, 1), cvview(b.scale), cvview(b.beta)),
      Contains("batch_norm_apply_affine") && Contains("'y'"));
  // Fold: K x C x R x S = 3 x 2 x 3 x 3 weights.
  std::vector<float> w(54, 1.0f), fw(54, 7.0f), fw_small(36, 7.0f);
  const bnff::tensor_view<const float> wv(w.data(), 3, 2, 3, 3);
  CHECK_THROWS_WITH(bnff::batch_norm_fold_into_conv<float>(
                        wv, {}, cvview(b.gamma), cvview(b.beta), cvview(b.mean), cvview(b.invstd), 1e-5,
                        bnff::tensor_view<float>(fw_small.data(), 2, 2, 3, 3), vview(b.vec_out)),
                    Contains("batch_norm_fold_into_conv") && Contains("'folded_weights'"));
  CHECK_THROWS_WITH(bnff::batch_norm_fold_into_conv<float>(
                        wv, {}, cvview(b.gamma), cvview(b.beta), cvview(b.mean), cvview(b.invstd), 1e-5,
                        bnff::tensor_view<float>(fw.data(), 3, 2, 3, 3), vview(b.vec_out).subview(0, 2)),
                    Contains("'folded_bias'"));
  for (float v : fw) REQUIRE(v == 7.0f);
  for (float v : fw_small) REQUIRE(v == 7.0f);
  CHECK(b.outputs_untouched());
}

TEST_CASE("the unfused baseline validates every pass before the first one writes", "[batch_norm][errors]") {
  bad_input_case b;
  slice_tensor<float> dy(s, 0, 0, 0);
  dy.fill(7.0f);
  // dx aliases x: only the last pass would notice, yet nothing is written.
  CHECK_THROWS_WITH(bnff::unfused::batch_norm_relu_backward(b.x.cview(), b.dz.cview(), b.dz.cview(), dy.view(),
                                                            cvview(b.mean), cvview(b.invstd), cvview(b.gamma),
                                                            vview(b.vec_out), vview(b.vec_out2), b.x.view()),
                    Contains("batch_norm_backward_dx") && Contains("'dx'") && Contains("'x'"));
  for (double v : dy.packed()) REQUIRE(v == 7.0);
  CHECK(b.outputs_untouched());
  // Forward: z the wrong shape.
  slice_tensor<float> y(s, 0, 0, 0), z(shape4{2, 3, 4, 4}, 0, 0, 0);
  y.fill(7.0f);
  CHECK_THROWS_WITH(
      bnff::unfused::batch_norm_relu_forward(b.x.cview(), y.view(), z.view(), cvview(b.gamma), cvview(b.beta), 1e-5,
                                             vview(b.vec_out), vview(b.vec_out2), vview(b.mean)),
      Contains("'z'"));
  for (double v : y.packed()) REQUIRE(v == 7.0);
  CHECK(b.outputs_untouched());
}
