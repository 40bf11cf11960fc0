// bnff: non-temporal (streaming) stores of a full batch.
#pragma once

#include <xsimd/xsimd.hpp>

#include <type_traits>

#include "bnff/config.hpp"

#if defined(__SSE2__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace bnff::simd {

// *p = v, bypassing the caches where the instruction set allows: an output
// larger than the caches then costs one write instead of a read for ownership
// plus a write. p must be aligned to Arch::alignment(). Streamed stores are
// weakly ordered: call stream_fence() before other threads read the data.
template <class T, class Arch>
BNFF_ALWAYS_INLINE void store_stream(T* p, const xsimd::batch<T, Arch>& v) noexcept {
  // Escape hatch: xsimd 8 has no streaming store.
#if defined(__AVX512F__)
  if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, float>) {
    _mm512_stream_ps(p, v);
    return;
  } else if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, double>) {
    _mm512_stream_pd(p, v);
    return;
  }
#endif
#if defined(__AVX__)
  if constexpr (std::is_base_of_v<xsimd::avx, Arch> && std::is_same_v<T, float>) {
    _mm256_stream_ps(p, v);
    return;
  } else if constexpr (std::is_base_of_v<xsimd::avx, Arch> && std::is_same_v<T, double>) {
    _mm256_stream_pd(p, v);
    return;
  }
#endif
#if defined(__SSE2__)
  if constexpr (std::is_base_of_v<xsimd::sse2, Arch> && std::is_same_v<T, float>) {
    _mm_stream_ps(p, v);
    return;
  } else if constexpr (std::is_base_of_v<xsimd::sse2, Arch> && std::is_same_v<T, double>) {
    _mm_stream_pd(p, v);
    return;
  }
#endif
  v.store_aligned(p);
}

// Orders streamed stores before any later store (a release for the data).
BNFF_ALWAYS_INLINE void stream_fence() noexcept {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

}  // namespace bnff::simd
