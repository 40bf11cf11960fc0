// bnff: per-channel batch statistics in one sweep over main memory
// (mean-variance fusion), and the partials other producers exchange.
//
// Every H x W plane is cut into blocks (stats_partition); each block's
// moments come from block_moments while the block is in cache, and a channel's
// blocks are merged with Chan's formula in (n, b) order. Each task owns a few
// whole channels and merges on the fly, so no workspace is needed and the bits
// do not depend on the thread count. A convolution epilogue that keeps the same partition and
// order produces bitwise-identical statistics.
#pragma once

#include <xsimd/xsimd.hpp>

#include <array>
#include <type_traits>

#include "bnff/config.hpp"
#include "bnff/ops/bn_checks.hpp"
#include "bnff/ops/bn_tasks.hpp"
#include "bnff/simd/prefetch.hpp"
#include "bnff/stats/block_moments.hpp"
#include "bnff/stats/moments.hpp"
#include "bnff/stats/stats_partition.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff {

namespace detail {

// Planes of at most this many blocks are swept two at a time (see below).
constexpr index_t stats_pair_max_blocks = 64;

// f(c, n, b, block_moments of block b of plane (n, c)) for every block of
// channels [c0, c1), with the bits of block_moments; each channel's blocks come
// in (n, b) order (the channels interleave, image by image).
//
// Images are taken two at a time, n and n + 1: for each channel, every block
// of planes (n, c) and (n + 1, c) is swept as two interleaved streams from main
// memory (block_moments_pair: one core keeps more misses in flight with two
// streams than with one), then f in (n, b) order (plane n + 1's moments wait in
// a small array). Both streams run on through the task's channels, contiguous
// in memory, and their in-loop prefetch runs on into the next channel's planes.
// Planes under 2 KiB (the shortest are taken in registers, with no in-loop
// prefetch) get the next channel's planes asked for before each channel's
// sweep; where the streams jump (to the next pair of images) the first lines
// there are asked for. Planes of more than stats_pair_max_blocks blocks, and an
// odd last image, are swept block by block in memory order, one stream with
// the same prefetch.
template <class Arch, class T, class F>
void for_each_block_moments(const tensor_view<const T>& x, index_t c0, index_t c1, index_t block, F&& f) {
  const index_t plane = x.plane(), per_plane = (plane + block - 1) / block;
  auto length = [&](index_t b) {
    const index_t b0 = b * block;
    return b0 + block < plane ? block : plane - b0;
  };
  constexpr index_t reg = moments_register_len<T, Arch>;
  constexpr index_t ahead_bytes = sweep_prefetch_ahead<T> * index_t(sizeof(T));
  index_t n = 0;
  if (per_plane <= stats_pair_max_blocks) {
    moments second[stats_pair_max_blocks];
    const index_t bytes = plane * index_t(sizeof(T)) < ahead_bytes ? plane * index_t(sizeof(T)) : ahead_bytes;
    const bool small = bytes < ahead_bytes;
    for (; n + 1 < x.n(); n += 2) {
      for (index_t c = c0; c < c1; ++c) {
        const T *p = x.plane_ptr(n, c), *q = x.plane_ptr(n + 1, c);
        if (c + 1 < c1 && small) {  // the next planes of both streams (contiguous unless x is a channel slice)
          simd::prefetch_lines(x.plane_ptr(n, c + 1), bytes);
          simd::prefetch_lines(x.plane_ptr(n + 1, c + 1), bytes);
        } else if (c + 1 == c1 && n + 2 < x.n()) {  // the streams jump next: the next pair of images
          simd::prefetch_lines(x.plane_ptr(n + 2, c0), bytes);
          if (n + 3 < x.n()) simd::prefetch_lines(x.plane_ptr(n + 3, c0), bytes);
        }
        for (index_t b = 0; b < per_plane; ++b) {
          const index_t len = length(b);
          moments first;
          if (len > reg) {
            block_moments_pair<T, Arch>(p + b * block, q + b * block, len, first, second[b]);
          } else {
            first = block_moments_in_registers<T, Arch>(p + b * block, len);
            second[b] = block_moments_in_registers<T, Arch>(q + b * block, len);
          }
          f(c, n, b, first);
        }
        for (index_t b = 0; b < per_plane; ++b) f(c, n + 1, b, second[b]);
      }
    }
  }
  // The rest, in memory order (n, c, b).
  for (; n < x.n(); ++n)
    for (index_t c = c0; c < c1; ++c) {
      const T* p = x.plane_ptr(n, c);
      for (index_t b = 0; b < per_plane; ++b) {
        const index_t len = length(b);
        f(c, n, b,
          len > reg ? block_moments_swept<T, Arch, sweep_prefetch_ahead<T>>(p + b * block, len)
                    : block_moments_in_registers<T, Arch>(p + b * block, len));
      }
    }
}

}  // namespace detail

// The partition batch_norm_stats uses for x with the given block size.
template <class U>
stats_partition make_stats_partition(const tensor_view<U>& x, index_t block = default_stats_block) noexcept {
  return {x.n(), x.c(), x.plane(), block};
}

// out[c] = (count, mean, M2) of channel c of x over all images and positions.
// x may be a channel slice; its planes must be contiguous. out must not
// overlap x. Biased variance = out[c].m2 / out[c].count.
template <class Arch = xsimd::default_arch, class U>
void batch_norm_stats(const tensor_view<U>& x, vector_view<moments> out, index_t block = default_stats_block) {
  using T = std::remove_const_t<U>;
  constexpr const char* where = "batch_norm_stats";
  detail::check_planes(where, "x", x);
  detail::check_channels(where, "out", out, x.c());
  check_arg(block > 0, where, "block", "> 0", block);
  detail::check_disjoint(where, "out", out, "x", x);

  const stats_partition part = make_stats_partition(x, block);
  const tensor_view<const T> xc = x;
  const index_t group = detail::sweep_group_channels(x);
  detail::for_each_channel_group(x.c(), group, [&](index_t c0, index_t c1) {
    moments acc[detail::sweep_group_max];
    detail::for_each_block_moments<Arch>(xc, c0, c1, part.block, [&](index_t c, index_t, index_t, const moments& m) {
      acc[c - c0] = merge(acc[c - c0], m);
    });
    for (index_t c = c0; c < c1; ++c) out[c] = acc[c - c0];
  });
}

// Export: partials[part.slot(c, n, b)] = block_moments of block b of plane
// (n, c), for merging elsewhere (merge_stats_partials gives exactly what
// batch_norm_stats gives). part must describe x; partials has part.size() slots.
template <class Arch = xsimd::default_arch, class U>
void batch_norm_stats_partials(const tensor_view<U>& x, const stats_partition& part, vector_view<moments> partials) {
  using T = std::remove_const_t<U>;
  constexpr const char* where = "batch_norm_stats_partials";
  detail::check_planes(where, "x", x);
  check_arg(part.images == x.n() && part.channels == x.c() && part.plane == x.plane() && part.block > 0, where, "part",
            detail::concat("images ", x.n(), ", channels ", x.c(), ", plane ", x.plane(), ", block > 0"),
            detail::concat("images ", part.images, ", channels ", part.channels, ", plane ", part.plane, ", block ",
                           part.block));
  check_arg(partials.size() == part.size(), where, "partials", detail::concat(part.size(), " slots (part.size())"),
            detail::concat(partials.size(), " slots"));
  detail::check_disjoint(where, "partials", partials, "x", x);

  const tensor_view<const T> xc = x;
  const index_t group = detail::sweep_group_channels(x);
  detail::for_each_channel_group(x.c(), group, [&](index_t c0, index_t c1) {
    detail::for_each_block_moments<Arch>(
        xc, c0, c1, part.block,
        [&](index_t c, index_t n, index_t b, const moments& m) { partials[part.slot(c, n, b)] = m; });
  });
}

// Merge: out[c] = merge_channel(part, partials, c), each channel's partials in
// partition order. out must not overlap partials.
inline void merge_stats_partials(const stats_partition& part, vector_view<const moments> partials,
                                 vector_view<moments> out) {
  constexpr const char* where = "merge_stats_partials";
  check_arg(part.images > 0 && part.channels > 0 && part.plane > 0 && part.block > 0, where, "part",
            "images, channels, plane and block > 0",
            detail::concat("images ", part.images, ", channels ", part.channels, ", plane ", part.plane, ", block ",
                           part.block));
  check_arg(partials.size() == part.size(), where, "partials", detail::concat(part.size(), " slots (part.size())"),
            detail::concat(partials.size(), " slots"));
  detail::check_channels(where, "out", out, part.channels);
  detail::check_disjoint(where, "out", out, "partials", partials);
  for (index_t c = 0; c < part.channels; ++c) out[c] = merge_channel(part, partials.data(), c);
}

// acc[c] = merge(acc[c], other[c]): per-channel statistics of several sources
// (image groups, threads, processes) combined with Chan's formula. Exact in
// exact arithmetic; merging the same sources in the same order gives the same
// bits. acc and other must not overlap.
inline void merge_stats(vector_view<const moments> other, vector_view<moments> acc) {
  constexpr const char* where = "merge_stats";
  detail::check_channels(where, "other", other, acc.size());
  detail::check_disjoint(where, "acc", acc, "other", other);
  for (index_t c = 0; c < acc.size(); ++c) acc[c] = merge(acc[c], other[c]);
}

}  // namespace bnff
