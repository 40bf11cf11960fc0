// The trainer's fused and unfused engines: a whole training step of a small
// DenseNet against the engine on the naive double reference (loss, every
// parameter gradient, running statistics, inference logits), thread-count
// invariance, fused against unfused over a few steps, a short training run
// whose loss falls, and resume equivalence.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "../examples/01_densenet_trainer/data.hpp"
#include "../examples/01_densenet_trainer/engines.hpp"
#include "../examples/01_densenet_trainer/trainer.hpp"
#include "support/random.hpp"
#include "test_trainer_reference_engine.hpp"

using namespace trainer;
using bnff::index_t;

namespace {

// Two blocks (so a transition, pooled channels and the final BN-ReLU are all
// there), concatenations of 8 + 2 x 4 and 8 + 3 x 4 channels at 8x8 and 4x4.
model_config tiny_config() {
  model_config c;
  c.image_size = 8;
  c.blocks = {2, 3};
  c.growth = 4;
  return c;
}

std::unique_ptr<densenet_model> make(impl_kind k, const model_config& cfg, index_t batch, std::uint64_t seed) {
  return std::make_unique<densenet_model>(cfg, batch, seed, make_engine(k));
}

struct step_result {
  double loss = 0;
  std::vector<float> logits, eval_logits;
};

// One training forward and backward on fixed inputs (no SGD update), then an inference forward.
step_result run_step(densenet_model& m, index_t batch) {
  const auto x = bnff::test::random_vector(std::size_t(m.input_shape().size()), 11, -2.0, 2.0);
  std::copy(x.begin(), x.end(), m.input());
  std::vector<std::int32_t> labels(static_cast<std::size_t>(batch), 0);
  for (index_t i = 0; i < batch; ++i) labels[std::size_t(i)] = std::int32_t((3 * i + 1) % 10);
  step_result r;
  const float* logits = m.forward(true);
  r.logits.assign(logits, logits + batch * 10);
  std::vector<float> d_logits(std::size_t(batch * 10));
  r.loss = softmax_cross_entropy<float>(batch, 10, logits, labels.data(), d_logits.data()).loss;
  m.backward(d_logits.data());
  const float* eval = m.forward(false);
  r.eval_logits.assign(eval, eval + batch * 10);
  return r;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::abs(x)));
  return m;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::abs(a[i] - b[i])));
  return m;
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("bnff_trainer_engines_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

struct small_data {
  dataset train = synthetic::make(160, 8, 3, 0), val = synthetic::make(40, 8, 3, 1);
  small_data() {
    const auto norm = channel_normalization::of(train);
    norm.apply(train);
    norm.apply(val);
  }
};

run_settings small_settings(int epochs) {
  run_settings s;
  s.epochs = epochs;
  s.sgd = {0.05, 0.9, 1e-4};
  s.seed = 3;
  s.config = "tiny densenet";
  return s;
}

// Runs the enclosing scope with a fixed thread count: one, since thread start-up costs more than
// these tiny layers' work; the results do not depend on it (the thread-count test).
struct fixed_threads {
  int before = bnff::max_threads();
  explicit fixed_threads(int n) { bnff::set_num_threads(n); }
  ~fixed_threads() { bnff::set_num_threads(before); }
};

}  // namespace

TEST_CASE("trainer engines: a training step matches the double reference", "[trainer][engines]") {
  const index_t batch = 3;
  auto ref_model =
      std::make_unique<densenet_model>(tiny_config(), batch, 7, std::make_unique<test::reference_engine>());
  const step_result expect = run_step(*ref_model, batch);
  for (impl_kind k : {impl_kind::fused, impl_kind::unfused}) {
    auto m = make(k, tiny_config(), batch, 7);
    INFO(m->name());
    const step_result got = run_step(*m, batch);
    // Float through a dozen conv and BN layers against double: about 1e-6 relative per layer,
    // and BN's division by the batch deviation (48 elements per channel) amplifies it little.
    CHECK(std::abs(got.loss - expect.loss) <= 1e-5 * expect.loss);
    CHECK(max_abs_diff(got.logits, expect.logits) <= 1e-4 * max_abs(expect.logits));
    CHECK(max_abs_diff(got.eval_logits, expect.eval_logits) <= 1e-4 * max_abs(expect.eval_logits));
    const auto pg = m->parameters(), pr = ref_model->parameters();
    REQUIRE(pg.size() == pr.size());
    for (std::size_t i = 0; i < pg.size(); ++i) {
      INFO(pg[i]->name);
      // Gradients sum a few hundred float products per element: 1e-4 of the tensor's largest
      // element covers rounding; a wrong mask, mode or statistic is off by far more.
      CHECK(max_abs_diff(pg[i]->grad, pr[i]->grad) <= 1e-4 * max_abs(pr[i]->grad) + 1e-7);
    }
    const auto sg = m->state(), sr = ref_model->state();
    REQUIRE(sg.size() == sr.size());
    for (std::size_t i = 0; i < sg.size(); ++i) {
      INFO(sg[i]->name);
      CHECK(max_abs_diff(sg[i]->value, sr[i]->value) <= 1e-5 * max_abs(sr[i]->value));
    }
  }
}

TEST_CASE("trainer engines: activation memory each keeps for backward", "[trainer][engines]") {
  const index_t batch = 2;
  auto fused = make(impl_kind::fused, tiny_config(), batch, 1);
  auto unfused = make(impl_kind::unfused, tiny_config(), batch, 1);
  const densenet& net = fused->network();
  // Unfused stores max(0, BN(x)) for every BN-ReLU-conv input (floats) on top of the shared buffers.
  std::uint64_t stored = 0, bn_channels = 0, buffer_channels = 0;
  for (const unit& u : net.units()) {
    if (u.kind == unit_kind::bn_relu_conv) stored += std::uint64_t(u.x.size()) * sizeof(float);
    if (u.kind == unit_kind::bn_relu_conv || u.kind == unit_kind::bn_relu) bn_channels += std::uint64_t(u.x.c());
  }
  for (const auto& b : net.buffers())
    if (!b.gradient) buffer_channels += std::uint64_t(b.shape.c);
  CHECK(unfused->activation_bytes() == net.activation_bytes() + stored + bn_channels * 4 * sizeof(float));
  // Fused keeps per-channel vectors only: moments per activation channel, four floats per BN channel.
  CHECK(fused->activation_bytes() ==
        net.activation_bytes() + buffer_channels * sizeof(bnff::moments) + bn_channels * 4 * sizeof(float));
  CHECK(fused->activation_bytes() < unfused->activation_bytes());
}

TEST_CASE("trainer engines: one and two threads give the same bits", "[trainer][engines]") {
  const index_t batch = 4;
  const int threads = bnff::max_threads();
  for (impl_kind k : {impl_kind::fused, impl_kind::unfused}) {
    bnff::set_num_threads(1);
    auto one = make(k, tiny_config(), batch, 5);
    const step_result a = run_step(*one, batch);
    bnff::set_num_threads(2);
    auto two = make(k, tiny_config(), batch, 5);
    const step_result b = run_step(*two, batch);
    INFO(one->name());
    CHECK(a.loss == b.loss);
    CHECK(a.eval_logits == b.eval_logits);
    for (std::size_t i = 0; i < one->parameters().size(); ++i)
      CHECK(one->parameters()[i]->grad == two->parameters()[i]->grad);
  }
  bnff::set_num_threads(threads);
}

TEST_CASE("trainer engines: fused and unfused train alike from the same weights", "[trainer][engines]") {
  const fixed_threads one(1);
  const small_data d;
  auto fused = make(impl_kind::fused, tiny_config(), 16, 3);
  auto unfused = make(impl_kind::unfused, tiny_config(), 16, 3);
  progress_printer quiet(nullptr);
  const comparison c = compare(*fused, *unfused, d.train, small_settings(1), 4, quiet);
  REQUIRE(c.loss_a.size() == 4);
  // The unfused engine takes its statistics in the fused blocks, derives the BN parameters and
  // normalizes as the fused kernels do and reduces its backward sums in their order: the same
  // bits, step after step (a single ReLU mask flipped by rounding would otherwise grow under SGD).
  CHECK(c.loss_a == c.loss_b);
  CHECK(c.max_relative_difference == 0);
  CHECK(c.first_step_gradient_difference == 0);
  CHECK(c.activation_bytes_a < c.activation_bytes_b);
}

TEST_CASE("trainer engines: a short training run lowers the loss", "[trainer][engines]") {
  const fixed_threads one(1);
  const small_data d;
  auto m = make(impl_kind::fused, tiny_config(), 16, 3);
  progress_printer quiet(nullptr);
  const run_result r = train(*m, d.train, d.val, small_settings(4), quiet);
  REQUIRE(r.losses.size() == 40);
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) first += r.losses[std::size_t(i)], last += r.losses[std::size_t(35 + i)];
  CHECK(last < 0.8 * first);
}

TEST_CASE("trainer engines: a resumed run continues bit for bit", "[trainer][engines]") {
  const fixed_threads one(1);  // a fixed thread count, as resuming exactly needs in general
  const small_data d;
  progress_printer quiet(nullptr);
  const std::string path = temp_path("resume.ckpt");
  for (impl_kind k : {impl_kind::fused, impl_kind::unfused}) {
    auto whole = make(k, tiny_config(), 16, 3);
    INFO(whole->name());
    const run_result a = train(*whole, d.train, d.val, small_settings(1), quiet);
    REQUIRE(a.losses.size() == 10);

    auto first = make(k, tiny_config(), 16, 3);
    run_settings s1 = small_settings(1);
    s1.max_steps = 4;
    s1.save_path = path;
    const run_result b = train(*first, d.train, d.val, s1, quiet);

    auto second = make(k, tiny_config(), 16, 99);  // other initial weights: the checkpoint replaces them
    run_settings s2 = small_settings(1);
    s2.resume_path = path;
    const run_result c = train(*second, d.train, d.val, s2, quiet);
    CHECK(c.first_step == 4);
    std::vector<double> joined = b.losses;
    joined.insert(joined.end(), c.losses.begin(), c.losses.end());
    CHECK(joined == a.losses);
    CHECK(c.summary.val_accuracy == a.summary.val_accuracy);
    for (std::size_t i = 0; i < whole->parameters().size(); ++i)
      CHECK(whole->parameters()[i]->value == second->parameters()[i]->value);
  }
  std::filesystem::remove(path);
}
