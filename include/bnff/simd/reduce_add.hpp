// bnff: horizontal sums of a batch, in a fixed order.
#pragma once

#include <xsimd/xsimd.hpp>

#include <type_traits>

#include "bnff/config.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace bnff::simd {

// GCC 12 flags the deliberately undefined upper lanes inside its own AVX-512
// extract/convert intrinsics as maybe-uninitialized (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// Sum of the lanes in T, by xsimd's fixed shuffle tree for Arch: same input, same bits.
template <class T, class Arch>
BNFF_ALWAYS_INLINE T reduce_add(const xsimd::batch<T, Arch>& v) noexcept {
  return xsimd::hadd(v);
}

// Sum of the lanes in double, each float lane widened first: how a float
// partial sum is flushed into a double total without a further rounding in float.
template <class T, class Arch>
BNFF_ALWAYS_INLINE double reduce_add_double(const xsimd::batch<T, Arch>& v) noexcept {
  if constexpr (std::is_same_v<T, double>) {
    return xsimd::hadd(v);
  } else {
#if defined(__AVX512F__)
    // Escape hatch: xsimd 8 has no float -> double widening of a batch.
    if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, float>) {
      const __m512 r = v;
      const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(r));
      const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(r), 1)));
      return xsimd::hadd(xsimd::batch<double, Arch>(_mm512_add_pd(lo, hi)));
    } else
#endif
    {
      constexpr std::size_t w = xsimd::batch<T, Arch>::size;
      alignas(Arch::alignment()) T lanes[w];
      v.store_aligned(lanes);
      // A pairwise tree in double: lane i with lane i + w/2, then halve again.
      double acc[w];
      for (std::size_t i = 0; i < w; ++i) acc[i] = double(lanes[i]);
      for (std::size_t half = w / 2; half >= 1; half /= 2)
        for (std::size_t i = 0; i < half; ++i) acc[i] += acc[i + half];
      return acc[0];
    }
  }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace bnff::simd
