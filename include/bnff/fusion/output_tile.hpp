// bnff: the finished block of convolution output an epilogue receives.
#pragma once

#include "bnff/config.hpp"

namespace bnff {

// Rows [k0, k0 + rows) (output channels of the view) and columns [col0, col0 + cols)
// (positions in the P x Q plane) of image n, final and still in cache.
// Element (i, j) is data[i * ldc + j].
template <class T>
struct output_tile {
  T* data;
  index_t ldc;
  index_t n, k0, rows, col0, cols;
};

}  // namespace bnff
