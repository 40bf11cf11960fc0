// DenseNet-BC trainer: fused (BNFF) vs conventional (unfused) batch normalization.
// See README.md for what it fuses, how to run it and what it checks.
#include <cstdio>
#include <exception>
#include <string>

#include <bnff/parallel/parallel.hpp>

#include "checkpoint.hpp"
#include "cifar10.hpp"
#include "cli.hpp"
#include "data.hpp"
#include "network.hpp"
#include "progress.hpp"

namespace {

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

  const trainer::densenet net(o.model, o.batch, o.seed);
  std::printf("model: %s\n%s", o.model.canonical().c_str(), net.describe().c_str());
  std::printf("parameters: %llu; activation buffers shared by both implementations: %s\n",
              (unsigned long long)net.parameter_count(), trainer::format_bytes(net.activation_bytes()).c_str());

  if (!o.resume_path.empty()) {  // refuse a bad checkpoint before anything else
    const trainer::checkpoint c = trainer::read_checkpoint(o.resume_path);
    if (c.config != trainer::run_config_text(o))
      throw trainer::checkpoint_error("checkpoint '" + o.resume_path +
                                      "' was written by a different configuration:\n  checkpoint: " + c.config +
                                      "\n  this run:   " + trainer::run_config_text(o));
    std::printf("checkpoint '%s': step %llu\n", o.resume_path.c_str(), (unsigned long long)c.step);
  }

  // The fused and unfused engines are built on bnff's convolution kernels.
  std::fprintf(stderr,
               "bnff_densenet_trainer: training requires the bnff convolution kernels, which this build does not "
               "include yet (--impl %s)\n",
               trainer::impl_name(o.impl));
  return 3;
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
