// bnff: the ReLU mask and the batch-norm backward reductions, on each block of a
// convolution's data gradient while it is in cache.
#pragma once

#include <algorithm>
#include <cmath>
#include <xsimd/xsimd.hpp>

#include "bnff/config.hpp"
#include "bnff/fusion/output_tile.hpp"
#include "bnff/gemm/lookahead.hpp"
#include "bnff/simd/fma.hpp"
#include "bnff/stats/stats_partition.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff {

// One block's share of a channel's batch-norm backward sums:
// sum(dy) and sum(dy * (x - mean)) (times invstd: sum(dy * xhat), i.e. dgamma).
struct bn_backward_partial {
  double sum_dy = 0.0;
  double sum_dy_xc = 0.0;
};

// Channel c's sums: its partials added in partition order (n, block), the same bits for
// any thread count. Returns {dbeta, sum(dy * (x - mean))}.
inline bn_backward_partial merge_bn_backward_channel(const stats_partition& part, const bn_backward_partial* partials,
                                                     index_t c) noexcept {
  bn_backward_partial acc;
  const index_t first = part.slot(c, 0, 0), count = part.images * part.blocks_per_plane();
  for (index_t i = 0; i < count; ++i) {
    acc.sum_dy += partials[first + i].sum_dy;
    acc.sum_dy_xc += partials[first + i].sum_dy_xc;
  }
  return acc;
}

namespace detail {

// Independent accumulator pairs of block_backward_sums: one pair is bound by the FMA
// latency (4 cycles a batch, on which the rest of the block waits); four keep up with
// the loads.
constexpr int bn_backward_unroll = 4;

// (sum dy, sum dy * (x - mean)) over one block of len elements, dy[i] given by
// vdy(i, x batch) for the full batches and sdy(i) for the tail: groups of
// bn_backward_unroll batches into as many accumulator pairs in T, the batches left
// into the first pair, the tail in scalars, all added in double in a fixed order, so
// the bits depend only on the values and len (not on where the block sits).
template <class T, class Arch, class VectorDy, class ScalarDy>
BNFF_ALWAYS_INLINE bn_backward_partial block_backward_sums(const T* BNFF_RESTRICT x, index_t len, T mean,
                                                           VectorDy&& vdy, ScalarDy&& sdy) noexcept {
  using batch = xsimd::batch<T, Arch>;
  constexpr index_t width = index_t(batch::size);
  constexpr int u = bn_backward_unroll;
  static_assert(u == 4, "the fixed pairwise tree below adds four accumulators");
  const batch vmean(mean);
  batch s0[u], s1[u];
  for (int a = 0; a < u; ++a) s0[a] = s1[a] = batch(T(0));
  auto one_batch = [&](index_t i, int a) {
    const batch xv = batch::load_unaligned(x + i);
    const batch dy = vdy(i, xv);
    s0[a] += dy;
    s1[a] = simd::fma(dy, xv - vmean, s1[a]);
  };
  index_t i = 0;
  for (; i + u * width <= len; i += u * width) {
#pragma GCC unroll 4
    for (int a = 0; a < u; ++a) one_batch(i + a * width, a);
  }
  for (; i + width <= len; i += width) one_batch(i, 0);
  double t0 = 0, t1 = 0;
  for (; i < len; ++i) {
    const T dy = sdy(i);
    t0 += double(dy);
    t1 += double(dy) * double(x[i] - mean);
  }
  return {double(xsimd::hadd((s0[0] + s0[1]) + (s0[2] + s0[3]))) + t0,
          double(xsimd::hadd((s1[0] + s1[1]) + (s1[2] + s1[3]))) + t1};
}

// The epilogue's block: dy = da * [x * scale + shift > 0] written over da, and its sums.
template <class T, class Arch>
BNFF_ALWAYS_INLINE bn_backward_partial relu_mask_block(T* BNFF_RESTRICT da, const T* BNFF_RESTRICT x, index_t len,
                                                       T scale, T shift, T mean) noexcept {
  using batch = xsimd::batch<T, Arch>;
  const batch vsc(scale), vsh(shift), zero(T(0));
  return block_backward_sums<T, Arch>(
      x, len, mean,
      [&](index_t i, const batch& xv) {
        const batch dy = xsimd::select(simd::fma(xv, vsc, vsh) > zero, batch::load_unaligned(da + i), zero);
        dy.store_unaligned(da + i);
        return dy;
      },
      [&](index_t i) {
        const T dy = simd::fma_lane<Arch>(x[i], scale, shift) > T(0) ? da[i] : T(0);
        da[i] = dy;
        return dy;
      });
}

// The sums of relu_mask_block over an already masked dy: the same operations in
// the same order, so a separate reduction over the same blocks
// (unfused::batch_norm_backward_reduce_blocks) gives bitwise the epilogue's partials.
template <class T, class Arch>
BNFF_ALWAYS_INLINE bn_backward_partial bn_backward_block_sums(const T* BNFF_RESTRICT dy, const T* BNFF_RESTRICT x,
                                                              index_t len, T mean) noexcept {
  using batch = xsimd::batch<T, Arch>;
  return block_backward_sums<T, Arch>(
      x, len, mean, [&](index_t i, const batch&) { return batch::load_unaligned(dy + i); },
      [&](index_t i) { return dy[i]; });
}

}  // namespace detail

// dy = da * [x * scale[c] + shift[c] > 0],  partial[c, n, b] = (sum dy, sum dy * (x - mean[c]))
// (the ReLU mask recomputed from the saved BN input x, never stored; the BN backward
// sums taken while the block of the data gradient is in cache). The tile's columns
// start on block boundaries of `partition`, so each block lies inside one tile.
template <class T, class Arch = xsimd::default_arch>
struct bn_relu_backward_epilogue {
  tensor_view<const T> x{};  // the saved BN input, shaped like the data gradient
  const T* scale = nullptr;  // gamma * invstd
  const T* shift = nullptr;  // beta - mean * scale
  const T* mean = nullptr;
  stats_partition partition{};
  bn_backward_partial* partials = nullptr;

  // What the tile (n; rows [k0, k0 + rows), columns [col0, col0 + cols)) reads besides
  // itself: x over the same rows and columns, prefetched by the engine as the tile computes.
  gemm::lookahead side_input(index_t n, index_t k0, index_t rows, index_t col0, index_t cols) const noexcept {
    return gemm::lookahead(x.plane_ptr(n, k0) + col0, x.strides().c, cols, rows);
  }

  static void prefetch_row(const T* p, index_t bytes) noexcept {
    const char* b = reinterpret_cast<const char*>(p);
    for (index_t off = 0; off < bytes; off += 64) __builtin_prefetch(b + off, 0, 3);
  }

  void operator()(const output_tile<T>& t) const noexcept {
    const index_t block = partition.block;
    constexpr index_t ahead = 4;  // x rows prefetched ahead: short runs in many planes defeat the hardware prefetcher
    const index_t bytes = t.cols * index_t(sizeof(T));
    for (index_t i = 0; i < std::min(ahead, t.rows); ++i) prefetch_row(x.plane_ptr(t.n, t.k0 + i) + t.col0, bytes);
    for (index_t i = 0; i < t.rows; ++i) {
      const index_t c = t.k0 + i;
      if (i + ahead < t.rows) prefetch_row(x.plane_ptr(t.n, c + ahead) + t.col0, bytes);
      T* row = t.data + i * t.ldc;
      const T* xr = x.plane_ptr(t.n, c) + t.col0;
      for (index_t j = 0; j < t.cols; j += block) {
        const index_t len = (t.cols - j < block) ? t.cols - j : block;
        partials[partition.slot(c, t.n, (t.col0 + j) / block)] =
            detail::relu_mask_block<T, Arch>(row + j, xr + j, len, scale[c], shift[c], mean[c]);
      }
    }
  }
};

}  // namespace bnff
