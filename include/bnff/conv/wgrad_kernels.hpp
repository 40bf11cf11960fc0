// bnff: the weight gradient's two building blocks, shared by the direct engine
// (conv2d_backward_engine.hpp) and the Winograd one (winograd_wgrad.hpp): dY turned
// into dY^T, and the outer-product register tile.
#pragma once

#include <algorithm>
#include <xsimd/xsimd.hpp>

#include "bnff/config.hpp"
#include "bnff/simd/fma.hpp"
#include "bnff/simd/transpose.hpp"

namespace bnff::detail {

// dst[p * lda + i] = row(i)[p] for p < len and i < nrows (zero for nrows <= i < nrows_p, a
// multiple of the width): rows of dY turned into dY^T, a batch-square tile at a time. The
// last tile of a row may write up to width - 1 positions past len, as zeros: dst must have
// room for them (they are overwritten by what is packed next, or zeroed as padding).
template <class T, class Arch, class Row>
void pack_transposed(index_t nrows, index_t nrows_p, index_t len, const Row& row, T* dst, index_t lda) {
  constexpr index_t width = index_t(xsimd::batch<T, Arch>::size);
  alignas(64) T tile[width * width];
  const T* src[width];
  for (index_t i0 = 0; i0 < nrows_p; i0 += width) {
    const index_t ni = std::clamp<index_t>(nrows - i0, 0, width);
    for (index_t p0 = 0; p0 < len; p0 += width) {
      const index_t np = std::min(width, len - p0);
      if (ni == width && np == width) {
        for (index_t r = 0; r < width; ++r) src[r] = row(i0 + r) + p0;
      } else {
        for (index_t r = 0; r < width; ++r) {
          T* t = tile + r * width;
          const index_t valid = r < ni ? np : 0;
          if (valid > 0) std::copy(row(i0 + r) + p0, row(i0 + r) + p0 + valid, t);
          std::fill(t + valid, t + width, T(0));
          src[r] = t;
        }
      }
      simd::transpose_tile<T, Arch>(src, dst + p0 * lda + i0, lda);
    }
  }
}

// c[i * ldc + v * W + l] (=|+=) sum_{k < kc} rows[i][k0 + k] * at[k * lda + v * W + l] for
// i < MR, v < NV, l < W: an MR x NV*W tile of dW^T as MR * NV FMA chains, one outer product
// per position. rows: MR im2col rows, any alignment (each element is broadcast); at: dY^T,
// aligned rows lda apart (a multiple of W); c: aligned, ldc a multiple of W.
template <class T, class Arch, int MR, int NV>
BNFF_ALWAYS_INLINE void wgrad_block(index_t kc, const T* const* rows, index_t k0, const T* BNFF_RESTRICT at,
                                    index_t lda, T* BNFF_RESTRICT c, index_t ldc, bool accumulate) noexcept {
  using batch = xsimd::batch<T, Arch>;
  constexpr index_t width = index_t(batch::size);
  const T* r[MR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) r[i] = rows[i] + k0;
  batch acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = batch(T(0));
  for (index_t k = 0; k < kc; ++k, at += lda) {
    batch b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = batch::load_aligned(at + v * width);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const batch a(r[i][k]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = simd::fma(a, b[v], acc[i][v]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      T* p = c + i * ldc + v * width;
      if (accumulate)
        (acc[i][v] + batch::load_aligned(p)).store_aligned(p);
      else
        acc[i][v].store_aligned(p);
    }
}

}  // namespace bnff::detail
