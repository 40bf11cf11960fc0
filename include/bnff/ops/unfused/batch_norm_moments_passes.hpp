// bnff baseline: a channel's batch statistics in two separate sweeps over x, as a
// conventional framework takes the mean and then the variance, each (n, c) plane cut
// into blocks as the fused kernels cut it:
//   sweep 1 (mean pass):     shifts[slot] = the shift block_moments settles on for the
//                            block (block_shift: its first batches' mean, or its mean);
//   sweep 2 (variance pass): each block's moments about its shift, merged in (n, b) order.
// The two sweeps are block_moments split in two, so the result is bitwise what
// batch_norm_stats (and a convolution's statistics epilogue) gives for the same block:
// the unfused and fused engines then normalize with the same mean, invstd, scale, shift.
#pragma once

#include <xsimd/xsimd.hpp>

#include <type_traits>

#include "bnff/config.hpp"
#include "bnff/error.hpp"
#include "bnff/ops/bn_checks.hpp"
#include "bnff/ops/bn_tasks.hpp"
#include "bnff/stats/block_moments.hpp"
#include "bnff/stats/stats_partition.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff::detail {

template <class T>
void unfused_moments_check(const char* where, const tensor_view<const T>& x, index_t block, index_t shifts_size) {
  check_planes(where, "x", x);
  check_arg(block > 0, where, "block", "> 0", block);
  const index_t need = stats_partition{x.n(), x.c(), x.plane(), block}.size();
  check_arg(shifts_size >= need, where, "shifts", concat(">= ", need, " elements (one per block)"), shifts_size);
}

}  // namespace bnff::detail

namespace bnff::unfused {

// Sweep 1: shifts[p.slot(c, n, b)] = block_shift of block b of plane (n, c), p the partition
// of x in blocks of `block` elements (blocks short enough for block_moments' register path
// get no shift: sweep 2 takes them whole). shifts must not overlap x.
template <class Arch = xsimd::default_arch, class T>
void batch_norm_block_shifts(tensor_view<const bnff::detail::nondeduced_t<T>> x, index_t block, vector_view<T> shifts) {
  constexpr const char* where = "unfused::batch_norm_block_shifts";
  bnff::detail::unfused_moments_check<T>(where, x, block, shifts.size());
  bnff::detail::check_disjoint(where, "shifts", shifts, "x", x);
  const stats_partition part{x.n(), x.c(), x.plane(), block};
  constexpr index_t reg = bnff::detail::moments_register_len<T, Arch>;
  bnff::detail::for_each_channel_group(x.c(), bnff::detail::sweep_group_channels(x), [&](index_t c0, index_t c1) {
    for (index_t n = 0; n < x.n(); ++n)
      for (index_t c = c0; c < c1; ++c)
        for (index_t b = 0; b < part.blocks_per_plane(); ++b) {
          const index_t len = part.block_end(b) - part.block_begin(b);
          shifts[part.slot(c, n, b)] =
              len > reg ? bnff::detail::block_shift<T, Arch>(x.plane_ptr(n, c) + part.block_begin(b), len) : T(0);
        }
  });
}

// Sweep 2: out[c] = the moments of channel c, each block's about its shift from sweep 1,
// merged in (n, b) order: bitwise batch_norm_stats(x, out, block). out must not overlap x.
template <class Arch = xsimd::default_arch, class T>
void batch_norm_block_moments(tensor_view<const bnff::detail::nondeduced_t<T>> x, index_t block,
                              vector_view<const bnff::detail::nondeduced_t<T>> shifts, vector_view<moments> out) {
  constexpr const char* where = "unfused::batch_norm_block_moments";
  bnff::detail::unfused_moments_check<T>(where, x, block, shifts.size());
  bnff::detail::check_channels(where, "out", out, x.c());
  bnff::detail::check_disjoint(where, "out", out, "x", x);
  const stats_partition part{x.n(), x.c(), x.plane(), block};
  constexpr index_t reg = bnff::detail::moments_register_len<T, Arch>;
  bnff::detail::for_each_channel_group(x.c(), bnff::detail::sweep_group_channels(x), [&](index_t c0, index_t c1) {
    moments acc[bnff::detail::sweep_group_max];
    for (index_t n = 0; n < x.n(); ++n)
      for (index_t c = c0; c < c1; ++c)
        for (index_t b = 0; b < part.blocks_per_plane(); ++b) {
          const T* p = x.plane_ptr(n, c) + part.block_begin(b);
          const index_t len = part.block_end(b) - part.block_begin(b);
          acc[c - c0] = merge(
              acc[c - c0], len > reg ? bnff::detail::block_moments_shifted<T, Arch>(p, len, shifts[part.slot(c, n, b)])
                                     : bnff::detail::block_moments_in_registers<T, Arch>(p, len));
        }
    for (index_t c = c0; c < c1; ++c) out[c] = acc[c - c0];
  });
}

}  // namespace bnff::unfused
