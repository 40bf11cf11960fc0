// Progress lines while training and the summary at the end.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace trainer {

// "1.5 s", "2 min 05 s", "1 h 02 min"
inline std::string format_duration(double seconds) {
  char buf[64];
  if (!(seconds >= 0)) seconds = 0;
  if (seconds < 60) {
    std::snprintf(buf, sizeof buf, "%.1f s", seconds);
  } else if (seconds < 3600) {
    const long s = long(seconds + 0.5);
    std::snprintf(buf, sizeof buf, "%ld min %02ld s", s / 60, s % 60);
  } else {
    const long m = long(seconds / 60 + 0.5);
    std::snprintf(buf, sizeof buf, "%ld h %02ld min", m / 60, m % 60);
  }
  return buf;
}

// "123456789 bytes (117.7 MiB)"
inline std::string format_bytes(std::uint64_t bytes) {
  char buf[64];
  const double mib = double(bytes) / (1024.0 * 1024.0);
  if (mib >= 1024)
    std::snprintf(buf, sizeof buf, "%llu bytes (%.2f GiB)", (unsigned long long)bytes, mib / 1024);
  else
    std::snprintf(buf, sizeof buf, "%llu bytes (%.1f MiB)", (unsigned long long)bytes, mib);
  return buf;
}

// The median of a sample (the mean of the two middle values for an even count).
inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

// One line per epoch, rewritten in place (\r) on a terminal; on a pipe or file,
// plain lines about every tenth of an epoch and at its end.
class progress_printer {
 public:
  explicit progress_printer(std::FILE* out) : out_(out), tty_(out && ::isatty(::fileno(out))) {}
  progress_printer(std::FILE* out, bool tty) : out_(out), tty_(tty) {}

  struct step_info {
    std::uint64_t epoch, epochs;               // 1-based epoch of `epochs`
    std::uint64_t step_in_epoch, epoch_steps;  // steps done in this epoch, of how many
    std::uint64_t step, total_steps;           // steps done in the run, and where it stops
    double loss;                               // mean training loss of this epoch so far
    double images_per_second;
    double eta_seconds;  // until the run stops
  };

  void step(const step_info& s) {
    if (!out_) return;
    const bool last = s.step_in_epoch == s.epoch_steps || s.step == s.total_steps;
    const std::uint64_t every = std::max<std::uint64_t>(1, s.epoch_steps / 10);
    if (!tty_ && !last && s.step_in_epoch % every != 0) return;
    char buf[256];
    std::snprintf(buf, sizeof buf, "epoch %llu/%llu  step %llu/%llu  loss %.4f  %.0f images/s  ETA %s",
                  (unsigned long long)s.epoch, (unsigned long long)s.epochs, (unsigned long long)s.step,
                  (unsigned long long)s.total_steps, s.loss, s.images_per_second,
                  format_duration(s.eta_seconds).c_str());
    if (tty_) {
      std::fprintf(out_, "\r%-100s", buf);  // pad over a longer previous line
      open_line_ = true;
    } else {
      std::fprintf(out_, "%s\n", buf);
    }
    std::fflush(out_);
  }

  // Ends the epoch's line with its validation result.
  void epoch_end(double val_accuracy) {
    if (!out_) return;
    if (tty_ && open_line_)
      std::fprintf(out_, "  val %.2f%%\n", 100 * val_accuracy);
    else
      std::fprintf(out_, "validation accuracy %.2f%%\n", 100 * val_accuracy);
    open_line_ = false;
    std::fflush(out_);
  }

  // Any other message: finishes an open progress line first.
  void message(const std::string& text) {
    if (!out_) return;
    if (open_line_) std::fputc('\n', out_);
    open_line_ = false;
    std::fprintf(out_, "%s\n", text.c_str());
    std::fflush(out_);
  }

  bool tty() const noexcept { return tty_; }

 private:
  std::FILE* out_;
  bool tty_;
  bool open_line_ = false;
};

struct run_summary {
  std::string implementation;
  double val_accuracy = 0;
  std::uint64_t steps = 0;
  double median_step_seconds = 0;
  double total_seconds = 0;
  std::uint64_t activation_bytes = 0;
};

inline std::string format_summary(const run_summary& s) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "summary (%s)\n"
                "  validation accuracy      %.2f%%\n"
                "  steps                    %llu in %s\n"
                "  time per step (median)   %.2f ms\n"
                "  peak activation memory   %s\n",
                s.implementation.c_str(), 100 * s.val_accuracy, (unsigned long long)s.steps,
                format_duration(s.total_seconds).c_str(), 1e3 * s.median_step_seconds,
                format_bytes(s.activation_bytes).c_str());
  return buf;
}

}  // namespace trainer
