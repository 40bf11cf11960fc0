// bnff: tasks handed to whichever thread asks next.
#pragma once

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
