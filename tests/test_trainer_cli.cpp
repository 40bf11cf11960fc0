// The trainer's command line: presets, overrides, and a usage error for every bad input.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "../examples/01_densenet_trainer/cli.hpp"

using namespace trainer;

namespace {

options parse(std::vector<std::string> args) {
  std::vector<const char*> argv{"trainer"};
  for (const auto& a : args) argv.push_back(a.c_str());
  return parse_command_line(int(argv.size()), argv.data());
}

std::string usage_error_of(std::vector<std::string> args) {
  try {
    parse(std::move(args));
  } catch (const usage_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("cli: defaults are the cifar-small preset", "[trainer][cli]") {
  const options o = parse({});
  CHECK(!o.help);
  CHECK(o.preset == "cifar-small");
  CHECK(o.model.image_size == 32);
  CHECK(o.model.blocks == std::vector<bnff::index_t>{4, 4, 4});
  CHECK(o.model.growth == 12);
  CHECK(o.model.stem() == 24);
  CHECK(o.model.bottleneck() == 48);
  CHECK(o.model.compression == 0.5);
  CHECK(o.impl == impl_kind::fused);
  CHECK(!o.compare);
  CHECK(o.data.kind == data_source::synthetic);
  CHECK(o.steps == 0);
  CHECK(o.threads == 0);
}

TEST_CASE("cli: densenet121-block1 is DenseNet-121's first block", "[trainer][cli]") {
  const options o = parse({"--preset", "densenet121-block1"});
  CHECK(o.model.image_size == 56);
  CHECK(o.model.stem() == 64);
  CHECK(o.model.blocks == std::vector<bnff::index_t>{6});
  CHECK(o.model.growth == 32);
  CHECK(o.model.bottleneck() == 128);
  CHECK(o.batch == 16);
}

TEST_CASE("cli: every flag in both spellings, flags override the preset in any order", "[trainer][cli]") {
  const options o = parse({"--blocks=2,3",
                           "--growth",
                           "8",
                           "--compression",
                           "0.25",
                           "--image-size=16",
                           "--batch",
                           "10",
                           "--epochs",
                           "3",
                           "--steps",
                           "7",
                           "--threads=2",
                           "--lr",
                           "0.05",
                           "--momentum",
                           "0.8",
                           "--weight-decay",
                           "5e-4",
                           "--seed",
                           "42",
                           "--impl",
                           "unfused",
                           "--compare",
                           "--data",
                           "cifar10:/some/dir",
                           "--save",
                           "a.ckpt",
                           "--resume",
                           "b.ckpt",
                           "--train-images",
                           "100",
                           "--val-images",
                           "20",
                           "--image-size=32",
                           "--preset",
                           "cifar-small"});
  CHECK(o.model.blocks == std::vector<bnff::index_t>{2, 3});
  CHECK(o.model.growth == 8);
  CHECK(o.model.stem() == 16);
  CHECK(o.model.compression == 0.25);
  CHECK(o.model.image_size == 32);  // the last occurrence wins
  CHECK(o.batch == 10);
  CHECK(o.epochs == 3);
  CHECK(o.steps == 7);
  CHECK(o.threads == 2);
  CHECK(o.lr == 0.05);
  CHECK(o.momentum == 0.8);
  CHECK(o.weight_decay == 5e-4);
  CHECK(o.seed == 42);
  CHECK(o.impl == impl_kind::unfused);
  CHECK(o.compare);
  CHECK(o.data.kind == data_source::cifar10);
  CHECK(o.data.dir == "/some/dir");
  CHECK(o.save_path == "a.ckpt");
  CHECK(o.resume_path == "b.ckpt");
  CHECK(o.train_images == 100);
  CHECK(o.val_images == 20);
}

TEST_CASE("cli: --help wins and the usage text names every flag with its default", "[trainer][cli]") {
  CHECK(parse({"--batch", "3", "--help"}).help);
  CHECK(parse({"-h"}).help);
  const std::string text = usage("trainer");
  for (const char* flag : {"--preset",     "--blocks",    "--growth",           "--compression",
                           "--image-size", "--batch",     "--epochs",           "--steps",
                           "--threads",    "--lr",        "--momentum",         "--weight-decay",
                           "--seed",       "--impl",      "--compare",          "--data",
                           "--save",       "--resume",    "--train-images",     "--val-images",
                           "--help",       "cifar-small", "densenet121-block1", "cifar10:DIR"})
    CHECK_THAT(text, Catch::Contains(flag));
  CHECK_THAT(text, Catch::Contains("default 0.1"));
}

TEST_CASE("cli: bad input is a usage error naming the problem", "[trainer][cli]") {
  struct bad {
    std::vector<std::string> args;
    const char* message;
  };
  const std::vector<bad> cases{
      {{"--bogus"}, "unknown option '--bogus'"},
      {{"stray"}, "unexpected argument 'stray'"},
      {{"--batch"}, "'--batch' needs a value"},
      {{"--batch", "ten"}, "--batch expects an integer, got 'ten'"},
      {{"--batch", "12abc"}, "--batch expects an integer"},
      {{"--batch", "1"}, "--batch must be in 2.."},
      {{"--batch", "99999999999999999999999"}, "--batch expects an integer"},
      {{"--epochs", "0"}, "--epochs must be in 1.."},
      {{"--steps", "-3"}, "--steps must be in 0.."},
      {{"--threads", "-1"}, "--threads must be in 0.."},
      {{"--growth", "0"}, "--growth must be in 1.."},
      {{"--lr", "0"}, "--lr must be > 0"},
      {{"--lr", "nan"}, "--lr expects a finite number"},
      {{"--lr", "1e999"}, "--lr expects a finite number"},
      {{"--lr", ""}, "--lr expects a finite number, got ''"},
      {{"--momentum", "1"}, "--momentum must be in [0, 1)"},
      {{"--weight-decay", "-1e-4"}, "--weight-decay must be >= 0"},
      {{"--compression", "0"}, "--compression must be in (0, 1]"},
      {{"--compression", "1.5"}, "--compression must be in (0, 1]"},
      {{"--blocks", ""}, "--blocks expects comma-separated layer counts"},
      {{"--blocks", "4,,4"}, "--blocks expects comma-separated layer counts"},
      {{"--blocks", "4,x"}, "--blocks expects an integer, got 'x'"},
      {{"--blocks", "4,0"}, "--blocks must be in 1..128"},
      {{"--blocks", "1,1,1,1,1,1,1,1,1"}, "at most 8 dense blocks"},
      {{"--image-size", "4", "--blocks", "1,1,1,1"}, "too small for 4 dense blocks"},
      {{"--impl", "both"}, "--impl expects fused or unfused, got 'both'"},
      {{"--data", "imagenet"}, "--data expects synthetic or cifar10:DIR"},
      {{"--data", "cifar10:"}, "--data expects synthetic or cifar10:DIR"},
      {{"--data", "cifar10:/x", "--image-size", "16"}, "needs --image-size 32"},
      {{"--preset", "resnet50"}, "unknown preset 'resnet50'"},
      {{"--seed", "-1"}, "--seed must be in 0.."},
  };
  for (const auto& c : cases) {
    std::string joined;
    for (const auto& a : c.args) joined += a + " ";
    INFO("arguments: " << joined);
    CHECK_THAT(usage_error_of(c.args), Catch::Contains(c.message));
  }
}

TEST_CASE("cli: the run configuration text records what decides the trajectory", "[trainer][cli]") {
  const options a = parse({});
  CHECK(run_config_text(a) == run_config_text(parse({"--steps", "5", "--threads", "1", "--impl", "unfused", "--save",
                                                     "x", "--resume", "y", "--compare"})));
  for (const auto& change : std::vector<std::vector<std::string>>{{"--seed", "2"},
                                                                  {"--batch", "32"},
                                                                  {"--epochs", "5"},
                                                                  {"--lr", "0.2"},
                                                                  {"--growth", "16"},
                                                                  {"--train-images", "100"},
                                                                  {"--data", "cifar10:d"}}) {
    INFO(change[0]);
    CHECK(run_config_text(a) != run_config_text(parse(change)));
  }
}
