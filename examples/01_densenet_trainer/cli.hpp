// The command line: flags, presets, strict value parsing and the usage text.
#pragma once

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "model_config.hpp"

namespace trainer {

enum class impl_kind { fused, unfused };

inline const char* impl_name(impl_kind k) { return k == impl_kind::fused ? "fused" : "unfused"; }

// Where the images come from.
struct data_source {
  enum kind_t { synthetic, cifar10 } kind = synthetic;
  std::string dir;  // cifar10 only
  std::string describe() const { return kind == synthetic ? "synthetic" : "cifar10:" + dir; }
};

struct options {
  bool help = false;
  std::string preset = "cifar-small";
  model_config model;
  bnff::index_t batch = 32;
  int epochs = 3;
  long long steps = 0;  // stop once the run's global step count reaches this; 0: no limit
  int threads = 0;      // 0: every available thread
  double lr = 0.1, momentum = 0.9, weight_decay = 1e-4;
  unsigned long long seed = 1;
  impl_kind impl = impl_kind::fused;
  bool compare = false;
  data_source data;
  long long train_images = 3000, val_images = 1000;  // synthetic data only
  std::string save_path, resume_path;
  bool print_step_losses = false;
  bool sync_bn = true;  // data-parallel runs only (mpirun -np P)
};

namespace detail {

inline long long parse_integer(const std::string& flag, const std::string& text, long long lo, long long hi) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || end != text.c_str() + text.size() || errno == ERANGE || text[0] == ' ')
    throw usage_error(flag + " expects an integer, got '" + text + "'");
  if (v < lo || v > hi)
    throw usage_error(flag + " must be in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " + text);
  return v;
}

inline double parse_real(const std::string& flag, const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || errno == ERANGE || !std::isfinite(v) || text[0] == ' ')
    throw usage_error(flag + " expects a finite number, got '" + text + "'");
  return v;
}

// "4,4,4" -> {4, 4, 4}
inline std::vector<bnff::index_t> parse_blocks(const std::string& text) {
  std::vector<bnff::index_t> out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t comma = text.find(',', start);
    const std::string part = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (part.empty())
      throw usage_error("--blocks expects comma-separated layer counts such as 4,4,4, got '" + text + "'");
    out.push_back(bnff::index_t(parse_integer("--blocks", part, 1, 128)));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (out.size() > 8) throw usage_error("--blocks allows at most 8 dense blocks, got '" + text + "'");
  return out;
}

}  // namespace detail

inline std::string usage(const std::string& program) {
  const options d;
  std::string presets_text;
  for (const auto& p : presets()) presets_text += std::string("      ") + p.name + ": " + p.summary + "\n";
  return "usage: " + program +
         " [options]\n"
         "\n"
         "Trains a DenseNet-BC with bnff's fused batch normalization (or the conventional\n"
         "unfused sequence) and reports validation accuracy, time per step and peak\n"
         "activation memory.\n"
         "\n"
         "Model (a preset sets them all; later flags override):\n"
         "  --preset NAME          cifar-small (default) or densenet121-block1\n" +
         presets_text +
         "  --blocks L1,L2,...     composite layers per dense block (cifar-small: 4,4,4)\n"
         "  --growth K             growth rate k (cifar-small: 12)\n"
         "  --compression F        transition compression in (0, 1] (default 0.5)\n"
         "  --image-size S         square input extent (cifar-small: 32)\n"
         "\n"
         "Training:\n"
         "  --batch N              images per step (cifar-small: 32, densenet121-block1: 16)\n"
         "  --epochs N             passes over the training set; sets the schedule (cifar-small: 3)\n"
         "  --steps N              stop when the run reaches N steps in total (default 0: no limit)\n"
         "  --lr F                 peak learning rate, cosine decay to 0 over all epochs (default 0.1)\n"
         "  --momentum F           SGD momentum in [0, 1) (default 0.9)\n"
         "  --weight-decay F       L2 weight decay on conv and FC weights (default 1e-4)\n"
         "  --seed N               seeds weights, data and batch order (default 1)\n"
         "  --threads N            threads, 0 for all available (default 0)\n"
         "  --impl fused|unfused   the implementation to train with (default fused)\n"
         "  --print-step-losses    print \"step N loss X\" after every step (X: the global batch's mean loss)\n"
         "  --compare              run both implementations from the same weights on the same\n"
         "                         batches; print both losses per step, their largest relative\n"
         "                         difference, the speedup and the activation memory of each\n"
         "                         (--steps N steps, default 20)\n"
         "\n"
         "Data:\n"
         "  --data synthetic       generated 10-class images, no download (default)\n"
         "  --data cifar10:DIR     CIFAR-10 binary version: DIR/data_batch_{1..5}.bin, DIR/test_batch.bin\n"
         "  --train-images N       synthetic training images (cifar-small: " +
         std::to_string(d.train_images) +
         ")\n"
         "  --val-images N         synthetic validation images (cifar-small: " +
         std::to_string(d.val_images) +
         ")\n"
         "\n"
         "Checkpoints:\n"
         "  --save PATH            write a checkpoint after every epoch, at the end and on Ctrl-C\n"
         "                         (atomically: an interrupted save keeps the previous file)\n"
         "  --resume PATH          continue a run from a checkpoint (same model and settings)\n"
         "\n"
         "Data-parallel (built with MPI; start with mpirun -np P):\n"
         "  each rank takes --batch / P images of every batch (--batch must divide by P);\n"
         "  gradients and the loss are averaged over the ranks; rank 0 prints and saves\n"
         "  --sync-bn              normalize with the statistics of the global batch and use its\n"
         "                         backward sums: the same steps as one process with --batch (default)\n"
         "  --no-sync-bn           each rank's BN uses its own shard's statistics\n"
         "\n"
         "  -h, --help             this text\n";
}

// Parses argv into options; throws usage_error with a one-line reason on any bad flag or value.
inline options parse_command_line(int argc, const char* const* argv) {
  std::vector<std::pair<std::string, std::string>> flags;  // in order, values split from --flag=value
  static const char* const valued[] = {
      "--preset", "--blocks",  "--growth", "--compression",  "--image-size",   "--batch", "--epochs",
      "--steps",  "--threads", "--lr",     "--momentum",     "--weight-decay", "--seed",  "--impl",
      "--data",   "--save",    "--resume", "--train-images", "--val-images"};
  auto takes_value = [&](const std::string& f) {
    for (const char* v : valued)
      if (f == v) return true;
    return false;
  };
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      options o;
      o.help = true;
      return o;
    }
    if (arg == "--compare" || arg == "--print-step-losses" || arg == "--sync-bn" || arg == "--no-sync-bn") {
      flags.emplace_back(arg, "");
      continue;
    }
    std::string value;
    bool has_value = false;
    if (const auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    if (!takes_value(arg)) {
      if (arg.rfind("-", 0) == 0) throw usage_error("unknown option '" + arg + "'");
      throw usage_error("unexpected argument '" + arg + "' (options start with --)");
    }
    if (!has_value) {
      if (i + 1 >= argc) throw usage_error("option '" + arg + "' needs a value");
      value = argv[++i];
    }
    flags.emplace_back(arg, value);
  }

  options o;
  for (const auto& [flag, value] : flags)  // the preset first, so that other flags override it
    if (flag == "--preset") o.preset = value;
  const preset* p = find_preset(o.preset);
  if (!p) throw usage_error("unknown preset '" + o.preset + "' (cifar-small or densenet121-block1)");
  o.model = p->model;
  o.batch = p->batch;
  o.epochs = p->epochs;
  o.train_images = p->train_images;
  o.val_images = p->val_images;

  using detail::parse_integer;
  using detail::parse_real;
  for (const auto& [flag, value] : flags) {
    if (flag == "--preset") continue;
    if (flag == "--compare")
      o.compare = true;
    else if (flag == "--print-step-losses")
      o.print_step_losses = true;
    else if (flag == "--sync-bn" || flag == "--no-sync-bn")
      o.sync_bn = flag == "--sync-bn";
    else if (flag == "--blocks")
      o.model.blocks = detail::parse_blocks(value);
    else if (flag == "--growth")
      o.model.growth = parse_integer(flag, value, 1, 1024);
    else if (flag == "--compression")
      o.model.compression = parse_real(flag, value);
    else if (flag == "--image-size")
      o.model.image_size = parse_integer(flag, value, 1, 1024);
    else if (flag == "--batch")
      o.batch = parse_integer(flag, value, 2, 1 << 16);
    else if (flag == "--epochs")
      o.epochs = int(parse_integer(flag, value, 1, 100000));
    else if (flag == "--steps")
      o.steps = parse_integer(flag, value, 0, 1LL << 40);
    else if (flag == "--threads")
      o.threads = int(parse_integer(flag, value, 0, 1024));
    else if (flag == "--lr")
      o.lr = parse_real(flag, value);
    else if (flag == "--momentum")
      o.momentum = parse_real(flag, value);
    else if (flag == "--weight-decay")
      o.weight_decay = parse_real(flag, value);
    else if (flag == "--seed")
      o.seed = static_cast<unsigned long long>(parse_integer(flag, value, 0, 1LL << 62));
    else if (flag == "--train-images")
      o.train_images = parse_integer(flag, value, 1, 1LL << 24);
    else if (flag == "--val-images")
      o.val_images = parse_integer(flag, value, 1, 1LL << 24);
    else if (flag == "--save")
      o.save_path = value;
    else if (flag == "--resume")
      o.resume_path = value;
    else if (flag == "--impl") {
      if (value == "fused")
        o.impl = impl_kind::fused;
      else if (value == "unfused")
        o.impl = impl_kind::unfused;
      else
        throw usage_error("--impl expects fused or unfused, got '" + value + "'");
    } else if (flag == "--data") {
      if (value == "synthetic")
        o.data = {};
      else if (value.rfind("cifar10:", 0) == 0 && value.size() > 8)
        o.data = {data_source::cifar10, value.substr(8)};
      else
        throw usage_error("--data expects synthetic or cifar10:DIR, got '" + value + "'");
    }
  }

  if (!(o.lr > 0)) throw usage_error("--lr must be > 0, got " + std::to_string(o.lr));
  if (!(o.momentum >= 0 && o.momentum < 1))
    throw usage_error("--momentum must be in [0, 1), got " + std::to_string(o.momentum));
  if (!(o.weight_decay >= 0)) throw usage_error("--weight-decay must be >= 0, got " + std::to_string(o.weight_decay));
  if (o.compare && !(o.save_path.empty() && o.resume_path.empty()))
    throw usage_error("--compare trains both implementations from fresh weights; it takes no --save or --resume");
  if (o.data.kind == data_source::cifar10 && o.model.image_size != 32)
    throw usage_error("--data cifar10 needs --image-size 32 (CIFAR-10 images are 32x32), got " +
                      std::to_string(o.model.image_size));
  o.model.validate();
  return o;
}

}  // namespace trainer

namespace trainer {

// Everything that decides a run's trajectory besides the thread count, in one
// line: a checkpoint records it and a resumed run must match it exactly.
// (--steps, --threads, --impl, --compare, --save and --resume may differ.)
inline std::string run_config_text(const options& o) {
  char hyper[160];
  std::snprintf(hyper, sizeof hyper, " lr=%.17g momentum=%.17g weight_decay=%.17g", o.lr, o.momentum, o.weight_decay);
  std::string data = o.data.describe();
  if (o.data.kind == data_source::synthetic)
    data += "(train=" + std::to_string(o.train_images) + ",val=" + std::to_string(o.val_images) + ")";
  return o.model.canonical() + " batch=" + std::to_string(o.batch) + " epochs=" + std::to_string(o.epochs) + hyper +
         " seed=" + std::to_string(o.seed) + " data=" + data;
}

}  // namespace trainer
