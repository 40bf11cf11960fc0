// bnff: the cache-blocked GEMM driver shared by the convolutions and the plain GEMM.
//
// One call computes a column tile C[m x cols] = A[m x kdim] * B[kdim x cols]:
// A is packed once per operation (pack_a), B is produced kc rows at a time by a
// packer (a matrix copy, a 1x1 input plane, or an im2col block, each with its
// prologue), and every finished block of mc rows goes to the epilogue while it
// is still in cache.
#pragma once

#include <algorithm>

#include "bnff/config.hpp"
#include "bnff/gemm/blocking.hpp"
#include "bnff/gemm/microkernel.hpp"

namespace bnff::gemm {

// Elements of a packed A with m rows and kdim columns.
template <class T, class Arch>
constexpr index_t packed_a_size(index_t m, index_t kdim) noexcept {
  return round_up(m, blocking<T, Arch>::mr) * kdim;
}

// Elements of one packed B block for column tiles of up to nc columns.
template <class T, class Arch>
constexpr index_t packed_b_size(index_t kdim, index_t nc) noexcept {
  using blk = blocking<T, Arch>;
  return std::min<index_t>(kdim, blk::kc) * round_up(nc, blk::nr);
}

// Packs A into panels of mr rows: ap[(panel * kdim + k) * mr + i] = a(panel * mr + i, k),
// zero for rows past m. a(i, k) is any callable giving element (i, k).
template <class T, class Arch, class Get>
void pack_a(index_t m, index_t kdim, Get&& a, T* ap) {
  constexpr int mr = blocking<T, Arch>::mr;
  for (index_t p0 = 0; p0 < m; p0 += mr) {
    T* dst = ap + p0 * kdim;
    const index_t rows = std::min<index_t>(mr, m - p0);
    for (index_t k = 0; k < kdim; ++k)
      for (index_t i = 0; i < mr; ++i) dst[k * mr + i] = i < rows ? T(a(p0 + i, k)) : T(0);
  }
}

// pack_a of a dense row-major A (row i at a + i * lda): the same layout and bits, with
// pointers instead of a call per element (A is packed once per operation, but on 7x7
// layers a packed weight matrix of 128 x 992 took as long as a tenth of the convolution).
template <class T, class Arch>
void pack_a_rows(index_t m, index_t kdim, const T* a, index_t lda, T* ap) {
  constexpr int mr = blocking<T, Arch>::mr;
  for (index_t p0 = 0; p0 < m; p0 += mr) {
    T* dst = ap + p0 * kdim;
    const index_t rows = std::min<index_t>(mr, m - p0);
    if (rows < mr) {
      pack_a<T, Arch>(
          rows, kdim, [&](index_t i, index_t k) { return a[(p0 + i) * lda + k]; }, dst);
      continue;
    }
    const T* row[mr];
    for (int i = 0; i < mr; ++i) row[i] = a + (p0 + i) * lda;
    for (index_t k = 0; k < kdim; ++k, dst += mr)
#pragma GCC unroll 16
      for (int i = 0; i < mr; ++i) dst[i] = row[i][k];
  }
}

// C tile (row stride ldc, cols columns) = packed A (m x kdim) * B, with B supplied by a packer:
//   packer.pack(k0, kcount, bp, ldb): rows [k0, k0 + kcount) of B, columns [0, cols), into
//     bp[k * ldb + j] (the driver zeroes the padding columns [cols, ldb))
//   finish(row0, rows): rows [row0, row0 + rows) of the tile are final, still in cache
// Loop order (Goto): a kc x cols block of B is packed once (L2) and swept by every
// block of mc rows of A (L1); each finished block of rows goes to `finish` at once.
// bp: 64-byte aligned, packed_b_size(kdim, cols) elements.
//
// With a lookahead `next` (lookahead.hpp), the packer must also give
// packer.lookahead(k0, kcount), the lines pack(k0, kcount) will read: while block k0
// computes, the microkernels prefetch the next block's lines (packer.lookahead for
// the next k0, then `next`: the first block of whatever the caller packs after this
// tile). The results are the same bits with or without it.
template <class T, class Arch, class Packer, class Finish, class Next = no_lookahead>
void gemm_tile(index_t m, index_t kdim, const T* ap, Packer& packer, T* bp, T* c, index_t ldc, index_t cols,
               Finish&& finish, const Next& next = Next{}) {
  using blk = blocking<T, Arch>;
  using kernel = microkernel<T, Arch, blk::mr, blk::nv>;
  constexpr index_t mr = blk::mr, nr = blk::nr;
  const index_t ldb = round_up(cols, nr);
  for (index_t k0 = 0; k0 < kdim; k0 += blk::kc) {
    const index_t kcount = std::min<index_t>(blk::kc, kdim - k0);
    packer.pack(k0, kcount, bp, ldb);
    if (ldb > cols)  // zero the padding columns: no stale NaN or denormals in the spare lanes
      for (index_t k = 0; k < kcount; ++k) std::fill(bp + k * ldb + cols, bp + (k + 1) * ldb, T(0));
    const bool accumulate = k0 > 0, last = k0 + kcount == kdim;
    Next ahead = next;
    if constexpr (Next::active) {
      if (!last) ahead = packer.lookahead(k0 + kcount, std::min<index_t>(blk::kc, kdim - k0 - kcount));
      ahead.pace((m / mr) * (cols / nr) * kcount);  // the full tiles' k steps
    }
    for (index_t i0 = 0; i0 < m; i0 += blk::mc) {
      const index_t i1 = std::min<index_t>(m, i0 + blk::mc);
      for (index_t j = 0; j < cols; j += nr) {
        const index_t ncols = std::min<index_t>(nr, cols - j);
        for (index_t i = i0; i < i1; i += mr) {
          const T* a = ap + i * kdim + k0 * mr;
          const index_t nrows = std::min<index_t>(mr, m - i);
          if (nrows == mr && ncols == nr)
            kernel::run(kcount, a, bp + j, ldb, c + i * ldc + j, ldc, accumulate, ahead);
          else
            kernel::run_edge(kcount, a, bp + j, ldb, c + i * ldc + j, ldc, accumulate, nrows, ncols);
        }
      }
      if (last) finish(i0, i1 - i0);
    }
  }
}

// C tile (row stride ldc, cols columns) = packed A (m x kdim) * B, with B read in place:
//   rows_for(k0, kcount): pointers to rows [k0, k0 + kcount) of B, each readable for
//     round_up(cols, nr) elements (columns past cols only feed lanes that are never stored)
//   finish(row0, rows): as in gemm_tile
// Same loop order, blocking and per-element arithmetic as gemm_tile: only where B's
// rows come from differs, so both give the same bits for the same B. A lookahead
// `next` is prefetched while the last depth block computes (B itself is in place).
template <class T, class Arch, class RowsFor, class Finish, class Next = no_lookahead>
void gemm_tile_rows(index_t m, index_t kdim, const T* ap, RowsFor&& rows_for, T* c, index_t ldc, index_t cols,
                    Finish&& finish, const Next& next = Next{}) {
  using blk = blocking<T, Arch>;
  using kernel = microkernel<T, Arch, blk::mr, blk::nv>;
  constexpr index_t mr = blk::mr, nr = blk::nr;
  for (index_t k0 = 0; k0 < kdim; k0 += blk::kc) {
    const index_t kcount = std::min<index_t>(blk::kc, kdim - k0);
    const T* const* rows = rows_for(k0, kcount);
    const bool accumulate = k0 > 0, last = k0 + kcount == kdim;
    Next ahead{};
    if constexpr (Next::active) {
      if (last) ahead = next;
      ahead.pace((m / mr) * (cols / nr) * kcount);
    }
    for (index_t i0 = 0; i0 < m; i0 += blk::mc) {
      const index_t i1 = std::min<index_t>(m, i0 + blk::mc);
      for (index_t j = 0; j < cols; j += nr) {
        const index_t ncols = std::min<index_t>(nr, cols - j);
        const indirect_rows<T> src{rows, j};
        for (index_t i = i0; i < i1; i += mr) {
          const T* a = ap + i * kdim + k0 * mr;
          const index_t nrows = std::min<index_t>(mr, m - i);
          if (nrows == mr && ncols == nr)
            kernel::run_on(kcount, a, src, c + i * ldc + j, ldc, accumulate, ahead);
          else
            kernel::run_edge_on(kcount, a, src, c + i * ldc + j, ldc, accumulate, nrows, ncols);
        }
      }
      if (last) finish(i0, i1 - i0);
    }
  }
}

}  // namespace bnff::gemm
