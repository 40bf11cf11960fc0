// bnff: how per-channel statistics are cut into partials and merged back.
//
// Each H x W plane (image n, channel c) is cut into blocks of `block` elements
// (the last may be shorter). Each block yields one moments partial, computed by
// block_moments while the block is in cache; a channel's partials are merged in
// the order (n, b) starting from empty moments. Any producer that keeps this
// partition and order (the standalone kernel, a convolution epilogue) gives
// bitwise-identical statistics, whatever the thread count.
#pragma once

#include "bnff/config.hpp"
#include "bnff/stats/moments.hpp"

namespace bnff {

// Elements per statistics block when the caller does not choose: small enough
// for L1 (4 KiB of float), large enough that per-block overhead stays small.
constexpr index_t default_stats_block = 1024;

struct stats_partition {
  index_t images = 0, channels = 0, plane = 0, block = default_stats_block;

  constexpr index_t blocks_per_plane() const noexcept { return (plane + block - 1) / block; }
  // Number of partial slots.
  constexpr index_t size() const noexcept { return channels * images * blocks_per_plane(); }
  // Slot of block b of image n, channel c; a channel's slots are contiguous, in merge order.
  constexpr index_t slot(index_t c, index_t n, index_t b) const noexcept {
    return (c * images + n) * blocks_per_plane() + b;
  }
  // Element range [begin, end) of block b within a plane.
  constexpr index_t block_begin(index_t b) const noexcept { return b * block; }
  constexpr index_t block_end(index_t b) const noexcept {
    return b * block + block < plane ? b * block + block : plane;
  }
};

// Merge channel c's partials in partition order.
inline moments merge_channel(const stats_partition& part, const moments* partials, index_t c) noexcept {
  moments acc;
  const index_t first = part.slot(c, 0, 0), count = part.images * part.blocks_per_plane();
  for (index_t i = 0; i < count; ++i) acc = merge(acc, partials[first + i]);
  return acc;
}

}  // namespace bnff
