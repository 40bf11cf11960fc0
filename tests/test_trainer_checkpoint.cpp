// Checkpoint files: bitwise round trip, refusal of damaged or foreign files, atomic replacement.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "../examples/01_densenet_trainer/checkpoint.hpp"
#include "support/random.hpp"

namespace fs = std::filesystem;
using namespace trainer;

namespace {

// A fresh directory per test case, removed at the end.
struct temp_dir {
  fs::path path;
  explicit temp_dir(const std::string& tag) {
    path = fs::temp_directory_path() / ("bnff_trainer_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

std::vector<unsigned char> read_bytes(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
void write_bytes(const std::string& p, const std::vector<unsigned char>& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

template <class F>
std::string checkpoint_error_of(F&& f) {
  try {
    f();
  } catch (const checkpoint_error& e) {
    return e.what();
  }
  return "";
}

// Two tensors with awkward values (negative zero, denormal, infinity, NaN) that must survive bit for bit.
struct sample {
  std::vector<float> a = bnff::test::cast_vector<float>(bnff::test::random_vector(37, 7));
  std::vector<float> b{-0.0f, 1e-40f, std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                       3.5f};
  std::vector<tensor_ref> refs() {
    return {{"conv.weight", a.data(), a.size()}, {"bn.running_var", b.data(), b.size()}};
  }
};

const std::string config = "densenet-bc image=8 test";

}  // namespace

TEST_CASE("checkpoint: a save restores bit for bit", "[trainer][checkpoint]") {
  temp_dir dir("roundtrip");
  sample s;
  const std::string path = dir.file("run.ckpt");
  save_checkpoint(path, config, 1234, 99, s.refs());
  CHECK(!fs::exists(path + ".tmp"));

  const checkpoint c = read_checkpoint(path);
  CHECK(c.config == config);
  CHECK(c.step == 1234);
  CHECK(c.seed == 99);
  sample t;
  std::fill(t.a.begin(), t.a.end(), 0.0f);
  std::fill(t.b.begin(), t.b.end(), 0.0f);
  restore_checkpoint(c, path, config, t.refs());
  CHECK(std::memcmp(s.a.data(), t.a.data(), s.a.size() * 4) == 0);
  CHECK(std::memcmp(s.b.data(), t.b.data(), s.b.size() * 4) == 0);

  // The file is exactly header + body + checksum, little-endian: check the documented header fields.
  const auto bytes = read_bytes(path);
  CHECK(std::memcmp(bytes.data(), "BNFFCKPT", 8) == 0);
  CHECK(bytes[8] == 1);  // version 1, little-endian
  std::uint64_t body = 0;
  for (int i = 0; i < 8; ++i) body |= std::uint64_t(bytes[std::size_t(24 + i)]) << (8 * i);
  CHECK(bytes.size() == 32 + body + 8);
}

TEST_CASE("checkpoint: truncated, corrupt and foreign files are refused", "[trainer][checkpoint]") {
  temp_dir dir("refuse");
  sample s;
  const std::string good = dir.file("good.ckpt"), bad = dir.file("bad.ckpt");
  save_checkpoint(good, config, 5, 1, s.refs());
  const auto bytes = read_bytes(good);

  SECTION("missing") {
    CHECK_THAT(checkpoint_error_of([&] { read_checkpoint(dir.file("none.ckpt")); }),
               Catch::Contains("cannot open checkpoint") && Catch::Contains("none.ckpt"));
  }
  SECTION("truncated anywhere") {
    for (std::size_t keep :
         {std::size_t(0), std::size_t(5), std::size_t(31), std::size_t(40), bytes.size() / 2, bytes.size() - 1}) {
      INFO("kept " << keep << " of " << bytes.size() << " bytes");
      write_bytes(bad, std::vector<unsigned char>(bytes.begin(), bytes.begin() + std::ptrdiff_t(keep)));
      CHECK_THAT(checkpoint_error_of([&] { read_checkpoint(bad); }), Catch::Contains("truncated"));
    }
  }
  SECTION("one flipped bit anywhere in the body or checksum") {
    for (std::size_t at : {std::size_t(40), std::size_t(70), bytes.size() / 2, bytes.size() - 9, bytes.size() - 1}) {
      INFO("byte " << at);
      auto damaged = bytes;
      damaged[at] ^= 0x10;
      write_bytes(bad, damaged);
      CHECK_THAT(checkpoint_error_of([&] { read_checkpoint(bad); }), Catch::Contains("corrupt"));
    }
  }
  SECTION("not a checkpoint") {
    write_bytes(bad, std::vector<unsigned char>(100, 'x'));
    CHECK_THAT(checkpoint_error_of([&] { read_checkpoint(bad); }), Catch::Contains("not a bnff trainer checkpoint"));
  }
  SECTION("another format version") {
    auto other = bytes;
    other[8] = 2;
    write_bytes(bad, other);
    CHECK_THAT(checkpoint_error_of([&] { read_checkpoint(bad); }),
               Catch::Contains("format version 2") && Catch::Contains("reads version 1"));
  }
  SECTION("another configuration, a missing tensor, a wrong size; the model stays untouched") {
    const checkpoint c = read_checkpoint(good);
    sample t;
    const auto before_a = t.a;
    std::fill(t.a.begin(), t.a.end(), 42.0f);
    CHECK_THAT(checkpoint_error_of([&] { restore_checkpoint(c, good, "densenet-bc image=16 test", t.refs()); }),
               Catch::Contains("different configuration") && Catch::Contains("image=16") && Catch::Contains("image=8"));
    auto refs = t.refs();
    refs[1].name = "bn.running_mean";
    CHECK_THAT(checkpoint_error_of([&] { restore_checkpoint(c, good, config, refs); }),
               Catch::Contains("no tensor 'bn.running_mean'"));
    refs = t.refs();
    refs[1].size = 4;
    CHECK_THAT(checkpoint_error_of([&] { restore_checkpoint(c, good, config, refs); }),
               Catch::Contains("'bn.running_var' has 5 elements, this model needs 4"));
    for (float v : t.a) CHECK(v == 42.0f);
    (void)before_a;
  }
}

TEST_CASE("checkpoint: a failed save leaves the previous checkpoint intact", "[trainer][checkpoint]") {
  temp_dir dir("atomic");
  sample s;
  const std::string path = dir.file("run.ckpt");
  save_checkpoint(path, config, 10, 1, s.refs());
  const auto before = read_bytes(path);
  s.a[0] += 1.0f;  // a later state that the failing save tries to write

  SECTION("the temporary file cannot be created") {
    fs::create_directory(path + ".tmp");  // open(PATH.tmp) fails: it is a directory
    CHECK_THAT(checkpoint_error_of([&] { save_checkpoint(path, config, 20, 1, s.refs()); }),
               Catch::Contains("cannot write checkpoint") && Catch::Contains("unchanged"));
    CHECK(fs::is_directory(path + ".tmp"));  // never removes what it did not create
  }
  SECTION("the disk fills up while writing") {
    if (!fs::exists("/dev/full")) return;  // the device that fails every write with ENOSPC
    fs::create_symlink("/dev/full", path + ".tmp");
    CHECK_THAT(checkpoint_error_of([&] { save_checkpoint(path, config, 20, 1, s.refs()); }),
               Catch::Contains("cannot write checkpoint") && Catch::Contains("unchanged"));
    CHECK(!fs::exists(fs::symlink_status(path + ".tmp")));  // the partial temporary file is removed
  }
  CHECK(read_bytes(path) == before);
  CHECK(read_checkpoint(path).step == 10);

  // And a save that succeeds replaces it.
  fs::remove_all(path + ".tmp");
  save_checkpoint(path, config, 30, 1, s.refs());
  CHECK(read_checkpoint(path).step == 30);
}
