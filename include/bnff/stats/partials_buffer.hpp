// bnff: batch-norm statistics and backward sums as flat buffers of doubles, the
// wire format of synchronized batch norm across processes (data-parallel
// training). bnff sends nothing itself: any all-gather / all-reduce moves these
// buffers (MPI, NCCL, oneCCL, torch.distributed), bnff merges and uses them.
//
// Forward: the moments of C channels, 3 * C doubles (moments_buffer_size):
//   buffer[3c] = count,  buffer[3c + 1] = mean,  buffer[3c + 2] = M2.
// Each rank exports its shard's moments, an all-gather puts the P buffers one
// after another in rank order, and merge_moments_buffers merges them with Chan's
// formula (moments.hpp): exact in exact arithmetic for any P and any shard
// sizes, and the same bits on every rank, since every rank merges the same
// numbers in the same order. A SUM all-reduce of these buffers would be wrong:
// each rank's mean and M2 are taken about its own mean, and the global M2 also
// needs the spread between the shard means (d^2 * na * nb / n in the merge).
// Summable moments exist (count, sum(x - K), sum((x - K)^2) for a shift K that
// every rank shares, e.g. the running mean), but they cancel digits when the
// batch mean is far from K in units of std; gathering 3 * C * P doubles costs
// the same for the rank counts where synchronizing BN matters and loses nothing.
//
// Backward: 2 * C + 1 doubles per BN (bn_backward_sums_size):
//   buffer[2c] = sum(dy),  buffer[2c + 1] = sum(dy * (x - mean)),  buffer[2C] = count,
// count being the elements per channel the sums cover. Once the forward
// statistics are global, mean (and invstd) is the same number on every rank, so
// each rank's sums are sums of one function over disjoint elements: a plain SUM
// all-reduce of the buffer is exactly the sums over the global batch, and its
// last slot becomes the global count that the dx formula divides by. (The sum's
// order is the communicator's; sum_buffers adds gathered buffers in rank order
// where bitwise reproducibility matters.) ops/bn_backward_sums.hpp produces and
// consumes these buffers.
//
// Layouts are stable: a buffer is valid input wherever its size is.
#pragma once

#include <cmath>

#include "bnff/config.hpp"
#include "bnff/error.hpp"
#include "bnff/stats/moments.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff {

// Doubles per channel of a moments buffer: count, mean, M2.
constexpr index_t moments_buffer_stride = 3;
// Doubles of the moments buffer of `channels` channels.
constexpr index_t moments_buffer_size(index_t channels) noexcept { return moments_buffer_stride * channels; }

// Doubles of the backward-sums buffer of `channels` channels: two sums per channel, then the count.
constexpr index_t bn_backward_sums_size(index_t channels) noexcept { return 2 * channels + 1; }

namespace detail {

template <class T, class U>
void check_buffer_disjoint(const char* where, const char* out_arg, vector_view<T> out, const char* in_arg,
                           vector_view<U> in) {
  check_arg(out.empty() || in.empty() || !ranges_overlap(out.begin(), out.end(), in.begin(), in.end()), where, out_arg,
            concat("no element shared with '", in_arg, "'"), "overlapping memory");
}

}  // namespace detail

// buffer[3c .. 3c + 3) = (stats[c].count, stats[c].mean, stats[c].m2) for every channel c.
// buffer: at least moments_buffer_size(stats.size()) doubles (only those are written).
inline void export_moments(vector_view<const moments> stats, vector_view<double> buffer) {
  constexpr const char* where = "export_moments";
  const index_t channels = stats.size();
  check_arg(channels > 0, where, "stats", "one moments per channel (at least one)", "0 elements");
  check_arg(buffer.size() >= moments_buffer_size(channels), where, "buffer",
            detail::concat(">= ", moments_buffer_size(channels), " doubles (moments_buffer_size)"), buffer.size());
  detail::check_buffer_disjoint(where, "buffer", buffer, "stats", stats);
  for (index_t c = 0; c < channels; ++c) {
    buffer[3 * c] = stats[c].count;
    buffer[3 * c + 1] = stats[c].mean;
    buffer[3 * c + 2] = stats[c].m2;
  }
}

// stats[c] = merge over r = 0, 1, ..., ranks - 1 of the moments of channel c in
// buffer r, i.e. gathered[r * 3C + 3c .. + 3): what an all-gather of every
// rank's export_moments buffer holds. Merged in rank order from empty moments
// with Chan's formula, so every rank that calls this on the same gathered
// buffers gets the same bits; ranks = 1 imports a single buffer unchanged.
// A rank with count 0 in a channel (an empty shard) adds nothing to it.
// gathered: at least ranks * moments_buffer_size(stats.size()) doubles, every
// count >= 0 (checked, before anything is written).
inline void merge_moments_buffers(vector_view<const double> gathered, index_t ranks, vector_view<moments> stats) {
  constexpr const char* where = "merge_moments_buffers";
  const index_t channels = stats.size();
  check_arg(channels > 0, where, "stats", "one moments per channel (at least one)", "0 elements");
  check_arg(ranks >= 1, where, "ranks", ">= 1", ranks);
  const index_t per_rank = moments_buffer_size(channels);
  check_arg(gathered.size() >= ranks * per_rank, where, "gathered",
            detail::concat(">= ", ranks * per_rank, " doubles (ranks * moments_buffer_size)"), gathered.size());
  detail::check_buffer_disjoint(where, "stats", stats, "gathered", gathered);
  for (index_t r = 0; r < ranks; ++r)
    for (index_t c = 0; c < channels; ++c) {
      const double count = gathered[r * per_rank + 3 * c];
      if (!(count >= 0))
        fail_argument(where, "gathered", "count >= 0 in every channel of every rank",
                      detail::concat("count ", count, " in channel ", c, " of rank ", r));
    }
  for (index_t c = 0; c < channels; ++c) {
    moments acc;
    for (index_t r = 0; r < ranks; ++r) {
      const double* m = gathered.data() + r * per_rank + 3 * c;
      acc = merge(acc, moments{m[0], m[1], m[2]});
    }
    stats[c] = acc;
  }
}

// out[i] = gathered[i] + gathered[size + i] + ... + gathered[(ranks - 1) * size + i],
// added in rank order with size = out.size(): the SUM all-reduce of `ranks`
// buffers after an all-gather, the same bits on every rank. out may not
// overlap gathered.
inline void sum_buffers(vector_view<const double> gathered, index_t ranks, vector_view<double> out) {
  constexpr const char* where = "sum_buffers";
  const index_t size = out.size();
  check_arg(ranks >= 1, where, "ranks", ">= 1", ranks);
  check_arg(gathered.size() >= ranks * size, where, "gathered", detail::concat(">= ", ranks * size, " doubles"),
            gathered.size());
  detail::check_buffer_disjoint(where, "out", out, "gathered", gathered);
  for (index_t i = 0; i < size; ++i) {
    double acc = gathered[i];
    for (index_t r = 1; r < ranks; ++r) acc += gathered[r * size + i];
    out[i] = acc;
  }
}

}  // namespace bnff
