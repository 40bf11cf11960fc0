// bnff: the prologue that packs the convolution input as stored.
#pragma once

#include "bnff/config.hpp"
#include "bnff/fusion/detail/transform_row.hpp"

namespace bnff {

// a = x   (the input as stored)
struct identity_prologue {
  template <class T>
  T operator()(index_t, T x) const noexcept {
    return x;
  }
  // Copy a run of channel c into the packed block: an inline SIMD loop, since the packers
  // copy thousands of runs of a few hundred elements and a library memmove call per run
  // (size dispatch, rep movsb start-up) costs more than the copy itself.
  template <class Arch, class T>
  BNFF_ALWAYS_INLINE void transform(index_t, const T* src, T* dst, index_t len) const noexcept {
    fusion::detail::transform_row<Arch>(src, dst, len, [](const auto& v) { return v; });
  }
};

}  // namespace bnff
