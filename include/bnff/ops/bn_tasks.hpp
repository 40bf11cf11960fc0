// bnff: how the batch-norm operations cut a tensor into parallel tasks.
#pragma once

#include <array>
#include <cstddef>

#include "bnff/config.hpp"
#include "bnff/parallel/parallel.hpp"
#include "bnff/simd/store_policy.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff::detail {

// Elements per task of an element-wise sweep: large enough that a task's
// start-up cost vanishes, small enough that two threads share small tensors.
constexpr index_t elementwise_task_grain = index_t(1) << 16;

// Run f(n, c) for every (image, channel) plane, planes grouped into tasks of
// about elementwise_task_grain elements in memory order (n, c), then
// task_done() at the end of each task. The task count comes from the shape
// alone; element-wise results never depend on it anyway.
template <class F, class Done>
void for_each_plane(index_t images, index_t channels, index_t plane, F&& f, Done&& task_done) {
  const index_t planes = images * channels;
  index_t tasks = planes * plane / elementwise_task_grain;
  tasks = tasks < 1 ? 1 : (tasks > planes ? planes : tasks);
  parallel_for(tasks, [&](index_t t) {
    const index_range r = split_range(planes, tasks, t);
    for (index_t i = r.begin; i < r.end; ++i) f(i / channels, i % channels);
    task_done();
  });
}

template <class F>
void for_each_plane(index_t images, index_t channels, index_t plane, F&& f) {
  for_each_plane(images, channels, plane, f, [] {});
}

// Outputs at least this large are written with streaming stores: they cannot
// stay in the caches (per-core L2 of 1-2 MiB, a shared L3 of tens of MiB) for
// the next layer anyway, and skipping the read for ownership saves a third of
// the traffic of a read-one-write-one sweep.
constexpr index_t streaming_store_bytes = index_t(32) << 20;

// f(simd::streaming_stores{}) for outputs of at least streaming_store_bytes,
// f(simd::temporal_stores{}) otherwise: the choice is made once per call. An
// in-place sweep (the output is one of the inputs) stores temporally: its lines
// were just read, so there is no read for ownership to skip, and a streaming
// store to a cached line evicts it (measured: in-place ReLU on 16x224x56x56 float
// 18-20 ms streamed vs 8-12 ms temporal, one thread).
template <class T, class F>
void with_store_policy(index_t output_elements, bool in_place, F&& f) {
  if (!in_place && output_elements * index_t(sizeof(T)) >= streaming_store_bytes)
    f(simd::streaming_stores{});
  else
    f(simd::temporal_stores{});
}

// Channels per group of a reduction sweep (for_each_channel_group): enough
// that each image's run of the group's planes is at least sweep_run_bytes long
// (eight 14 x 14 float planes, 6 KiB, made streams too short for the
// prefetchers), at least 8 as for large planes, and at most sweep_group_max;
// but never so many that there are fewer than 16 groups (tasks) when there are
// 16 channels, so the threads share the work. From the shape alone, like every
// partition in bnff; the sums' bits do not depend on it.
constexpr index_t sweep_group_max = 64;
constexpr index_t sweep_run_bytes = index_t(32) << 10;
inline index_t sweep_group_channels(index_t channels, index_t plane_bytes) noexcept {
  index_t g = (sweep_run_bytes + plane_bytes - 1) / plane_bytes;
  g = g < 8 ? 8 : (g > sweep_group_max ? sweep_group_max : g);
  const index_t spread = channels / 16;
  g = g > spread ? spread : g;
  return g < 1 ? 1 : g;
}

// sweep_group_channels for the channels and planes of x.
template <class U>
index_t sweep_group_channels(const tensor_view<U>& x) noexcept {
  return sweep_group_channels(x.c(), x.plane() * index_t(sizeof(U)));
}

// Run f(c0, c1) for every group [c0, c1) of `group` consecutive channels, one
// task each. A reduction walks its group image by image (for each n, channels
// c0 .. c1 - 1), so it reads one contiguous run of c1 - c0 planes per image,
// which the hardware prefetchers follow; one channel at a time it would jump
// C * H * W elements between planes and lose the stream at every jump. Each
// channel still takes its planes in image order, so its sums have the same bits
// for any group size and thread count.
template <class F>
void for_each_channel_group(index_t channels, index_t group, F&& f) {
  parallel_for((channels + group - 1) / group, [&](index_t g) {
    const index_t c0 = g * group;
    f(c0, c0 + group < channels ? c0 + group : channels);
  });
}

// A reduction of K sums per channel of x over channel groups
// (sweep_group_channels): sums from zero, plane(n, c, sums of c) for every plane
// of the group image by image, then done(c, sums of c) for each channel of the
// group.
template <std::size_t K, class U, class Plane, class Done>
void reduce_channel_groups(const tensor_view<U>& x, Plane&& plane, Done&& done) {
  for_each_channel_group(x.c(), sweep_group_channels(x), [&](index_t c0, index_t c1) {
    std::array<double, K> sums[sweep_group_max];
    for (index_t c = c0; c < c1; ++c) sums[c - c0].fill(0.0);
    for (index_t n = 0; n < x.n(); ++n)
      for (index_t c = c0; c < c1; ++c) plane(n, c, sums[c - c0]);
    for (index_t c = c0; c < c1; ++c) done(c, sums[c - c0]);
  });
}

}  // namespace bnff::detail
