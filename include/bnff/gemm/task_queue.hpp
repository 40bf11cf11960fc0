// bnff: tasks handed to whichever thread asks next.
#pragma once

#include <algorithm>
#include <atomic>

#include "bnff/config.hpp"

namespace bnff::gemm {

// Claims tasks 0, 1, ... tasks-1 in order, each exactly once, to the first thread that
// asks. Every task writes only what it owns (its output tile, its statistics slots), so
// who runs it changes no result; claiming instead of a fixed round robin keeps both
// threads busy when one is slowed (a busy machine, or a task count that does not divide).
class task_queue {
 public:
  explicit task_queue(index_t tasks) noexcept : tasks_(tasks) {}
  // The next unclaimed task, or a value >= tasks when none is left.
  index_t claim() noexcept { return next_.fetch_add(1, std::memory_order_relaxed); }
  index_t tasks() const noexcept { return tasks_; }

 private:
  std::atomic<index_t> next_{0};
  index_t tasks_;
};

}  // namespace bnff::gemm

namespace bnff::gemm {

// Tasks 0 .. tasks-1 cut into one contiguous share per thread; a thread claims its own
// share in order, then helps with the others' (from their next unclaimed task). Who runs a
// task still changes no result. Concurrent threads then work far apart: on different
// images of a convolution, whose epilogues write per-(channel, image, tile) partials, so
// two threads never write the same cache line of partials (neighbouring tiles of one
// image do, when tasks are claimed from a single queue in order); and each thread still
// walks its share in memory order.
class shared_task_queue {
 public:
  static constexpr int max_shares = 64;
  // shares: the threads that will claim (capped at max_shares; a thread without a share of
  // its own only helps).
  shared_task_queue(index_t tasks, int shares) noexcept
      : tasks_(tasks), shares_(std::clamp(shares, 1, max_shares)) {
    for (int s = 0; s < shares_; ++s) {
      share_[s].next.store(tasks * s / shares_, std::memory_order_relaxed);
      share_[s].end = tasks * (s + 1) / shares_;
    }
  }
  // The next task for `thread`, or a value >= tasks when none is left anywhere.
  index_t claim(int thread) noexcept {
    for (int i = 0; i < shares_; ++i) {
      share& s = share_[(thread + i) % shares_];
      if (s.next.load(std::memory_order_relaxed) >= s.end) continue;
      const index_t t = s.next.fetch_add(1, std::memory_order_relaxed);
      if (t < s.end) return t;
    }
    return tasks_;
  }
  index_t tasks() const noexcept { return tasks_; }

 private:
  struct alignas(64) share {  // a line each: the threads' counters do not share one
    std::atomic<index_t> next{0};
    index_t end = 0;
  };
  index_t tasks_;
  int shares_;
  share share_[max_shares];
};

}  // namespace bnff::gemm
