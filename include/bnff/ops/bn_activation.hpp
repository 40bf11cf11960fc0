// bnff: what follows batch normalization, as fusion pieces (types, not flags).
#pragma once

#include <xsimd/xsimd.hpp>

#include "bnff/config.hpp"

namespace bnff {

// z = y   (BN alone)
struct bn_identity {
  template <class B>
  static BNFF_ALWAYS_INLINE B forward(const B& y) noexcept {
    return y;
  }
  // dy = dz
  template <class B>
  static BNFF_ALWAYS_INLINE B backward(const B& /*y*/, const B& dz) noexcept {
    return dz;
  }
};

// z = max(0, y)   (BN + ReLU; backward recomputes the mask [y > 0] from x, never stores it)
struct bn_relu {
  // A NaN y stays NaN (it is not clamped to 0): bad statistics stay visible.
  template <class B>
  static BNFF_ALWAYS_INLINE B forward(const B& y) noexcept {
    return xsimd::select(y < B(0), B(0), y);
  }
  // dy = dz * [y > 0]
  template <class B>
  static BNFF_ALWAYS_INLINE B backward(const B& y, const B& dz) noexcept {
    return xsimd::select(y > B(0), dz, B(0));
  }
};

}  // namespace bnff
