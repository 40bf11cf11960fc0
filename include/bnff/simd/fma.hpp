// bnff: fused multiply-add on batches, fused on every arch that has the instruction.
#pragma once

#include <xsimd/xsimd.hpp>

#include <type_traits>

#include "bnff/config.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace bnff::simd {

// a * b + c, rounded once. Escape hatch: xsimd 8.1 has no AVX-512 fma and falls back to
// a * b + c, which is fused only when the compiler contracts it (not at -O1), so fused and
// unfused kernels could round differently. Every other arch goes through xsimd::fma.
template <class T, class Arch>
BNFF_ALWAYS_INLINE xsimd::batch<T, Arch> fma(const xsimd::batch<T, Arch>& a, const xsimd::batch<T, Arch>& b,
                                             const xsimd::batch<T, Arch>& c) noexcept {
#if defined(__AVX512F__)
  if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, float>)
    return _mm512_fmadd_ps(a, b, c);
  else if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, double>)
    return _mm512_fmadd_pd(a, b, c);
  else
#endif
    return xsimd::fma(a, b, c);
}

// a * b - c, rounded once (the same escape hatch).
template <class T, class Arch>
BNFF_ALWAYS_INLINE xsimd::batch<T, Arch> fms(const xsimd::batch<T, Arch>& a, const xsimd::batch<T, Arch>& b,
                                             const xsimd::batch<T, Arch>& c) noexcept {
#if defined(__AVX512F__)
  if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, float>)
    return _mm512_fmsub_ps(a, b, c);
  else if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, double>)
    return _mm512_fmsub_pd(a, b, c);
  else
#endif
    return xsimd::fms(a, b, c);
}

}  // namespace bnff::simd
