// bnff: the prologue that packs the convolution input as stored.
#pragma once

#include <algorithm>

#include "bnff/config.hpp"

namespace bnff {

// a = x   (the input as stored)
struct identity_prologue {
  template <class T>
  T operator()(index_t, T x) const noexcept {
    return x;
  }
  // Copy a run of channel c into the packed block.
  template <class Arch, class T>
  BNFF_ALWAYS_INLINE void transform(index_t, const T* src, T* dst, index_t len) const noexcept {
    std::copy(src, src + len, dst);
  }
};

}  // namespace bnff
