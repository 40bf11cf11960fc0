// bnff: how the batch-norm operations cut a tensor into parallel tasks.
#pragma once

#include "bnff/config.hpp"
#include "bnff/parallel/parallel.hpp"

namespace bnff::detail {

// Elements per task of an element-wise sweep: large enough that a task's
// start-up cost vanishes, small enough that two threads share small tensors.
constexpr index_t elementwise_task_grain = index_t(1) << 16;

// Run f(n, c) for every (image, channel) plane, planes grouped into tasks of
// about elementwise_task_grain elements in memory order (n, c). The task count
// comes from the shape alone; element-wise results never depend on it anyway.
template <class F>
void for_each_plane(index_t images, index_t channels, index_t plane, F&& f) {
  const index_t planes = images * channels;
  index_t tasks = planes * plane / elementwise_task_grain;
  tasks = tasks < 1 ? 1 : (tasks > planes ? planes : tasks);
  parallel_for(tasks, [&](index_t t) {
    const index_range r = split_range(planes, tasks, t);
    for (index_t i = r.begin; i < r.end; ++i) f(i / channels, i % channels);
  });
}

// Run f(c) for every channel, one task each: a channel's reduction then runs
// in one fixed order (image by image, block by block) whatever the threads.
template <class F>
void for_each_channel(index_t channels, F&& f) {
  parallel_for(channels, [&](index_t c) { f(c); });
}

}  // namespace bnff::detail
