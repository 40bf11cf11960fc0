// Training data: the generated set (deterministic, balanced, not trivial), the
// CIFAR-10 binary reader on generated files, normalization and batch order.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "../examples/01_densenet_trainer/cifar10.hpp"
#include "../examples/01_densenet_trainer/data.hpp"

namespace fs = std::filesystem;
using namespace trainer;
using bnff::index_t;

TEST_CASE("synthetic data: deterministic from the seed, splits differ, prefixes are stable", "[trainer][data]") {
  const dataset a = synthetic::make(40, 16, 7, 0), b = synthetic::make(40, 16, 7, 0);
  CHECK(a.images == b.images);
  CHECK(a.labels == b.labels);
  CHECK(a.count == 40);
  CHECK(a.channels == 3);
  CHECK(a.height == 16);
  CHECK(a.width == 16);
  CHECK(a.images != synthetic::make(40, 16, 8, 0).images);  // another seed
  CHECK(a.images != synthetic::make(40, 16, 7, 1).images);  // the validation split
  const dataset longer = synthetic::make(60, 16, 7, 0);
  CHECK(std::equal(a.images.begin(), a.images.end(), longer.images.begin()));
  for (float v : a.images) REQUIRE(std::isfinite(v));
}

TEST_CASE("synthetic data: classes balanced to within one image", "[trainer][data]") {
  for (index_t count : {10, 37, 200}) {
    const dataset d = synthetic::make(count, 8, 1, 0);
    std::vector<index_t> per_class(10, 0);
    for (auto l : d.labels) {
      REQUIRE(l >= 0);
      REQUIRE(l < 10);
      ++per_class[std::size_t(l)];
    }
    const auto [lo, hi] = std::minmax_element(per_class.begin(), per_class.end());
    CHECK(*hi - *lo <= 1);
    CHECK(*lo == count / 10);
  }
}

TEST_CASE("synthetic data: not trivial, images of one class differ and mean colour does not give the class away",
          "[trainer][data]") {
  const index_t n = 400, size = 16, plane = size * size;
  const dataset d = synthetic::make(n, size, 3, 0);
  // Mean RGB per image; a nearest-class-centroid classifier on it should be near chance (10%).
  std::vector<std::array<double, 3>> colour(static_cast<std::size_t>(n));
  std::vector<std::array<double, 3>> centroid(10, {0, 0, 0});
  for (index_t i = 0; i < n; ++i)
    for (index_t c = 0; c < 3; ++c) {
      double s = 0;
      for (index_t p = 0; p < plane; ++p) s += d.image(i)[c * plane + p];
      colour[std::size_t(i)][std::size_t(c)] = s / double(plane);
      centroid[std::size_t(d.labels[std::size_t(i)])][std::size_t(c)] += s / double(plane) / double(n / 10);
    }
  index_t correct = 0;
  for (index_t i = 0; i < n; ++i) {
    int best = 0;
    double best_d = 1e300;
    for (int k = 0; k < 10; ++k) {
      double dist = 0;
      for (int c = 0; c < 3; ++c)
        dist += std::pow(colour[std::size_t(i)][std::size_t(c)] - centroid[std::size_t(k)][std::size_t(c)], 2);
      if (dist < best_d) best_d = dist, best = k;
    }
    correct += best == d.labels[std::size_t(i)];
  }
  // Chance is 40 of 400 (fitted on the same images, so a little above); a colour code would be near 400.
  CHECK(correct < 100);
  // Two images of the same class are different images.
  CHECK(!std::equal(d.image(0), d.image(0) + d.image_elements(), d.image(10)));
}

TEST_CASE("normalization: the training split gets zero mean and unit variance per channel", "[trainer][data]") {
  dataset d = synthetic::make(50, 8, 2, 0);
  const auto norm = channel_normalization::of(d);
  norm.apply(d);
  const auto after = channel_normalization::of(d);
  for (int c = 0; c < 3; ++c) {
    // float storage of values ~1: the recomputed moments are exact to ~1e-6.
    CHECK(after.mean[std::size_t(c)] == Approx(0.0).margin(1e-5));
    CHECK(after.stddev[std::size_t(c)] == Approx(1.0).epsilon(1e-5));
  }
}

TEST_CASE("batch order: a permutation from (seed, epoch), gathered exactly", "[trainer][data]") {
  const auto a = epoch_order(100, 5, 0), b = epoch_order(100, 5, 0), c = epoch_order(100, 5, 1);
  CHECK(a == b);
  CHECK(a != c);
  CHECK(a != epoch_order(100, 6, 0));
  std::vector<index_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (index_t i = 0; i < 100; ++i) REQUIRE(sorted[std::size_t(i)] == i);

  const dataset d = synthetic::make(100, 4, 1, 0);
  std::vector<float> images(std::size_t(3 * d.image_elements()));
  std::vector<std::int32_t> labels(3);
  gather_batch(d, a, 10, 3, images.data(), labels.data());
  for (index_t k = 0; k < 3; ++k) {
    const index_t src = a[std::size_t(10 + k)];
    CHECK(labels[std::size_t(k)] == d.labels[std::size_t(src)]);
    CHECK(std::equal(d.image(src), d.image(src) + d.image_elements(), images.begin() + k * d.image_elements()));
  }
}

namespace {

struct cifar_dir {
  fs::path path;
  cifar_dir() {
    path = fs::temp_directory_path() / ("bnff_trainer_cifar_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~cifar_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  // `records` records whose label is (file * 7 + r) % 10 and whose pixel i is (r + i + file) % 256.
  void write(const std::string& name, int file, int records, int bad_label_at = -1, std::size_t drop_bytes = 0) const {
    std::vector<unsigned char> bytes;
    for (int r = 0; r < records; ++r) {
      bytes.push_back(static_cast<unsigned char>(r == bad_label_at ? 10 : (file * 7 + r) % 10));
      for (int i = 0; i < 3072; ++i) bytes.push_back(static_cast<unsigned char>((r + i + file) % 256));
    }
    bytes.resize(bytes.size() - drop_bytes);
    std::ofstream(path / name, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  }
  void write_all(int records) const {
    for (int f = 1; f <= 5; ++f) write("data_batch_" + std::to_string(f) + ".bin", f, records);
    write("test_batch.bin", 0, records);
  }
  std::string str() const { return path.string(); }
};

std::string data_error_of(const std::string& dir) {
  try {
    cifar10::load(dir);
  } catch (const cifar10::data_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("cifar10: reads generated files in the binary format", "[trainer][data]") {
  cifar_dir dir;
  dir.write_all(3);
  const auto s = cifar10::load(dir.str());
  REQUIRE(s.train.count == 15);
  REQUIRE(s.val.count == 3);
  CHECK(s.train.channels == 3);
  CHECK(s.train.height == 32);
  CHECK(s.train.width == 32);
  for (int f = 1; f <= 5; ++f)
    for (int r = 0; r < 3; ++r) {
      const index_t i = (f - 1) * 3 + r;
      INFO("file " << f << " record " << r);
      CHECK(s.train.labels[std::size_t(i)] == (f * 7 + r) % 10);
      // Planar RGB: pixel (c, y, x) is byte 1 + c * 1024 + y * 32 + x of the record.
      for (int c : {0, 2})
        for (int yx : {0, 33, 1023}) {
          const int byte = c * 1024 + yx;
          CHECK(s.train.image(i)[byte] == float((r + byte + f) % 256) / 255.0f);
        }
    }
  CHECK(s.val.labels[2] == 2);
  CHECK(s.val.image(1)[5] == float(1 + 5) / 255.0f);
}

TEST_CASE("cifar10: missing, truncated and malformed data are refused clearly", "[trainer][data]") {
  cifar_dir dir;
  SECTION("missing directory") {
    CHECK_THAT(data_error_of(dir.str() + "/nowhere"),
               Catch::Contains("directory") && Catch::Contains("does not exist"));
  }
  SECTION("missing files are all named") {
    dir.write_all(1);
    fs::remove(dir.path / "data_batch_4.bin");
    fs::remove(dir.path / "test_batch.bin");
    const std::string e = data_error_of(dir.str());
    CHECK_THAT(e,
               Catch::Contains("missing") && Catch::Contains("data_batch_4.bin") && Catch::Contains("test_batch.bin"));
    CHECK_THAT(e, !Catch::Contains("data_batch_3.bin"));
  }
  SECTION("a truncated file") {
    dir.write_all(2);
    dir.write("data_batch_2.bin", 2, 2, -1, 100);
    CHECK_THAT(data_error_of(dir.str()),
               Catch::Contains("data_batch_2.bin") && Catch::Contains("truncated") && Catch::Contains("6046 bytes"));
  }
  SECTION("an empty file") {
    dir.write_all(2);
    dir.write("test_batch.bin", 0, 0);
    CHECK_THAT(data_error_of(dir.str()), Catch::Contains("test_batch.bin") && Catch::Contains("empty"));
  }
  SECTION("a label outside 0..9") {
    dir.write_all(2);
    dir.write("data_batch_5.bin", 5, 4, 3);
    CHECK_THAT(data_error_of(dir.str()),
               Catch::Contains("data_batch_5.bin") && Catch::Contains("record 3") && Catch::Contains("label 10"));
  }
  SECTION("not a directory") {
    dir.write("plain.bin", 0, 1);
    CHECK_THAT(data_error_of((dir.path / "plain.bin").string()), Catch::Contains("not a directory"));
  }
}
