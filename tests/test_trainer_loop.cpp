// The training loop on a small model built from the trainer's own layers
// (2x2 average pooling + fully connected): the loss falls, a resumed run
// continues bit for bit, the comparison and the progress output work.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "../examples/01_densenet_trainer/trainer.hpp"

namespace fs = std::filesystem;
using namespace trainer;
using bnff::index_t;
using bnff::shape4;

namespace {

// logits = FC(avg_pool2x2(x)), plus a running mean of the pooled features as
// non-trained state (as BN running statistics are) to exercise checkpoints.
class pooled_linear_model : public model {
 public:
  pooled_linear_model(index_t batch, index_t size, std::uint64_t seed)
      : in_{batch, 3, size, size},
        pooled_{batch, 3, size / 2, size / 2},
        fc_{batch, 3 * (size / 2) * (size / 2), 10},
        x_(std::size_t(in_.size())),
        p_(std::size_t(pooled_.size())),
        dp_(std::size_t(pooled_.size())),
        logits_(std::size_t(batch * 10)) {
    params_.emplace_back("fc.weight", fc_.out * fc_.in, true);
    params_.emplace_back("fc.bias", fc_.out, false);
    he_normal(params_[0], fc_.in, seed, name_tag("fc.weight"));
    state_.push_back({"features.running_mean", std::vector<float>(std::size_t(fc_.in), 0.0f)});
  }
  std::string name() const override { return "pooled-linear"; }
  shape4 input_shape() const override { return in_; }
  index_t classes() const override { return 10; }
  float* input() override { return x_.data(); }
  const float* forward(bool training) override {
    avg_pool2x2_forward<float>(tensor_view<const float>(x_.data(), in_), tensor_view<float>(p_.data(), pooled_));
    fc_forward(fc_, p_.data(), params_[0].value.data(), params_[1].value.data(), logits_.data());
    if (training)
      for (index_t i = 0; i < fc_.in; ++i) {
        float m = 0;
        for (index_t n = 0; n < fc_.n; ++n) m += p_[std::size_t(n * fc_.in + i)];
        auto& r = state_[0].value[std::size_t(i)];
        r = 0.9f * r + 0.1f * m / float(fc_.n);
      }
    return logits_.data();
  }
  void backward(const float* d_logits) override {
    fc_backward(fc_, p_.data(), params_[0].value.data(), d_logits, dp_.data(), params_[0].grad.data(),
                params_[1].grad.data());
  }
  std::vector<parameter*> parameters() override { return {&params_[0], &params_[1]}; }
  std::vector<state_tensor*> state() override { return {&state_[0]}; }
  std::uint64_t activation_bytes() const override { return (x_.size() + p_.size()) * sizeof(float); }

 private:
  shape4 in_, pooled_;
  fc_shape fc_;
  std::vector<float> x_, p_, dp_, logits_;
  std::vector<parameter> params_;
  std::vector<state_tensor> state_;
};

struct fixture {
  dataset train = synthetic::make(120, 8, 3, 0), val = synthetic::make(40, 8, 3, 1);
  fixture() {
    const auto norm = channel_normalization::of(train);
    norm.apply(train);
    norm.apply(val);
  }
  run_settings settings() const {
    run_settings s;
    s.epochs = 3;  // 120 / 20 = 6 steps per epoch, 18 planned
    s.sgd = {0.05, 0.9, 1e-4};
    s.seed = 11;
    s.config = "pooled-linear test";
    return s;
  }
};

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("bnff_trainer_loop_" + std::to_string(::getpid()) + "_" + name)).string();
}

std::vector<float> all_tensors(model& m) {
  std::vector<float> out;
  for (const auto& t : checkpoint_tensors(m)) out.insert(out.end(), t.data, t.data + t.size);
  return out;
}

}  // namespace

TEST_CASE("training loop: the loss falls and the summary is filled in", "[trainer][loop]") {
  fixture f;
  pooled_linear_model m(20, 8, 1);
  progress_printer quiet(nullptr);
  const run_result r = train(m, f.train, f.val, f.settings(), quiet);
  REQUIRE(r.losses.size() == 18);
  double first = 0, last = 0;
  for (int i = 0; i < 6; ++i) first += r.losses[std::size_t(i)], last += r.losses[std::size_t(12 + i)];
  CHECK(last < 0.8 * first);
  CHECK(r.summary.steps == 18);
  CHECK(r.summary.implementation == "pooled-linear");
  CHECK(r.summary.val_accuracy >= 0.0);
  CHECK(r.summary.val_accuracy <= 1.0);
  CHECK(r.summary.median_step_seconds > 0);
  CHECK(r.summary.activation_bytes == m.activation_bytes());
  CHECK(!r.interrupted);
}

TEST_CASE("training loop: stop, save and resume continue the run bit for bit", "[trainer][loop]") {
  fixture f;
  progress_printer quiet(nullptr);
  const std::string path = temp_path("resume.ckpt");

  pooled_linear_model whole(20, 8, 1);
  const run_result a = train(whole, f.train, f.val, f.settings(), quiet);

  // Stop mid-epoch (step 8 of 18), in a run started from other weights ...
  pooled_linear_model first(20, 8, 1);
  run_settings s1 = f.settings();
  s1.max_steps = 8;
  s1.save_path = path;
  const run_result b = train(first, f.train, f.val, s1, quiet);
  REQUIRE(b.losses.size() == 8);

  // ... and continue in a fresh model whose own initialization the checkpoint replaces.
  pooled_linear_model second(20, 8, 999);
  run_settings s2 = f.settings();
  s2.resume_path = path;
  const run_result c = train(second, f.train, f.val, s2, quiet);
  CHECK(c.first_step == 8);
  REQUIRE(c.losses.size() == 10);

  std::vector<double> joined = b.losses;
  joined.insert(joined.end(), c.losses.begin(), c.losses.end());
  CHECK(joined == a.losses);  // exact: same arithmetic in the same order
  CHECK(all_tensors(second) == all_tensors(whole));
  CHECK(c.summary.val_accuracy == a.summary.val_accuracy);

  // A checkpoint of another configuration is refused and the model is untouched.
  pooled_linear_model third(20, 8, 5);
  const auto before = all_tensors(third);
  run_settings s3 = f.settings();
  s3.resume_path = path;
  s3.config = "pooled-linear other";
  CHECK_THROWS_WITH(train(third, f.train, f.val, s3, quiet), Catch::Contains("different configuration"));
  CHECK(all_tensors(third) == before);
  fs::remove(path);
}

TEST_CASE("training loop: a stop request ends the run after a save", "[trainer][loop]") {
  fixture f;
  progress_printer quiet(nullptr);
  const std::string path = temp_path("stop.ckpt");
  volatile std::sig_atomic_t stop = 1;
  pooled_linear_model m(20, 8, 1);
  run_settings s = f.settings();
  s.stop = &stop;
  s.save_path = path;
  const run_result r = train(m, f.train, f.val, s, quiet);
  CHECK(r.interrupted);
  CHECK(r.losses.empty());
  CHECK(read_checkpoint(path).step == 0);
  fs::remove(path);
}

TEST_CASE("training loop: a batch larger than the training set is refused", "[trainer][loop]") {
  fixture f;
  progress_printer quiet(nullptr);
  pooled_linear_model m(200, 8, 1);
  CHECK_THROWS_WITH(train(m, f.train, f.val, f.settings(), quiet),
                    Catch::Contains("batch (200 images) is larger than the training set (120 images)"));
}

TEST_CASE("evaluate: a last partial batch counts only real images", "[trainer][loop]") {
  fixture f;
  pooled_linear_model m(16, 8, 1);  // 40 validation images: 16 + 16 + 8
  const double acc = evaluate(m, f.val);
  // The same model evaluated on exactly the first 32 plus the last 8 alone.
  dataset head = f.val, tail = f.val;
  head.count = 32, head.labels.resize(32), head.images.resize(std::size_t(32 * f.val.image_elements()));
  tail.count = 8;
  tail.labels.erase(tail.labels.begin(), tail.labels.begin() + 32);
  tail.images.erase(tail.images.begin(), tail.images.begin() + 32 * f.val.image_elements());
  const double expect = (evaluate(m, head) * 32 + evaluate(m, tail) * 8) / 40;
  CHECK(acc == Approx(expect).epsilon(1e-12));
}

TEST_CASE("compare: identical models agree exactly and both are timed", "[trainer][loop]") {
  fixture f;
  progress_printer quiet(nullptr);
  pooled_linear_model a(20, 8, 1), b(20, 8, 2);  // b starts from a's weights
  const comparison c = compare(a, b, f.train, f.settings(), 8, quiet);
  REQUIRE(c.loss_a.size() == 8);
  CHECK(c.loss_a == c.loss_b);
  CHECK(c.max_relative_difference == 0.0);
  CHECK(c.median_seconds_a > 0);
  CHECK(c.speedup() > 0);
  CHECK(all_tensors(a) == all_tensors(b));
}

TEST_CASE("compare: the verdict says faster or slower, never a factor below 1", "[trainer][loop]") {
  comparison c;
  c.loss_a = c.loss_b = {1.0, 0.5};
  c.median_seconds_a = 0.080, c.median_seconds_b = 0.100;
  CHECK_THAT(format_comparison(c, 0, 0), Catch::Contains("fused 80.00 ms, unfused 100.00 ms: fused 1.25x faster"));
  c.median_seconds_a = 0.105;
  CHECK_THAT(format_comparison(c, 0, 0), Catch::Contains("fused 105.00 ms, unfused 100.00 ms: fused 1.05x slower"));
}

TEST_CASE("progress: plain lines off a terminal, one rewritten line on it", "[trainer][progress]") {
  fixture f;
  for (bool tty : {false, true}) {
    std::FILE* out = std::tmpfile();
    REQUIRE(out);
    progress_printer p(out, tty);
    pooled_linear_model m(20, 8, 1);
    run_settings s = f.settings();
    s.epochs = 2;
    train(m, f.train, f.val, s, p);
    std::rewind(out);
    std::string text;
    for (int ch; (ch = std::fgetc(out)) != EOF;) text += char(ch);
    std::fclose(out);
    INFO(text);
    CHECK_THAT(text, Catch::Contains("epoch 1/2") && Catch::Contains("step 12/12") && Catch::Contains("images/s") &&
                         Catch::Contains("ETA"));
    if (tty) {
      CHECK_THAT(text, Catch::Contains("\r") && Catch::Contains("  val "));
      CHECK(std::count(text.begin(), text.end(), '\n') == 2);  // one line per epoch
    } else {
      CHECK_THAT(text, !Catch::Contains("\r") && Catch::Contains("validation accuracy"));
      CHECK(std::count(text.begin(), text.end(), '\n') == 14);  // 6 step lines + 1 result per epoch
    }
  }
}

TEST_CASE("progress: formatting helpers", "[trainer][progress]") {
  CHECK(format_duration(1.25) == "1.2 s");
  CHECK(format_duration(125) == "2 min 05 s");
  CHECK(format_duration(3720) == "1 h 02 min");
  CHECK(format_bytes(3 * 1024 * 1024) == "3145728 bytes (3.0 MiB)");
  CHECK(median({3, 1, 2}) == 2);
  CHECK(median({4, 1, 3, 2}) == 2.5);
  CHECK(median({}) == 0);
  run_summary s{"fused", 0.9312, 100, 0.0123, 65, 3 * 1024 * 1024};
  const std::string text = format_summary(s);
  CHECK_THAT(text, Catch::Contains("93.12%") && Catch::Contains("12.30 ms") && Catch::Contains("3145728 bytes") &&
                       Catch::Contains("fused"));
}
