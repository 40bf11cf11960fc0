// bnff: how a backward kernel writes its input gradient (types, not flags).
#pragma once

#include <utility>

#include "bnff/config.hpp"

namespace bnff {

// dx = g
struct grad_overwrite {
  static constexpr bool reads_output = false;
  template <class B>
  static BNFF_ALWAYS_INLINE B combine(const B& /*old*/, const B& g) noexcept {
    return g;
  }
};

// dx += g   (a tensor read by several layers, as a DenseNet concatenation, sums its gradients)
struct grad_accumulate {
  static constexpr bool reads_output = true;
  template <class B>
  static BNFF_ALWAYS_INLINE B combine(const B& old, const B& g) noexcept {
    return old + g;
  }
};

// f(grad_accumulate{}) or f(grad_overwrite{}): the bridge for callers that choose at run time.
template <class F>
void with_grad_mode(bool accumulate, F&& f) {
  if (accumulate)
    std::forward<F>(f)(grad_accumulate{});
  else
    std::forward<F>(f)(grad_overwrite{});
}

}  // namespace bnff
