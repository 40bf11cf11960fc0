// bnff: horizontal sums of a batch, in a fixed order.
#pragma once

#include <xsimd/xsimd.hpp>

#include <type_traits>

#include "bnff/config.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace bnff::detail {

#if defined(__AVX512F__)
// Escape hatch for AVX-512. xsimd 8 has no float -> double widening, and the
// intrinsics xsimd and GCC 12 use to split a 512-bit register start from a
// deliberately undefined value, which GCC 12 then reports as (maybe-)
// uninitialized wherever the code is inlined. These use zero-masked forms only.
inline __m256d avx512_half_pd(__m512d v, bool upper) noexcept {
  return upper ? _mm512_maskz_extractf64x4_pd(0xF, v, 1) : _mm512_maskz_extractf64x4_pd(0xF, v, 0);
}

// Lanes 0-3 + lanes 4-7, then pairwise within the 128-bit halves: a fixed tree.
inline double avx512_sum_pd(__m512d v) noexcept {
  const __m256d q = _mm256_add_pd(avx512_half_pd(v, false), avx512_half_pd(v, true));
  const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(q), _mm256_extractf128_pd(q, 1));
  return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}

inline float avx512_sum_ps(__m512 v) noexcept {
  const __m512d d = _mm512_castps_pd(v);
  const __m256 o = _mm256_add_ps(_mm256_castpd_ps(avx512_half_pd(d, false)), _mm256_castpd_ps(avx512_half_pd(d, true)));
  const __m128 h = _mm_add_ps(_mm256_castps256_ps128(o), _mm256_extractf128_ps(o, 1));
  const __m128 p = _mm_add_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_add_ss(p, _mm_shuffle_ps(p, p, 1)));
}

// Each float lane widened to double, then summed as avx512_sum_pd.
inline double avx512_sum_ps_as_pd(__m512 v) noexcept {
  const __m512d d = _mm512_castps_pd(v);
  const __m512d lo = _mm512_maskz_cvtps_pd(0xFF, _mm256_castpd_ps(avx512_half_pd(d, false)));
  const __m512d hi = _mm512_maskz_cvtps_pd(0xFF, _mm256_castpd_ps(avx512_half_pd(d, true)));
  return avx512_sum_pd(_mm512_add_pd(lo, hi));
}
#endif

}  // namespace bnff::detail

namespace bnff::simd {

// Sum of the lanes in T by a fixed tree for Arch: same input, same bits.
template <class T, class Arch>
BNFF_ALWAYS_INLINE T reduce_add(const xsimd::batch<T, Arch>& v) noexcept {
#if defined(__AVX512F__)
  if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, float>)
    return bnff::detail::avx512_sum_ps(v);
  else if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, double>)
    return bnff::detail::avx512_sum_pd(v);
  else
#endif
    return xsimd::hadd(v);
}

// Sum of the lanes in double, each float lane widened first: how a float
// partial sum is flushed into a double total without a further rounding in float.
template <class T, class Arch>
BNFF_ALWAYS_INLINE double reduce_add_double(const xsimd::batch<T, Arch>& v) noexcept {
  if constexpr (std::is_same_v<T, double>) {
    return reduce_add(v);
  } else {
#if defined(__AVX512F__)
    if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, float>) {
      return bnff::detail::avx512_sum_ps_as_pd(v);
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

}  // namespace bnff::simd
