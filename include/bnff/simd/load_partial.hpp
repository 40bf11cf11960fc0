// bnff: load the first `count` elements of a batch, padding the rest.
#pragma once

#include <xsimd/xsimd.hpp>

#include <cstring>
#include <type_traits>

#include "bnff/config.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace bnff::simd {

// Whether load_partial and store_partial are single masked instructions for T on Arch
// (AVX-512, float and double); elsewhere they go through a buffer on the stack.
template <class T, class Arch>
constexpr bool masked_lanes =
#if defined(__AVX512F__)
    std::is_base_of_v<xsimd::avx512f, Arch> && (std::is_same_v<T, float> || std::is_same_v<T, double>);
#else
    false;
#endif

// Lanes [0, count) from p[0, count), lanes [count, W) equal to `fill`; reads
// no element at or past p + count. 0 <= count <= W. With a neutral fill the
// padded lanes drop out of a reduction, so a tail needs no separate loop.
template <class Arch = xsimd::default_arch, class T>
BNFF_ALWAYS_INLINE xsimd::batch<T, Arch> load_partial(const T* p, index_t count, T fill) noexcept {
  using batch = xsimd::batch<T, Arch>;
#if defined(__AVX512F__)
  // Escape hatch: AVX-512 masked loads suppress faults on masked-off lanes.
  if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, float>) {
    const __mmask16 m = __mmask16((1u << count) - 1u);
    return batch(_mm512_mask_loadu_ps(_mm512_set1_ps(fill), m, p));
  } else if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, double>) {
    const __mmask8 m = __mmask8((1u << count) - 1u);
    return batch(_mm512_mask_loadu_pd(_mm512_set1_pd(fill), m, p));
  } else
#endif
  {
    alignas(Arch::alignment()) T tmp[batch::size];
    for (std::size_t i = 0; i < batch::size; ++i) tmp[i] = fill;
    if (count > 0) std::memcpy(tmp, p, std::size_t(count) * sizeof(T));
    return batch::load_aligned(tmp);
  }
}

}  // namespace bnff::simd
