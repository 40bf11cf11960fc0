// DenseNet-BC trainer: fused (BNFF) vs conventional (unfused) batch normalization.
// See README.md for what it fuses, how to run it and what it checks.
#include <csignal>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>

#include <bnff/parallel/parallel.hpp>

#include "checkpoint.hpp"
#include "cifar10.hpp"
#include "cli.hpp"
#include "data.hpp"
#include "engines.hpp"
#include "network.hpp"
#include "progress.hpp"
#include "trainer.hpp"

namespace {

// --compare without --steps: enough steps for a stable median and the loss-agreement check.
constexpr std::uint64_t default_compare_steps = 20;

// Set by SIGINT: the loop finishes its current step, saves (with --save) and returns.
volatile std::sig_atomic_t stop_requested = 0;
extern "C" void on_sigint(int) { stop_requested = 1; }

struct data_splits {
  trainer::dataset train, val;
};

data_splits load_data(const trainer::options& o) {
  data_splits d;
  if (o.data.kind == trainer::data_source::cifar10) {
    auto s = trainer::cifar10::load(o.data.dir);
    d.train = std::move(s.train), d.val = std::move(s.val);
  } else {
    d.train = trainer::synthetic::make(bnff::index_t(o.train_images), o.model.image_size, o.seed, 0);
    d.val = trainer::synthetic::make(bnff::index_t(o.val_images), o.model.image_size, o.seed, 1);
  }
  const auto norm = trainer::channel_normalization::of(d.train);
  norm.apply(d.train);
  norm.apply(d.val);
  return d;
}

int run(const trainer::options& o) {
  bnff::set_num_threads(o.threads);
  std::printf("bnff densenet trainer: preset %s, %s, %d thread(s)\n", o.preset.c_str(),
              o.compare ? "compare fused vs unfused" : trainer::impl_name(o.impl), bnff::max_threads());

  const data_splits data = load_data(o);
  std::printf("data: %s, %lld training and %lld validation images of %lldx%lld\n", o.data.describe().c_str(),
              (long long)data.train.count, (long long)data.val.count, (long long)data.train.height,
              (long long)data.train.width);
  trainer::steps_per_epoch(data.train, o.batch);  // refuses a batch larger than the training set

  const auto make_model = [&](trainer::impl_kind k) {
    return std::make_unique<trainer::densenet_model>(o.model, o.batch, o.seed, trainer::make_engine(k));
  };
  std::unique_ptr<trainer::densenet_model> model = make_model(o.impl);
  const trainer::densenet& net = model->network();
  std::printf("model: %s\n%s", o.model.canonical().c_str(), net.describe().c_str());
  std::printf("parameters: %llu; activation buffers shared by both implementations: %s\n",
              (unsigned long long)net.parameter_count(), trainer::format_bytes(net.activation_bytes()).c_str());

  trainer::run_settings s;
  s.epochs = o.epochs;
  s.max_steps = std::uint64_t(o.steps);
  s.sgd = {o.lr, o.momentum, o.weight_decay};
  s.seed = o.seed;
  s.config = trainer::run_config_text(o);
  s.save_path = o.save_path;
  s.resume_path = o.resume_path;
  s.stop = &stop_requested;
  std::signal(SIGINT, on_sigint);
  trainer::progress_printer progress(stdout);

  if (o.compare) {
    // The fused model is `model`; the unfused one starts from its weights (compare copies them).
    std::unique_ptr<trainer::densenet_model> other =
        make_model(o.impl == trainer::impl_kind::fused ? trainer::impl_kind::unfused : trainer::impl_kind::fused);
    trainer::densenet_model& fused = o.impl == trainer::impl_kind::fused ? *model : *other;
    trainer::densenet_model& unfused = o.impl == trainer::impl_kind::fused ? *other : *model;
    const std::uint64_t steps = o.steps > 0 ? std::uint64_t(o.steps) : default_compare_steps;
    std::printf("comparing fused and unfused for %llu steps from the same weights on the same batches\n",
                (unsigned long long)steps);
    const trainer::comparison c = trainer::compare(fused, unfused, data.train, s, steps, progress);
    std::fputs(trainer::format_comparison(c, fused.scratch_bytes(), unfused.scratch_bytes()).c_str(), stdout);
    if (stop_requested) {
      std::printf("interrupted after %zu steps\n", c.loss_a.size());
      return 130;
    }
    return 0;
  }

  const trainer::run_result r = trainer::train(*model, data.train, data.val, s, progress);
  std::fputs(trainer::format_summary(r.summary).c_str(), stdout);
  return r.interrupted ? 130 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string program = argc > 0 ? argv[0] : "bnff_densenet_trainer";
  try {
    const trainer::options o = trainer::parse_command_line(argc, argv);
    if (o.help) {
      std::fputs(trainer::usage(program).c_str(), stdout);
      return 0;
    }
    return run(o);
  } catch (const trainer::usage_error& e) {
    std::fprintf(stderr, "%s: error: %s\nrun '%s --help' for usage\n", program.c_str(), e.what(), program.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", program.c_str(), e.what());
    return 1;
  }
}
