// bnff: 3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3).
//
// Each 2 x 2 block of output (a tile) comes from the 4 x 4 block of input under it:
//   Y = A^T [ U .* V ] A,   U = G g G^T (per filter k, c),   V = B^T d B (per channel c, tile)
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
//   G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
//   A^T = [1 1 1 0; 0 1 -1 -1]
// Summed over channels, the 16 element-wise products of a tile are 16 GEMMs, one per
// position xi of the 4 x 4 transform: M_xi[K x tiles] = U_xi[K x C] * V_xi[C x tiles],
// run on the same blocked GEMM and microkernel as the direct engine: 16 multiply-adds per
// tile and channel instead of 36, 2.25 times fewer, for a few additions per element in
// the transforms (which stay in cache: a task transforms one band of tiles at a time).
//
// Fusion is as in the direct engine: the prologue (BN + ReLU) runs on each input row as
// it is read, padding zero after it; each image's output goes to the epilogue in the
// direct engine's output tiles (so the statistics partition is the same), once the image
// is complete and still in cache. A task is one image; the result does not depend on the
// thread count.
#pragma once

#include <algorithm>
#include <type_traits>
#include <xsimd/xsimd.hpp>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "bnff/config.hpp"
#include "bnff/conv/conv2d_problem.hpp"
#include "bnff/fusion/output_tile.hpp"
#include "bnff/gemm/block_gemm.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff::detail {

// Planes of more output positions than this take the Winograd path (3x3, stride 1).
// Smaller planes (14 x 14, 7 x 7) have too few tiles per image to fill the GEMM's
// register tiles; they stay on the direct engine's image groups.
constexpr index_t winograd_min_plane = 256;

inline bool winograd_eligible(const conv2d_problem& pb) noexcept {
  return pb.r == 3 && pb.s == 3 && pb.stride == 1 && pb.p() * pb.q() > winograd_min_plane;
}

// How one image is cut: tiles of 2 x 2 outputs, in row-major order, in bands of `band`
// tiles (a multiple of the register tile's nr, so that the 16 GEMMs run full tiles).
template <class T, class Arch>
struct winograd_layout {
  using blk = gemm::blocking<T, Arch>;
  static constexpr index_t width = index_t(xsimd::batch<T, Arch>::size);
  index_t th = 0, tw = 0;   // tile rows and columns: ceil(P / 2), ceil(Q / 2)
  index_t tiles = 0;        // th * tw per image
  index_t band = 0;         // tiles per band
  index_t ld = 0;           // row stride of V and M: band + width (a vector store may run past a band)
  index_t row_ld = 0;       // one deinterleaved half of an input row
  index_t rows_max = 0;     // padded input rows one band reads
  index_t line_ld = 0;      // one input row through the prologue, zero past W
  index_t packed_u = 0;     // elements of one packed U_xi

  explicit winograd_layout(const conv2d_problem& pb) noexcept {
    th = (pb.p() + 1) / 2;
    tw = (pb.q() + 1) / 2;
    tiles = th * tw;
    // V_xi of a band (C x band per xi, 16 of them) stays in L2: about 256 KiB of it.
    const index_t fit = index_t(256 * 1024 / (16 * sizeof(T))) / std::max<index_t>(pb.c, 1);
    band = std::max<index_t>(blk::nr, fit / blk::nr * blk::nr);
    band = std::min(band, gemm::round_up(tiles, blk::nr));
    ld = band + width;
    row_ld = gemm::round_up(tw + 1 + width, width);
    rows_max = 2 * gemm::ceil_div(band, tw) + 4;
    line_ld = 2 * row_ld;
    packed_u = gemm::packed_a_size<T, Arch>(pb.k, pb.c);
  }

  index_t weights_size() const noexcept { return gemm::aligned_extent<T>(16 * packed_u); }
  index_t v_size(const conv2d_problem& pb) const noexcept { return gemm::aligned_extent<T>(16 * pb.c * ld); }
  index_t m_size(const conv2d_problem& pb) const noexcept { return gemm::aligned_extent<T>(16 * pb.k * ld); }
  index_t rows_size() const noexcept { return gemm::aligned_extent<T>(2 * rows_max * row_ld); }
  index_t lines_size() const noexcept { return gemm::aligned_extent<T>(rows_max * line_ld); }
  index_t scratch_size(const conv2d_problem& pb) const noexcept {
    return v_size(pb) + m_size(pb) + rows_size() + lines_size();
  }
};

// ev[i] = src[2i], od[i] = src[2i + 1] for i in [0, count), count a multiple of the SIMD
// width. Escape hatch: xsimd 8 has no two-source permute; other targets copy one by one.
template <class Arch, class T>
BNFF_ALWAYS_INLINE void deinterleave(const T* BNFF_RESTRICT src, T* BNFF_RESTRICT ev, T* BNFF_RESTRICT od,
                                     index_t count) noexcept {
#if defined(__AVX512F__)
  if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, float>) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (index_t i = 0; i < count; i += 16) {
      const __m512 a = _mm512_loadu_ps(src + 2 * i), b = _mm512_loadu_ps(src + 2 * i + 16);
      _mm512_storeu_ps(ev + i, _mm512_permutex2var_ps(a, even, b));
      _mm512_storeu_ps(od + i, _mm512_permutex2var_ps(a, odd, b));
    }
    return;
  }
  if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, double>) {
    const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    const __m512i odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
    for (index_t i = 0; i < count; i += 8) {
      const __m512d a = _mm512_loadu_pd(src + 2 * i), b = _mm512_loadu_pd(src + 2 * i + 8);
      _mm512_storeu_pd(ev + i, _mm512_permutex2var_pd(a, even, b));
      _mm512_storeu_pd(od + i, _mm512_permutex2var_pd(a, odd, b));
    }
    return;
  }
#endif
  for (index_t i = 0; i < count; ++i) ev[i] = src[2 * i], od[i] = src[2 * i + 1];
}

// U_xi(k, c) = (G g_kc G^T)[xi / 4][xi % 4], in double, rounded once to T, packed as
// gemm::pack_a packs a K x C matrix (16 of them, packed_u elements apart).
template <class T, class Arch>
void winograd_pack_weights(const conv2d_problem& pb, const tensor_view<const T>& w, index_t packed_u, T* ap) {
  constexpr int mr = gemm::blocking<T, Arch>::mr;
  for (index_t p0 = 0; p0 < pb.k; p0 += mr)
    for (index_t c = 0; c < pb.c; ++c)
      for (index_t i = 0; i < mr; ++i) {
        double u[4][4] = {};
        if (p0 + i < pb.k) {
          double gg[4][3];  // G g
          for (int s = 0; s < 3; ++s) {
            const double g0 = double(w(p0 + i, c, 0, s)), g1 = double(w(p0 + i, c, 1, s)),
                         g2 = double(w(p0 + i, c, 2, s));
            gg[0][s] = g0;
            gg[1][s] = 0.5 * (g0 + g1 + g2);
            gg[2][s] = 0.5 * (g0 - g1 + g2);
            gg[3][s] = g2;
          }
          for (int r = 0; r < 4; ++r) {  // (G g) G^T
            u[r][0] = gg[r][0];
            u[r][1] = 0.5 * (gg[r][0] + gg[r][1] + gg[r][2]);
            u[r][2] = 0.5 * (gg[r][0] - gg[r][1] + gg[r][2]);
            u[r][3] = gg[r][2];
          }
        }
        for (int xi = 0; xi < 16; ++xi) ap[xi * packed_u + p0 * pb.c + c * mr + i] = T(u[xi / 4][xi % 4]);
      }
}

// The tiles of one band, [t0, t0 + count), as runs within tile rows.
struct winograd_band {
  index_t t0, count, ty0, ty1;  // first and last tile row
  winograd_band(index_t first, index_t n, index_t tw) noexcept
      : t0(first), count(n), ty0(first / tw), ty1((first + n - 1) / tw) {}
  // Calls f(ty, tx_lo, tx_hi, local) for each run: tiles (ty, tx_lo .. tx_hi - 1), the
  // first at band position `local`.
  template <class F>
  void for_each_run(index_t tw, F&& f) const {
    for (index_t ty = ty0; ty <= ty1; ++ty) {
      const index_t lo = ty == ty0 ? t0 % tw : 0, hi = ty == ty1 ? (t0 + count - 1) % tw + 1 : tw;
      f(ty, lo, hi, ty * tw + lo - t0);
    }
  }
};

// One image through the Winograd path: bands of input transform, 16 GEMMs and output
// transform, then the epilogue over the finished image in the direct engine's tiles
// (columns `tile` at a time, rows mc at a time).
template <class T, class Arch, class Prologue, class Epilogue>
void winograd_image(const conv2d_problem& pb, const winograd_layout<T, Arch>& lay, const T* ap,
                    const tensor_view<const T>& x, const tensor_view<T>& y, index_t n, const Prologue& prologue,
                    const Epilogue& epilogue, index_t tile, T* scratch) {
  using batch = xsimd::batch<T, Arch>;
  using blk = gemm::blocking<T, Arch>;
  constexpr index_t width = index_t(batch::size);
  const index_t C = pb.c, K = pb.k, P = pb.p(), Q = pb.q(), tw = lay.tw, ld = lay.ld;
  T* v = gemm::align_pointer(scratch);
  T* m = gemm::align_pointer(scratch + lay.v_size(pb));
  T* rows = gemm::align_pointer(scratch + lay.v_size(pb) + lay.m_size(pb));
  T* lines = gemm::align_pointer(scratch + lay.v_size(pb) + lay.m_size(pb) + lay.rows_size());
  const index_t ldh = x.strides().h;
  const T* b_rows[blk::kc];
  const index_t xi_stride = C * ld, m_stride = K * ld;  // V_xi and M_xi, xi = 0 .. 15
  // Deinterleaved halves of the padded rows: each holds tw + 1 columns the tiles read, at
  // offset up to 1 (the left padding, which stays zero), then lanes only spare tiles read.
  const index_t count = lay.row_ld - width;
  std::fill(rows, rows + 2 * lay.rows_max * lay.row_ld, T(0));
  for (index_t r = 0; r < lay.rows_max; ++r)  // the prologue writes line[0, W) only
    std::fill(lines + r * lay.line_ld + pb.w, lines + r * lay.line_ld + 2 * count, T(0));

  for (index_t t0 = 0; t0 < lay.tiles; t0 += lay.band) {
    const winograd_band band(t0, std::min(lay.band, lay.tiles - t0), tw);
    const index_t in_rows = 2 * (band.ty1 - band.ty0) + 4;  // padded rows 2 * ty0 .. 2 * ty1 + 3
    // Input transform, one channel at a time: its rows through the prologue, split into
    // even and odd columns (tile tx reads columns 2tx .. 2tx + 3: even[tx], odd[tx],
    // even[tx + 1], odd[tx + 1]), then V = B^T d B for every tile of the band.
    // A band's rows of a channel are one contiguous run of its plane, but channels are a
    // plane apart, where hardware prefetchers lose the stream: fetch `ahead` channels early.
    constexpr index_t ahead = 2;
    const index_t ih0 = std::max<index_t>(0, 2 * band.ty0 - pb.pad),
                  ih1 = std::min<index_t>(pb.h, 2 * band.ty0 + in_rows - pb.pad);
    const index_t run_bytes = ih1 > ih0 ? ((ih1 - ih0 - 1) * ldh + pb.w) * index_t(sizeof(T)) : 0;
    for (index_t c = 0; c < C; ++c) {
      const T* xc = x.plane_ptr(n, c);
      if (c + ahead < C) {
        const char* b = reinterpret_cast<const char*>(x.plane_ptr(n, c + ahead) + ih0 * ldh);
        for (index_t o = 0; o < run_bytes; o += 64) __builtin_prefetch(b + o, 0, 2);
      }
      // line r = a(x[ih, :]) (zero past W), all rows first: the split below reads each
      // line's last, partly written vector only after the other lines' work, so the read
      // does not wait on that masked store.
      for (index_t r = 0; r < in_rows; ++r) {
        const index_t ih = 2 * band.ty0 + r - pb.pad;
        if (ih >= 0 && ih < pb.h)
          prologue.template transform<Arch>(c, xc + ih * ldh, lines + r * lay.line_ld, pb.w);
      }
      // Each line into the padded row's even and odd columns: padded column j = iw + pad,
      // so with an even pad x's even columns are the padded row's even ones, shifted by
      // pad / 2; with an odd pad they swap.
      for (index_t r = 0; r < in_rows; ++r) {
        T* ev = rows + 2 * r * lay.row_ld;
        T* od = ev + lay.row_ld;
        const index_t ih = 2 * band.ty0 + r - pb.pad;
        const T* line = lines + r * lay.line_ld;
        if (ih < 0 || ih >= pb.h)
          std::fill(ev, ev + 2 * lay.row_ld, T(0));
        else if (pb.pad % 2 == 0)
          deinterleave<Arch>(line, ev + pb.pad / 2, od + pb.pad / 2, count);
        else
          deinterleave<Arch>(line, od + pb.pad / 2, ev + (pb.pad + 1) / 2, count);
      }
      band.for_each_run(tw, [&](index_t ty, index_t lo, index_t hi, index_t local) {
        const T* r0 = rows + 2 * (2 * (ty - band.ty0)) * lay.row_ld;
        for (index_t tx = lo, t = local; tx < hi; tx += width, t += width) {
          batch u[4][4];
#pragma GCC unroll 4
          for (int r = 0; r < 4; ++r) {
            const T* ev = r0 + 2 * r * lay.row_ld;
            const T* od = ev + lay.row_ld;
            const batch d0 = batch::load_unaligned(ev + tx), d1 = batch::load_unaligned(od + tx),
                        d2 = batch::load_unaligned(ev + tx + 1), d3 = batch::load_unaligned(od + tx + 1);
            u[r][0] = d0 - d2;
            u[r][1] = d1 + d2;
            u[r][2] = d2 - d1;
            u[r][3] = d1 - d3;
          }
          // V_xi row c, from column t; a run's last vector may reach past the run: the next
          // run (or the band's spare columns) overwrites those lanes.
          T* vt = v + c * ld + t;
#pragma GCC unroll 4
          for (int j = 0; j < 4; ++j) {
            (u[0][j] - u[2][j]).store_unaligned(vt + (0 * 4 + j) * xi_stride);
            (u[1][j] + u[2][j]).store_unaligned(vt + (1 * 4 + j) * xi_stride);
            (u[2][j] - u[1][j]).store_unaligned(vt + (2 * 4 + j) * xi_stride);
            (u[1][j] - u[3][j]).store_unaligned(vt + (3 * 4 + j) * xi_stride);
          }
        }
      });
    }
    // The GEMMs read whole register tiles: columns past a short band are zero.
    const index_t cols = band.count, padded = gemm::round_up(cols, blk::nr);
    if (padded > cols)
      for (index_t r = 0; r < 16 * C; ++r) std::fill(v + r * ld + cols, v + r * ld + padded, T(0));
    for (int xi = 0; xi < 16; ++xi) {
      auto rows_for = [&](index_t k0, index_t kcount) {
        for (index_t k = 0; k < kcount; ++k) b_rows[k] = v + (xi * C + k0 + k) * ld;
        return static_cast<const T* const*>(b_rows);
      };
      gemm::gemm_tile_rows<T, Arch>(K, C, ap + xi * lay.packed_u, rows_for, m + xi * K * ld, ld, cols,
                                    [](index_t, index_t) {});
    }
    // Output transform: Y = A^T M A per tile, written to the tile's 2 x 2 outputs (fewer
    // at an odd P or Q).
    for (index_t k = 0; k < K; ++k) {
      T* yk = y.plane_ptr(n, k);
      const T* mk = m + k * ld;
      band.for_each_run(tw, [&](index_t ty, index_t lo, index_t hi, index_t local) {
        const index_t p = 2 * ty;
        T* row0 = yk + p * Q;
        T* row1 = p + 1 < P ? row0 + Q : nullptr;
        for (index_t tx = lo, t = local; tx < hi; tx += width, t += width) {
          batch s[2][4];
#pragma GCC unroll 4
          for (int j = 0; j < 4; ++j) {
            const T* mt = mk + t;
            const batch m0 = batch::load_unaligned(mt + (0 * 4 + j) * m_stride);
            const batch m1 = batch::load_unaligned(mt + (1 * 4 + j) * m_stride);
            const batch m2 = batch::load_unaligned(mt + (2 * 4 + j) * m_stride);
            const batch m3 = batch::load_unaligned(mt + (3 * 4 + j) * m_stride);
            s[0][j] = m0 + m1 + m2;
            s[1][j] = m1 - m2 - m3;
          }
          alignas(64) T out[4][width];
          (s[0][0] + s[0][1] + s[0][2]).store_aligned(out[0]);
          (s[0][1] - s[0][2] - s[0][3]).store_aligned(out[1]);
          (s[1][0] + s[1][1] + s[1][2]).store_aligned(out[2]);
          (s[1][1] - s[1][2] - s[1][3]).store_aligned(out[3]);
          const index_t valid = std::min<index_t>(width, hi - tx);
          for (index_t l = 0; l < valid; ++l) {
            const index_t q = 2 * (tx + l);
            row0[q] = out[0][l];
            if (q + 1 < Q) row0[q + 1] = out[1][l];
            if (row1) {
              row1[q] = out[2][l];
              if (q + 1 < Q) row1[q + 1] = out[3][l];
            }
          }
        }
      });
    }
  }
  // The finished image to the epilogue, in the direct engine's tiles.
  const index_t plane = P * Q, ldc = y.strides().c;
  T* base = y.plane_ptr(n, 0);
  for (index_t col0 = 0; col0 < plane; col0 += tile) {
    const index_t cols = std::min(tile, plane - col0);
    for (index_t i0 = 0; i0 < K; i0 += blk::mc) {
      const index_t rows_n = std::min<index_t>(blk::mc, K - i0);
      epilogue(output_tile<T>{base + i0 * ldc + col0, ldc, n, i0, rows_n, col0, cols});
    }
  }
}

}  // namespace bnff::detail
