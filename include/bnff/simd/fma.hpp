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

// a * b + c for one element, rounded exactly as simd::fma rounds a lane on Arch: once
// where Arch has an FMA instruction, twice where xsimd falls back to a multiply and an
// add (x86-64 before Haswell). Scalar tails call this, so that an element gives the same
// bits whether a kernel reaches it in a batch or alone (std::fma would round once always).
template <class Arch, class T>
BNFF_ALWAYS_INLINE T fma_lane(T a, T b, T c) noexcept {
  using batch = xsimd::batch<T, Arch>;
  return simd::fma(batch(a), batch(b), batch(c)).get(0);
}

}  // namespace bnff::simd
