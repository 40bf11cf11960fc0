// bnff: store the first `count` lanes of a batch.
#pragma once

#include <xsimd/xsimd.hpp>

#include <cstring>
#include <type_traits>

#include "bnff/config.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace bnff::simd {

// p[0, count) = lanes [0, count) of v; writes no element at or past p + count.
// 0 <= count <= W.
template <class T, class Arch>
BNFF_ALWAYS_INLINE void store_partial(T* p, const xsimd::batch<T, Arch>& v, index_t count) noexcept {
  using batch = xsimd::batch<T, Arch>;
#if defined(__AVX512F__)
  // Escape hatch: AVX-512 masked stores leave masked-off lanes untouched.
  if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, float>) {
    _mm512_mask_storeu_ps(p, __mmask16((1u << count) - 1u), v);
  } else if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, double>) {
    _mm512_mask_storeu_pd(p, __mmask8((1u << count) - 1u), v);
  } else
#endif
  {
    alignas(Arch::alignment()) T tmp[batch::size];
    v.store_aligned(tmp);
    if (count > 0) std::memcpy(p, tmp, std::size_t(count) * sizeof(T));
  }
}

}  // namespace bnff::simd
