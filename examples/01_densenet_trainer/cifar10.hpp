// The CIFAR-10 binary version: data_batch_1.bin .. data_batch_5.bin (training)
// and test_batch.bin (validation). Each record is 1 label byte (0..9) followed by
// 3072 bytes of pixels, the red, green and blue 32x32 planes in row-major order.
#pragma once

#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "data.hpp"

namespace trainer::cifar10 {

constexpr bnff::index_t extent = 32, channels = 3, classes = 10;
constexpr std::size_t pixel_bytes = std::size_t(channels * extent * extent);  // 3072
constexpr std::size_t record_bytes = 1 + pixel_bytes;                         // 3073

// Reading the data failed: missing, truncated or malformed files.
class data_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Appends every record of one file to `out` (pixels scaled to [0, 1]).
inline void read_file(const std::string& path, dataset& out) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) throw data_error("cifar10: cannot open '" + path + "': " + std::strerror(errno));
  std::vector<unsigned char> bytes;
  unsigned char chunk[1 << 16];
  for (std::size_t got; (got = std::fread(chunk, 1, sizeof chunk, f.get())) > 0;)
    bytes.insert(bytes.end(), chunk, chunk + got);
  if (std::ferror(f.get())) throw data_error("cifar10: error reading '" + path + "'");
  if (bytes.empty()) throw data_error("cifar10: '" + path + "' is empty");
  if (bytes.size() % record_bytes != 0)
    throw data_error("cifar10: '" + path +
                     "' is truncated or not in the CIFAR-10 binary format: " + std::to_string(bytes.size()) +
                     " bytes is not a whole number of " + std::to_string(record_bytes) + "-byte records");
  const std::size_t records = bytes.size() / record_bytes;
  for (std::size_t r = 0; r < records; ++r)  // validate every label before growing `out`
    if (bytes[r * record_bytes] >= classes)
      throw data_error("cifar10: '" + path + "' record " + std::to_string(r) + ": label " +
                       std::to_string(int(bytes[r * record_bytes])) + " is outside 0..9");
  const bnff::index_t first = out.count, total = out.count + bnff::index_t(records);
  out.count = total;
  out.channels = channels, out.height = extent, out.width = extent;
  out.images.resize(std::size_t(total) * pixel_bytes);
  out.labels.resize(std::size_t(total));
  for (std::size_t r = 0; r < records; ++r) {
    const unsigned char* rec = bytes.data() + r * record_bytes;
    out.labels[std::size_t(first) + r] = rec[0];
    float* dst = out.images.data() + (std::size_t(first) + r) * pixel_bytes;
    for (std::size_t i = 0; i < pixel_bytes; ++i) dst[i] = float(rec[1 + i]) / 255.0f;
  }
}

struct splits {
  dataset train, val;
};

// Loads DIR/data_batch_{1..5}.bin and DIR/test_batch.bin, checking that all exist first.
inline splits load(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) throw data_error("cifar10: directory '" + dir + "' does not exist");
  if (!S_ISDIR(st.st_mode)) throw data_error("cifar10: '" + dir + "' is not a directory");
  std::vector<std::string> train_files;
  for (int i = 1; i <= 5; ++i) train_files.push_back(dir + "/data_batch_" + std::to_string(i) + ".bin");
  const std::string test_file = dir + "/test_batch.bin";
  std::string missing;
  for (const auto& f : train_files)
    if (::stat(f.c_str(), &st) != 0) missing += (missing.empty() ? "" : ", ") + f;
  if (::stat(test_file.c_str(), &st) != 0) missing += (missing.empty() ? "" : ", ") + test_file;
  if (!missing.empty())
    throw data_error("cifar10: missing " + missing +
                     " (expected the binary version: data_batch_1.bin .. data_batch_5.bin and test_batch.bin)");
  splits s;
  for (const auto& f : train_files) read_file(f, s.train);
  read_file(test_file, s.val);
  return s;
}

}  // namespace trainer::cifar10
