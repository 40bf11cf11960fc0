// Checkpoints: everything a run needs to continue exactly where it stopped.
//
// File layout (all integers little-endian, floats IEEE-754 binary32 little-endian):
//   offset 0   8 bytes  magic "BNFFCKPT"
//          8   u32      format version (1)
//         12   u32      0 (reserved)
//         16   u64      fingerprint: FNV-1a 64 of the run configuration text
//         24   u64      body size B in bytes
//         32   B bytes  body:
//                         u32 length + bytes   run configuration text (shown when it mismatches)
//                         u64 step             training steps completed
//                         u64 seed             seeds the data order of every epoch (see data.hpp)
//                         u32 tensor count, then per tensor:
//                           u32 length + bytes name;  u64 element count;  count x f32
//     32 + B   u64      FNV-1a 64 of every byte before it
// The data order of epoch e is a function of (seed, e), so (step, seed) is the
// whole data-order state; parameters, momentum buffers and BN running statistics
// are the tensors. The file is written to PATH.tmp, synced, then renamed over
// PATH, so a save that fails or is interrupted leaves the previous file intact.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace trainer {

class checkpoint_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

constexpr char checkpoint_magic[8] = {'B', 'N', 'F', 'F', 'C', 'K', 'P', 'T'};
constexpr std::uint32_t checkpoint_version = 1;
constexpr std::size_t checkpoint_header_bytes = 32, checkpoint_trailer_bytes = 8;

// FNV-1a 64: a checksum against corruption, not against tampering.
inline std::uint64_t fnv1a64(const unsigned char* data, std::size_t size,
                             std::uint64_t h = 0xcbf29ce484222325ull) noexcept {
  for (std::size_t i = 0; i < size; ++i) h = (h ^ data[i]) * 0x100000001b3ull;
  return h;
}
inline std::uint64_t fnv1a64(const std::string& s) noexcept {
  return fnv1a64(reinterpret_cast<const unsigned char*>(s.data()), s.size());
}

// A tensor to save or restore, over the caller's memory.
struct tensor_ref {
  std::string name;
  float* data;
  std::size_t size;
};

// A checkpoint read from disk and verified (magic, version, size, checksum).
struct checkpoint {
  std::string config;
  std::uint64_t step = 0, seed = 0;
  struct tensor {
    std::string name;
    std::vector<float> data;
  };
  std::vector<tensor> tensors;
};

namespace detail {

class byte_writer {
 public:
  std::vector<unsigned char> bytes;
  void u32(std::uint32_t v) {
    for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<unsigned char>(v >> (8 * i)));
  }
  void u64(std::uint64_t v) {
    for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<unsigned char>(v >> (8 * i)));
  }
  void text(const std::string& s) {
    u32(std::uint32_t(s.size()));
    bytes.insert(bytes.end(), s.begin(), s.end());
  }
  void f32s(const float* p, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      std::uint32_t v;
      std::memcpy(&v, p + i, 4);
      u32(v);
    }
  }
};

// Reads from a verified buffer; running past its end means the body is malformed.
class byte_reader {
 public:
  byte_reader(const unsigned char* p, std::size_t n, const std::string& path) : p_(p), n_(n), path_(path) {}
  std::uint32_t u32() {
    need(4);
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= std::uint32_t(p_[pos_ + std::size_t(i)]) << (8 * i);
    pos_ += 4;
    return v;
  }
  std::uint64_t u64() {
    need(8);
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= std::uint64_t(p_[pos_ + std::size_t(i)]) << (8 * i);
    pos_ += 8;
    return v;
  }
  std::string text() {
    const std::uint32_t len = u32();
    need(len);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len;
    return s;
  }
  void f32s(std::vector<float>& out, std::uint64_t n) {
    if (n > (n_ - pos_) / 4) malformed();
    out.resize(std::size_t(n));
    for (auto& x : out) {
      const std::uint32_t v = u32();
      std::memcpy(&x, &v, 4);
    }
  }
  bool done() const noexcept { return pos_ == n_; }
  [[noreturn]] void malformed() const {
    throw checkpoint_error("checkpoint '" + path_ + "' is corrupt: its contents end early or are malformed");
  }

 private:
  void need(std::size_t k) const {
    if (k > n_ - pos_) malformed();
  }
  const unsigned char* p_;
  std::size_t n_, pos_ = 0;
  const std::string& path_;
};

inline std::string errno_text() { return std::strerror(errno); }

// Writes all bytes to fd, retrying short writes.
inline bool write_all(int fd, const unsigned char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w, n -= std::size_t(w);
  }
  return true;
}

}  // namespace detail

// Serializes a checkpoint into its file image (header, body, checksum).
inline std::vector<unsigned char> encode_checkpoint(const std::string& config, std::uint64_t step, std::uint64_t seed,
                                                    const std::vector<tensor_ref>& tensors) {
  detail::byte_writer body;
  body.text(config);
  body.u64(step);
  body.u64(seed);
  body.u32(std::uint32_t(tensors.size()));
  for (const auto& t : tensors) {
    body.text(t.name);
    body.u64(t.size);
    body.f32s(t.data, t.size);
  }
  detail::byte_writer file;
  file.bytes.insert(file.bytes.end(), checkpoint_magic, checkpoint_magic + 8);
  file.u32(checkpoint_version);
  file.u32(0);
  file.u64(fnv1a64(config));
  file.u64(body.bytes.size());
  file.bytes.insert(file.bytes.end(), body.bytes.begin(), body.bytes.end());
  file.u64(fnv1a64(file.bytes.data(), file.bytes.size()));
  return file.bytes;
}

// Writes `bytes` to `path` atomically: PATH.tmp, fsync, rename, fsync of the directory.
inline void write_file_atomically(const std::string& path, const std::vector<unsigned char>& bytes) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    throw checkpoint_error("cannot write checkpoint: opening '" + tmp + "' failed: " + detail::errno_text() + " ('" +
                           path + "' is unchanged)");
  const bool written = detail::write_all(fd, bytes.data(), bytes.size()) && ::fsync(fd) == 0;
  const int saved_errno = errno;
  const bool closed = ::close(fd) == 0;
  if (!written || !closed) {
    ::unlink(tmp.c_str());
    errno = written ? errno : saved_errno;
    throw checkpoint_error("cannot write checkpoint '" + tmp + "': " + detail::errno_text() + " ('" + path +
                           "' is unchanged)");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = detail::errno_text();
    ::unlink(tmp.c_str());
    throw checkpoint_error("cannot replace checkpoint '" + path + "' with '" + tmp + "': " + why);
  }
  // Make the rename itself durable.
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

inline void save_checkpoint(const std::string& path, const std::string& config, std::uint64_t step, std::uint64_t seed,
                            const std::vector<tensor_ref>& tensors) {
  write_file_atomically(path, encode_checkpoint(config, step, seed, tensors));
}

// Reads and verifies a checkpoint file: refuses missing, truncated, corrupt and
// other-version files with a message naming the file and the problem.
inline checkpoint read_checkpoint(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) throw checkpoint_error("cannot open checkpoint '" + path + "': " + detail::errno_text());
  std::vector<unsigned char> bytes;
  unsigned char chunk[1 << 16];
  for (std::size_t got; (got = std::fread(chunk, 1, sizeof chunk, f.get())) > 0;)
    bytes.insert(bytes.end(), chunk, chunk + got);
  if (std::ferror(f.get())) throw checkpoint_error("error reading checkpoint '" + path + "'");

  const std::string name = "checkpoint '" + path + "'";
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), checkpoint_magic, 8) != 0)
    throw checkpoint_error(name + " is not a bnff trainer checkpoint (bad magic)");
  if (bytes.size() < checkpoint_header_bytes + checkpoint_trailer_bytes)
    throw checkpoint_error(name + " is truncated: " + std::to_string(bytes.size()) + " bytes, less than a header");
  detail::byte_reader header(bytes.data(), checkpoint_header_bytes, path);
  header.u64();  // magic, checked above
  const std::uint32_t version = header.u32();
  if (version != checkpoint_version)
    throw checkpoint_error(name + " has format version " + std::to_string(version) + "; this program reads version " +
                           std::to_string(checkpoint_version));
  header.u32();
  const std::uint64_t fingerprint = header.u64();
  const std::uint64_t body_size = header.u64();
  const std::uint64_t expected = checkpoint_header_bytes + body_size + checkpoint_trailer_bytes;
  if (body_size > bytes.size() || bytes.size() != expected)
    throw checkpoint_error(name + " is truncated or has trailing data: " + std::to_string(bytes.size()) +
                           " bytes, the header says " + std::to_string(expected));
  detail::byte_reader trailer(bytes.data() + bytes.size() - 8, 8, path);
  if (trailer.u64() != fnv1a64(bytes.data(), bytes.size() - 8))
    throw checkpoint_error(name + " is corrupt (checksum mismatch)");

  checkpoint c;
  detail::byte_reader body(bytes.data() + checkpoint_header_bytes, std::size_t(body_size), path);
  c.config = body.text();
  if (fnv1a64(c.config) != fingerprint) body.malformed();
  c.step = body.u64();
  c.seed = body.u64();
  const std::uint32_t count = body.u32();
  for (std::uint32_t i = 0; i < count; ++i) {
    checkpoint::tensor t;
    t.name = body.text();
    const std::uint64_t n = body.u64();
    body.f32s(t.data, n);
    c.tensors.push_back(std::move(t));
  }
  if (!body.done()) body.malformed();
  return c;
}

// Copies a verified checkpoint into the run's tensors, after checking that it was
// written by the same configuration and holds every tensor with the right size.
// Nothing is modified unless everything matches.
inline void restore_checkpoint(const checkpoint& c, const std::string& path, const std::string& config,
                               const std::vector<tensor_ref>& tensors) {
  const std::string name = "checkpoint '" + path + "'";
  if (c.config != config)
    throw checkpoint_error(name + " was written by a different configuration:\n  checkpoint: " + c.config +
                           "\n  this run:   " + config);
  if (c.tensors.size() != tensors.size())
    throw checkpoint_error(name + " holds " + std::to_string(c.tensors.size()) + " tensors, this model has " +
                           std::to_string(tensors.size()));
  std::vector<const checkpoint::tensor*> source(tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    for (const auto& t : c.tensors)
      if (t.name == tensors[i].name) source[i] = &t;
    if (!source[i]) throw checkpoint_error(name + " has no tensor '" + tensors[i].name + "'");
    if (source[i]->data.size() != tensors[i].size)
      throw checkpoint_error(name + ": tensor '" + tensors[i].name + "' has " + std::to_string(source[i]->data.size()) +
                             " elements, this model needs " + std::to_string(tensors[i].size));
  }
  for (std::size_t i = 0; i < tensors.size(); ++i)
    std::memcpy(tensors[i].data, source[i]->data.data(), tensors[i].size * sizeof(float));
}

}  // namespace trainer
