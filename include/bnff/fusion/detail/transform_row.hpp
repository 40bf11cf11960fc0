// bnff: the one tail policy for element-wise row transforms (vector body; the remainder
// as one masked batch where that is one instruction, else one element at a time).
#pragma once

#include <xsimd/xsimd.hpp>

#include "bnff/config.hpp"
#include "bnff/simd/load_partial.hpp"
#include "bnff/simd/store_partial.hpp"

namespace bnff::fusion::detail {

// dst[i] = op(src[i]) for i in [0, len): full batches first, then the remainder as a
// masked batch (AVX-512) or one element at a time. op must give the same value for an
// element either way (the prologues round the scalar form as a lane, simd::fma_lane, so
// the position of an element never changes its bits). Short rows (7 or 14 elements of a
// small plane) are all remainder: a scalar loop there cost more than the copy.
template <class Arch, class T, class Op>
BNFF_ALWAYS_INLINE void transform_row(const T* BNFF_RESTRICT src, T* BNFF_RESTRICT dst, index_t len, const Op& op) {
  using batch = xsimd::batch<T, Arch>;
  constexpr index_t width = index_t(batch::size);
  index_t i = 0;
  for (; i + width <= len; i += width) op(batch::load_unaligned(src + i)).store_unaligned(dst + i);
  if constexpr (simd::masked_lanes<T, Arch>) {
    if (i < len) simd::store_partial<T, Arch>(dst + i, op(simd::load_partial<Arch>(src + i, len - i, T(0))), len - i);
  } else {
    for (; i < len; ++i) dst[i] = op(src[i]);
  }
}

}  // namespace bnff::fusion::detail
