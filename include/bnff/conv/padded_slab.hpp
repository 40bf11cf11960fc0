// bnff: stride-1 convolutions read B in place from a zero-padded copy of the input rows.
//
// Index output (p, q) by the grid column u = p * wp + q, on a grid as wide as the padded
// input (wp = W + 2 * pad). Then B row (c, r, s) at grid column u is element u + r * wp + s
// of channel c's padded input: a shifted run, so B needs no im2col copy at all. A task copies
// the input rows its outputs need once, through the prologue (padding zero after it), instead
// of R * S times; the GEMM reads B's rows in place and the Q < q < wp columns it also
// computes are dropped when the tile is copied out.
#pragma once

#include <algorithm>

#include "bnff/config.hpp"
#include "bnff/conv/conv2d_problem.hpp"
#include "bnff/conv/padded_planes.hpp"
#include "bnff/fusion/detail/transform_row.hpp"

namespace bnff::detail {

// The grid columns and padded input rows one task's output columns [col0, col0 + cols) cover.
struct slab_span {
  index_t p_lo = 0, q_lo = 0, p_hi = 0, q_hi = 0;  // first and last output (p, q)
  index_t grid_cols = 0;                           // grid columns from (p_lo, q_lo) to (p_hi, q_hi)
  index_t rows = 0;                                // padded input rows p_lo .. p_hi + R - 1

  slab_span(const conv2d_problem& pb, index_t col0, index_t cols) noexcept {
    const index_t q_extent = pb.q(), wp = pb.w + 2 * pb.pad, last = col0 + cols - 1;
    p_lo = col0 / q_extent;
    q_lo = col0 % q_extent;
    p_hi = last / q_extent;
    q_hi = last % q_extent;
    grid_cols = (p_hi - p_lo) * wp + q_hi - q_lo + 1;
    rows = p_hi - p_lo + pb.r;
  }
  // Elements of a channel's slab that B's rows may read, `nr` columns at a time.
  index_t reach(const conv2d_problem& pb, index_t nr) const noexcept {
    const index_t wp = pb.w + 2 * pb.pad;
    const index_t read = (pb.r - 1) * wp + (pb.s - 1) + q_lo + (grid_cols + nr - 1) / nr * nr;
    return std::max(read, rows * wp);
  }
};

// slab[c * ld + t * wp + v] = a(x[c, p_lo + t - pad, v - pad]), zero where that is padding;
// the rest of each channel's ld elements zero (read only by lanes that are dropped, but
// kept finite so they cannot slow the FMAs with denormals or NaNs).
template <class Arch, class T, class Prologue>
void build_slab(const conv2d_problem& pb, const slab_span& sp, const T* x, index_t ldx, index_t ldh,
                const Prologue& prologue, T* slab, index_t ld) {
  const index_t wp = pb.w + 2 * pb.pad;
  // The rows a channel needs are one contiguous block of its plane, but consecutive channels
  // are a plane apart, where hardware prefetchers lose the stream: fetch `ahead` channels early.
  constexpr index_t ahead = 2;
  const index_t ih0 = std::max<index_t>(0, sp.p_lo - pb.pad), ih1 = std::min<index_t>(pb.h, sp.p_lo + sp.rows - pb.pad);
  const index_t block_bytes = ih1 > ih0 ? ((ih1 - ih0 - 1) * ldh + pb.w) * index_t(sizeof(T)) : 0;
  for (index_t c = 0; c < pb.c; ++c) {
    T* dst = slab + c * ld;
    const T* xc = x + c * ldx;
    if (c + ahead < pb.c) {
      const char* b = reinterpret_cast<const char*>(x + (c + ahead) * ldx + ih0 * ldh);
      for (index_t o = 0; o < block_bytes; o += 64) __builtin_prefetch(b + o, 0, 2);
    }
    pad_channel_rows<Arch>(pb, c, xc, ldh, prologue, sp.p_lo, sp.rows, dst);
    std::fill(dst + sp.rows * wp, slab + c * ld + ld, T(0));
  }
}

// y[i, col - col0] = grid[i, u(col) - u(col0)] for rows [0, rows) of the task's output
// columns: one contiguous run per output row.
template <class Arch, class T>
void copy_out(const conv2d_problem& pb, const slab_span& sp, const T* grid, index_t ldg, T* y, index_t ldy,
              index_t rows) {
  const index_t q_extent = pb.q(), wp = pb.w + 2 * pb.pad;
  for (index_t i = 0; i < rows; ++i) {
    const T* g = grid + i * ldg;
    T* d = y + i * ldy;
    index_t out = 0;
    for (index_t p = sp.p_lo; p <= sp.p_hi; ++p) {
      const index_t qa = p == sp.p_lo ? sp.q_lo : 0, qb = p == sp.p_hi ? sp.q_hi + 1 : q_extent;
      const index_t u = (p - sp.p_lo) * wp + qa - sp.q_lo;
      fusion::detail::transform_row<Arch>(g + u, d + out, qb - qa, [](const auto& v) { return v; });
      out += qb - qa;
    }
  }
}

}  // namespace bnff::detail
