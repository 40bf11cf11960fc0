// bnff: the epilogue that leaves the convolution output as computed, plus an optional bias.
#pragma once

#include "bnff/config.hpp"
#include "bnff/fusion/output_tile.hpp"

namespace bnff {

// y[k] = acc[k] + bias[k]   (bias optional: nullptr leaves acc as it is)
template <class T>
struct store_epilogue {
  const T* bias = nullptr;

  void operator()(const output_tile<T>& t) const noexcept {
    if (!bias) return;
    for (index_t i = 0; i < t.rows; ++i) {
      const T b = bias[t.k0 + i];
      T* row = t.data + i * t.ldc;
      for (index_t j = 0; j < t.cols; ++j) row[j] += b;
    }
  }
};

}  // namespace bnff
