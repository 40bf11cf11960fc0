// bnff: the register-blocked GEMM microkernel and its edge-tile policy.
#pragma once

#include <xsimd/xsimd.hpp>

#include "bnff/config.hpp"
#include "bnff/gemm/blocking.hpp"

namespace bnff::gemm {

// C[MR x NV*W] (=|+=) A_panel * B_rows over kc steps, all accumulators in registers.
//   a: packed A panel, a[k * MR + i] (row i of the tile, step k)
//   b: row-major B block, b[k * ldb + j], 64-byte aligned rows (ldb a multiple of W)
//   c: any alignment, row stride ldc
template <class T, class Arch, int MR, int NV>
struct microkernel {
  using batch = xsimd::batch<T, Arch>;
  static constexpr int width = int(batch::size);
  static constexpr int nr = NV * width;

  static BNFF_ALWAYS_INLINE void run(index_t kc, const T* BNFF_RESTRICT a, const T* BNFF_RESTRICT b, index_t ldb,
                                     T* BNFF_RESTRICT c, index_t ldc, bool accumulate) noexcept {
    batch acc[MR][NV];
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i][j] = batch(T(0));
    for (index_t k = 0; k < kc; ++k) {
      batch bv[NV];
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) bv[j] = batch::load_aligned(b + j * width);
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) {
        const batch ai(a[i]);
#pragma GCC unroll 8
        for (int j = 0; j < NV; ++j) acc[i][j] = xsimd::fma(ai, bv[j], acc[i][j]);
      }
      a += MR;
      b += ldb;
    }
    if (accumulate) {
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
        for (int j = 0; j < NV; ++j) {
          T* p = c + i * ldc + j * width;
          (acc[i][j] + batch::load_unaligned(p)).store_unaligned(p);
        }
    } else {
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
        for (int j = 0; j < NV; ++j) acc[i][j].store_unaligned(c + i * ldc + j * width);
    }
  }

  // Edge-tile policy: a tile with fewer than MR valid rows or nr valid columns
  // is computed whole into an aligned scratch tile (A and B are zero-padded, so
  // the extra lanes are harmless), then only its valid part is stored.
  static void run_edge(index_t kc, const T* a, const T* b, index_t ldb, T* c, index_t ldc, bool accumulate,
                       index_t rows, index_t cols) noexcept {
    alignas(64) T tile[MR * nr];
    run(kc, a, b, ldb, tile, nr, false);
    for (index_t i = 0; i < rows; ++i) {
      T* ci = c + i * ldc;
      const T* ti = tile + i * nr;
      if (accumulate)
        for (index_t j = 0; j < cols; ++j) ci[j] += ti[j];
      else
        for (index_t j = 0; j < cols; ++j) ci[j] = ti[j];
    }
  }
};

}  // namespace bnff::gemm
