// bnff: BN apply + ReLU, computed while the convolution packs its input.
#pragma once

#include <cmath>
#include <xsimd/xsimd.hpp>

#include "bnff/config.hpp"
#include "bnff/fusion/detail/transform_row.hpp"
#include "bnff/simd/fma.hpp"

namespace bnff {

// a = max(0, x * scale[c] + shift[c])   (BN apply + ReLU, recomputed, never stored)
// Padding belongs to a, not to x: the packer writes zeros there without calling this.
template <class T>
struct scale_shift_relu_prologue {
  const T* scale = nullptr;  // per input channel: gamma * invstd
  const T* shift = nullptr;  // per input channel: beta - mean * scale

  // One element, rounded as a lane of the default arch's transform (the engines' Arch).
  T operator()(index_t c, T x) const noexcept {
    const T a = simd::fma_lane<xsimd::default_arch>(x, scale[c], shift[c]);
    return a > T(0) ? a : T(0);
  }

  template <class Arch>
  BNFF_ALWAYS_INLINE void transform(index_t c, const T* src, T* dst, index_t len) const noexcept {
    using batch = xsimd::batch<T, Arch>;
    const T sc = scale[c], sh = shift[c];
    const batch vsc(sc), vsh(sh), zero(T(0));
    fusion::detail::transform_row<Arch>(src, dst, len, [&](const auto& x) {
      if constexpr (std::is_same_v<std::decay_t<decltype(x)>, T>) {
        const T a = simd::fma_lane<Arch>(x, sc, sh);
        return a > T(0) ? a : T(0);
      } else {
        const batch a = simd::fma(x, vsc, vsh);
        return xsimd::select(a > zero, a, zero);  // as the scalar form: NaN maps to 0 in both
      }
    });
  }
};

}  // namespace bnff
