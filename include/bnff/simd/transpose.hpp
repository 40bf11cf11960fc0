// bnff: transpose of a square tile of one batch width.
#pragma once

#include <xsimd/xsimd.hpp>

#include <type_traits>

#include "bnff/config.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace bnff::simd {

// dst[j * ld_dst + i] = src[i][j] for i, j < W (W = the batch width): row i of the tile
// is read from src[i] (W elements, any alignment), column j is written, as a row of W
// elements, at dst + j * ld_dst (any alignment). Copies only: the bits are kept.
template <class T, class Arch>
BNFF_ALWAYS_INLINE void transpose_tile(const T* const* src, T* dst, index_t ld_dst) noexcept {
  using batch = xsimd::batch<T, Arch>;
  constexpr int width = int(batch::size);
  // Escape hatch: xsimd 8 has no cross-lane transpose (its AVX-512 zip_lo/zip_hi interleave
  // within 128-bit lanes only); 16 x 16 floats take 64 shuffles instead of 256 scalar moves.
#if defined(__AVX512F__)
  if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, float>) {
    __m512 r[16], t[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src[i]);
    // Pairs of rows interleaved (per 128-bit lane: a0 b0 a1 b1 | a2 b2 a3 b3).
    for (int i = 0; i < 16; i += 2) {
      t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    // Groups of four rows: each 128-bit lane holds one column of 4 rows.
    for (int i = 0; i < 16; i += 4)
      for (int h = 0; h < 2; ++h) {
        const __m512d a = _mm512_castps_pd(t[i + h]), b = _mm512_castps_pd(t[i + 2 + h]);
        r[i + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        r[i + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
      }
    // r[4g + c] lane l (l = 0..3) holds column 4l + c of rows 4g .. 4g + 3: move the
    // 128-bit lanes so that column 4l + c gathers rows 0 .. 15.
    for (int c = 0; c < 4; ++c) {
      const __m512 a01lo = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x44);   // g0 l0 l1, g1 l0 l1
      const __m512 a01hi = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xEE);   // g0 l2 l3, g1 l2 l3
      const __m512 a23lo = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x44);
      const __m512 a23hi = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xEE);
      t[c] = _mm512_shuffle_f32x4(a01lo, a23lo, 0x88);       // lane 0 of g0..g3: column c
      t[4 + c] = _mm512_shuffle_f32x4(a01lo, a23lo, 0xDD);   // lane 1: column 4 + c
      t[8 + c] = _mm512_shuffle_f32x4(a01hi, a23hi, 0x88);   // lane 2: column 8 + c
      t[12 + c] = _mm512_shuffle_f32x4(a01hi, a23hi, 0xDD);  // lane 3: column 12 + c
    }
    for (int j = 0; j < 16; ++j) _mm512_storeu_ps(dst + j * ld_dst, t[j]);
    return;
  }
#endif
  for (int j = 0; j < width; ++j)
    for (int i = 0; i < width; ++i) dst[j * ld_dst + i] = src[i][j];
}

}  // namespace bnff::simd
