// bnff: the one tail policy for element-wise row transforms (vector body, scalar remainder).
#pragma once

#include <xsimd/xsimd.hpp>

#include "bnff/config.hpp"

namespace bnff::fusion::detail {

// dst[i] = op(src[i]) for i in [0, len): full batches first, then the remainder one
// element at a time. op must give the same value for an element either way (the
// prologues use fma in both, so the position of an element never changes its bits).
template <class Arch, class T, class Op>
BNFF_ALWAYS_INLINE void transform_row(const T* BNFF_RESTRICT src, T* BNFF_RESTRICT dst, index_t len, const Op& op) {
  using batch = xsimd::batch<T, Arch>;
  constexpr index_t width = index_t(batch::size);
  index_t i = 0;
  for (; i + width <= len; i += width) op(batch::load_unaligned(src + i)).store_unaligned(dst + i);
  for (; i < len; ++i) dst[i] = op(src[i]);
}

}  // namespace bnff::fusion::detail
