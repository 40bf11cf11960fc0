// bnff: how the batch-norm operations cut a tensor into parallel tasks.
#pragma once

#include <array>
#include <cstddef>

#include "bnff/config.hpp"
#include "bnff/parallel/parallel.hpp"
#include "bnff/simd/prefetch.hpp"
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

// Run f(c) for every channel, one task each: a channel's reduction then runs
// in one fixed order (image by image, block by block) whatever the threads.
template <class F>
void for_each_channel(index_t channels, F&& f) {
  parallel_for(channels, [&](index_t c) { f(c); });
}

// Blocks a channel sweep keeps in flight ahead of the one it works on.
constexpr index_t prefetch_blocks_ahead = 2;

// f(n, begin, end) for every block [begin, end) of `block` elements of every
// plane of channel c, in (n, b) order. Before each block it prefetches, in
// every tensor of ts, the block prefetch_blocks_ahead further in that order:
// planes of one channel lie C * H * W apart, and the hardware prefetchers lose
// the stream at every such jump, which stalls a reduction sweep on each miss.
template <class T, std::size_t K, class F>
void for_each_channel_block(const std::array<tensor_view<const T>, K>& ts, index_t c, index_t block, F&& f) {
  const tensor_view<const T>& first = ts[0];
  const index_t plane = first.plane(), per_plane = (plane + block - 1) / block, total = first.n() * per_plane;
  auto prefetch = [&](index_t i) {
    if (i >= total) return;
    const index_t n = i / per_plane, b0 = (i % per_plane) * block;
    const index_t len = b0 + block < plane ? block : plane - b0;
    for (const auto& t : ts) simd::prefetch_lines(t.plane_ptr(n, c) + b0, len * index_t(sizeof(T)));
  };
  for (index_t i = 0; i < prefetch_blocks_ahead; ++i) prefetch(i);
  index_t i = 0;
  for (index_t n = 0; n < first.n(); ++n)
    for (index_t b0 = 0; b0 < plane; b0 += block, ++i) {
      prefetch(i + prefetch_blocks_ahead);
      f(n, b0, b0 + block < plane ? b0 + block : plane);
    }
}

}  // namespace bnff::detail
