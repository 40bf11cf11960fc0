// bnff: the register-blocked GEMM microkernel and its edge-tile policy.
#pragma once

#include <xsimd/xsimd.hpp>

#include "bnff/config.hpp"
#include "bnff/gemm/blocking.hpp"
#include "bnff/gemm/lookahead.hpp"
#include "bnff/simd/fma.hpp"

namespace bnff::gemm {

// Where the microkernel finds row k of its B panel.
// A packed block: rows ldb apart, 64-byte aligned (ldb a multiple of the SIMD width).
template <class T>
struct packed_rows {
  const T* b;
  index_t ldb;
  static constexpr bool aligned = true;
  BNFF_ALWAYS_INLINE const T* row(index_t k) const noexcept { return b + k * ldb; }
};

// Rows anywhere in memory, one pointer each (a convolution reading shifted runs of its
// input in place of an im2col copy), offset by `col` columns; any alignment.
template <class T>
struct indirect_rows {
  const T* const* rows;
  index_t col;
  static constexpr bool aligned = false;
  BNFF_ALWAYS_INLINE const T* row(index_t k) const noexcept { return rows[k] + col; }
};

// C[MR x NV*W] (=|+=) A_panel * B_rows over kc steps, all accumulators in registers.
//   a: packed A panel, a[k * MR + i] (row i of the tile, step k)
//   b: row-major B block, b[k * ldb + j], 64-byte aligned rows (ldb a multiple of W)
//   c: any alignment, row stride ldc
template <class T, class Arch, int MR, int NV>
struct microkernel {
  using batch = xsimd::batch<T, Arch>;
  static constexpr int width = int(batch::size);
  static constexpr int nr = NV * width;

  // Keeps the B vectors of a k step in registers. With 16 vector registers GCC 12 folded
  // each load of B into every FMA that uses it (mr loads per vector instead of one): the
  // 6 x 2 tile then ran load-bound, about 10% slower on a Zen 3 core. An empty asm that
  // takes and gives back the register forbids that; it emits no instruction.
  static BNFF_ALWAYS_INLINE void pin_in_registers(batch (&bv)[NV]) noexcept {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    if constexpr (sizeof(batch) <= 32) {
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) {
        typename batch::register_type r = bv[j];
        asm("" : "+x"(r));
        bv[j] = r;
      }
    }
#else
    (void)bv;
#endif
  }

  static BNFF_ALWAYS_INLINE void run(index_t kc, const T* BNFF_RESTRICT a, const T* BNFF_RESTRICT b, index_t ldb,
                                     T* BNFF_RESTRICT c, index_t ldc, bool accumulate) noexcept {
    no_lookahead none;
    run_on(kc, a, packed_rows<T>{b, ldb}, c, ldc, accumulate, none);
  }

  // As run, stepping a lookahead (lookahead.hpp) once per k step.
  template <class Ahead>
  static BNFF_ALWAYS_INLINE void run(index_t kc, const T* BNFF_RESTRICT a, const T* BNFF_RESTRICT b, index_t ldb,
                                     T* BNFF_RESTRICT c, index_t ldc, bool accumulate, Ahead& ahead) noexcept {
    run_on(kc, a, packed_rows<T>{b, ldb}, c, ldc, accumulate, ahead);
  }

  // As run, with B's rows given by a row source (packed_rows or indirect_rows).
  template <class Rows>
  static BNFF_ALWAYS_INLINE void run_on(index_t kc, const T* BNFF_RESTRICT a, const Rows& rows, T* BNFF_RESTRICT c,
                                        index_t ldc, bool accumulate) noexcept {
    no_lookahead none;
    run_on(kc, a, rows, c, ldc, accumulate, none);
  }

  template <class Rows, class Ahead>
  static BNFF_ALWAYS_INLINE void run_on(index_t kc, const T* BNFF_RESTRICT a, const Rows& rows, T* BNFF_RESTRICT c,
                                        index_t ldc, bool accumulate, Ahead& ahead) noexcept {
    batch acc[MR][NV];
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i][j] = batch(T(0));
    for (index_t k = 0; k < kc; ++k) {
      const T* BNFF_RESTRICT b = rows.row(k);
      batch bv[NV];
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j)
        bv[j] = Rows::aligned ? batch::load_aligned(b + j * width) : batch::load_unaligned(b + j * width);
      pin_in_registers(bv);
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) {
        const batch ai(a[i]);
#pragma GCC unroll 8
        for (int j = 0; j < NV; ++j) acc[i][j] = simd::fma(ai, bv[j], acc[i][j]);
      }
      if constexpr (Ahead::active) ahead.step();
      a += MR;
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
    run_edge_on(kc, a, packed_rows<T>{b, ldb}, c, ldc, accumulate, rows, cols);
  }

  template <class Rows>
  static void run_edge_on(index_t kc, const T* a, const Rows& src, T* c, index_t ldc, bool accumulate, index_t rows,
                          index_t cols) noexcept {
    alignas(64) T tile[MR * nr];
    run_on(kc, a, src, tile, nr, false);
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
