// bnff: per-output-channel statistics accumulated from each output block while it is in cache.
#pragma once

#include <xsimd/xsimd.hpp>

#include "bnff/config.hpp"
#include "bnff/fusion/output_tile.hpp"
#include "bnff/fusion/store_epilogue.hpp"
#include "bnff/stats/block_moments.hpp"
#include "bnff/stats/stats_partition.hpp"

namespace bnff {

// partial[k, n, b] = block_moments(y[n, k, block b])   (after Inner; merged later with Chan's formula)
// The engine's column tiles start on block boundaries of `partition`, so every block
// lies inside one tile and the partials equal the standalone statistics kernel's, bit for bit,
// provided both run block_moments with the same Arch (the engine's).
template <class T, class Arch = xsimd::default_arch, class Inner = store_epilogue<T>>
struct channel_stats_epilogue {
  Inner inner{};
  stats_partition partition{};
  moments* partials = nullptr;

  void operator()(const output_tile<T>& t) const noexcept {
    inner(t);
    const index_t block = partition.block;
    for (index_t i = 0; i < t.rows; ++i) {
      const T* row = t.data + i * t.ldc;
      for (index_t j = 0; j < t.cols; j += block) {
        const index_t b = (t.col0 + j) / block;
        const index_t len = (t.cols - j < block) ? t.cols - j : block;
        partials[partition.slot(t.k0 + i, t.n, b)] = block_moments<T, Arch>(row + j, len);
      }
    }
  }
};

}  // namespace bnff
