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
#include "bnff/simd/for_each_lanes.hpp"
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

// (sum dy, sum dy * (x - mean)) over one block of len elements, dy given by
// vdy(lanes, x batch) (simd::full_lanes or, for the last len % W elements, partial_lanes;
// its padded lanes must be 0): for_each_lanes' groups of bn_backward_unroll batches into
// as many accumulator pairs in T, the rest into the first pair, added in a fixed tree and
// then in double, so the bits depend only on the values and len (not on where the block
// sits). The tail is one masked batch, not a scalar loop: with 14 x 14 planes (196 = 12
// batches + 4) the scalar chain in double took as long as the batches.
template <class T, class Arch, class VectorDy>
BNFF_ALWAYS_INLINE bn_backward_partial block_backward_sums(const T* BNFF_RESTRICT x, index_t len, T mean,
                                                           VectorDy&& vdy) noexcept {
  using batch = xsimd::batch<T, Arch>;
  constexpr int u = bn_backward_unroll;
  static_assert(u == 4, "the fixed pairwise tree below adds four accumulators");
  const batch vmean(mean);
  batch s0[u], s1[u];
  for (int a = 0; a < u; ++a) s0[a] = s1[a] = batch(T(0));
  simd::for_each_lanes<T, Arch, u>(len, [&](auto lanes, auto slot) {
    const batch xv = lanes.load(x, mean);  // padded lanes: x - mean = 0
    const batch dy = vdy(lanes, xv);
    s0[slot] += dy;
    s1[slot] = simd::fma(dy, xv - vmean, s1[slot]);
  });
  return {double(xsimd::hadd((s0[0] + s0[1]) + (s0[2] + s0[3]))),
          double(xsimd::hadd((s1[0] + s1[1]) + (s1[2] + s1[3])))};
}

// The epilogue's block: dy = da * [x * scale + shift > 0] written over da, and its sums.
template <class T, class Arch>
BNFF_ALWAYS_INLINE bn_backward_partial relu_mask_block(T* BNFF_RESTRICT da, const T* BNFF_RESTRICT x, index_t len,
                                                       T scale, T shift, T mean) noexcept {
  using batch = xsimd::batch<T, Arch>;
  const batch vsc(scale), vsh(shift), zero(T(0));
  return block_backward_sums<T, Arch>(x, len, mean, [&](const auto& lanes, const batch& xv) {
    const batch dy = xsimd::select(simd::fma(xv, vsc, vsh) > zero, lanes.load(da, T(0)), zero);
    lanes.store(da, dy);
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
  return block_backward_sums<T, Arch>(x, len, mean,
                                      [&](const auto& lanes, const batch&) { return lanes.load(dy, T(0)); });
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
