// bnff: threads over OpenMP, with a work partition that does not depend on them.
//
// Reductions in bnff are reproducible bit for bit whatever the thread count:
// work is cut into a fixed number of tasks chosen from the problem size alone,
// each task writes its own partial result, and partials are merged serially in
// task order. Threads only decide who runs which task.
//
// Threads come from OpenMP when the including translation unit is compiled
// with it (-fopenmp, or linking OpenMP::OpenMP_CXX); otherwise all runs serially.
#pragma once

#include "bnff/config.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace bnff {

// Threads a parallel region will use.
inline int max_threads() noexcept {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Set the threads later regions use (no effect without OpenMP).
inline void set_num_threads(int n) noexcept {
#if defined(_OPENMP)
  if (n > 0) omp_set_num_threads(n);
#else
  (void)n;
#endif
}

// Half-open range [begin, end).
struct index_range {
  index_t begin = 0, end = 0;
  constexpr index_t size() const noexcept { return end - begin; }
};

// Part `i` of `parts` near-equal contiguous parts of [0, total).
constexpr index_range split_range(index_t total, index_t parts, index_t i) noexcept {
  const index_t base = total / parts, extra = total % parts;
  const index_t begin = i * base + (i < extra ? i : extra);
  return {begin, begin + base + (i < extra ? 1 : 0)};
}

// Run f(task) for every task in [0, tasks), spread over the threads. f must not
// throw (validate arguments before a parallel region) and must write only
// task-owned results. Regions do not nest: inside a region this runs serially.
// Tasks are handed out one at a time to whichever thread is free (results never
// depend on who runs a task): on a machine shared with other work, a thread that
// is descheduled for a while then delays only the task it holds, not a fixed half
// of them.
template <class F>
void parallel_for(index_t tasks, F&& f) {
#if defined(_OPENMP)
  if (tasks > 1 && !omp_in_parallel() && omp_get_max_threads() > 1) {
#pragma omp parallel for schedule(dynamic, 1)
    for (index_t t = 0; t < tasks; ++t) f(t);
    return;
  }
#endif
  for (index_t t = 0; t < tasks; ++t) f(t);
}

// Run f(thread, threads) once on each thread of a region (for per-thread
// scratch). The split of work inside must still be by task, not by thread,
// wherever results are reduced.
template <class F>
void parallel_region(F&& f) {
#if defined(_OPENMP)
  if (!omp_in_parallel() && omp_get_max_threads() > 1) {
#pragma omp parallel
    f(omp_get_thread_num(), omp_get_num_threads());
    return;
  }
#endif
  f(0, 1);
}

}  // namespace bnff
