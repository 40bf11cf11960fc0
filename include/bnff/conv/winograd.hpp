// bnff: 3x3 stride-1 convolutions by Winograd's minimal filtering F(4x4, 3x3).
//
// Each 4 x 4 block of output (a tile) comes from the 6 x 6 block of input under it:
//   Y = A^T [ U .* V ] A,   U = G g G^T (per filter k, c),   V = B^T d B (per channel c, tile)
// with the interpolation points 0, 1, -1, 2, -2 and infinity:
//   B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
//   G   = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
//   A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
// Summed over channels, the 36 element-wise products of a tile are 36 GEMMs, one per
// position xi of the 6 x 6 transform: M_xi[K x tiles] = U_xi[K x C] * V_xi[C x tiles],
// run on the same blocked GEMM and microkernel as the direct engine: 36 multiply-adds per
// tile and channel instead of 144, 4 times fewer, for a few operations per element in
// the transforms (which stay in cache: a task transforms one band of tiles at a time).
// The transforms' larger coefficients cost some accuracy against a direct sum; the tests
// bound the error of every output (tests/test_conv_forward.cpp, error_bound).
//
// Fusion is as in the direct engine: the prologue (BN + ReLU) runs on each input row as
// it is read, padding zero after it; the output goes to the epilogue in the direct
// engine's output tiles (so the statistics partition is the same), each tile right after
// the band that completes it, while it is still in cache. A task is a fixed group of
// images; the result does not depend on the thread count.
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
#include "bnff/simd/fma.hpp"
#include "bnff/simd/prefetch.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff::detail {

// Planes of more output positions than this take the Winograd path (3x3, stride 1).
// Smaller planes (14 x 14, 7 x 7) have too few tiles per image to fill the GEMM's
// register tiles; they stay on the direct engine's image groups.
constexpr index_t winograd_min_plane = 256;

inline bool winograd_eligible(const conv2d_problem& pb) noexcept {
  return pb.r == 3 && pb.s == 3 && pb.stride == 1 && pb.p() * pb.q() > winograd_min_plane;
}

// The transform's sizes: 4 x 4 outputs from 6 x 6 inputs, 36 positions xi.
constexpr index_t winograd_m = 4, winograd_a = 6, winograd_xis = 36;

// How the work is cut: tiles of 4 x 4 outputs, in row-major order image after image, in
// bands of `band` tiles (a multiple of the register tile's nr, so that the 36 GEMMs run
// full tiles).
template <class T, class Arch>
struct winograd_layout {
  using blk = gemm::blocking<T, Arch>;
  static constexpr index_t width = index_t(xsimd::batch<T, Arch>::size);
  index_t th = 0, tw = 0;  // tile rows and columns: ceil(P / 4), ceil(Q / 4)
  index_t tiles = 0;       // th * tw per image
  // A task is `group` images (fewer in the last), their tiles one sequence cut into bands:
  // a 28 x 28 plane has 49 tiles, which alone would fill 49 of the 96 columns its
  // register tiles compute. Up to about 512 tiles per task, balanced over the tasks.
  index_t group = 1, tasks = 1;
  index_t band = 0;        // tiles per band
  index_t ld = 0;          // row stride of V and M: band + width (a vector store may run past a band)
  index_t row_ld = 0;      // one of the four column phases of an input row
  index_t rows_max = 0;    // padded input rows one band reads
  index_t line_ld = 0;     // one input row through the prologue, zero past W
  index_t packed_u = 0;    // elements of one packed U_xi

  explicit winograd_layout(const conv2d_problem& pb) noexcept {
    th = (pb.p() + winograd_m - 1) / winograd_m;
    tw = (pb.q() + winograd_m - 1) / winograd_m;
    tiles = th * tw;
    const index_t most = std::max<index_t>(1, 512 / tiles);
    group = gemm::ceil_div(pb.n, gemm::ceil_div(pb.n, most));
    tasks = gemm::ceil_div(pb.n, group);
    // V of a band (C x band per xi) in about 512 KiB where C allows; at least one
    // register tile of columns.
    const index_t fit = index_t(512 * 1024 / (winograd_xis * sizeof(T))) / std::max<index_t>(pb.c, 1);
    band = std::max<index_t>(blk::nr, fit / blk::nr * blk::nr);
    band = std::min(band, gemm::round_up(group * tiles, blk::nr));
    ld = band + width;
    row_ld = gemm::round_up(tw + 1 + width, width);
    rows_max = winograd_m * gemm::ceil_div(band, tw) + winograd_a + 2;
    line_ld = winograd_m * row_ld;
    packed_u = gemm::packed_a_size<T, Arch>(pb.k, pb.c);
  }

  // Bands of `tiles_per_band` tiles instead (the weight gradient's choice, winograd_wgrad.hpp).
  void set_band(index_t tiles_per_band) noexcept {
    band = tiles_per_band;
    ld = band + width;
    rows_max = winograd_m * gemm::ceil_div(band, tw) + winograd_a + 2;
  }

  index_t weights_size() const noexcept { return gemm::aligned_extent<T>(winograd_xis * packed_u); }
  // V_xi and M_xi lie one cache line more than a multiple of the row length apart: at
  // C * ld = 128 * 64 floats (32 KiB) every one of a transform's 36 stores went to one
  // L1 set.
  index_t v_stride(const conv2d_problem& pb) const noexcept { return pb.c * ld + width; }
  index_t m_stride(const conv2d_problem& pb) const noexcept { return pb.k * ld + width; }
  index_t v_size(const conv2d_problem& pb) const noexcept { return gemm::aligned_extent<T>(winograd_xis * v_stride(pb)); }
  index_t m_size(const conv2d_problem& pb) const noexcept { return gemm::aligned_extent<T>(winograd_xis * m_stride(pb)); }
  index_t rows_size() const noexcept { return gemm::aligned_extent<T>(winograd_m * rows_max * row_ld); }
  index_t lines_size() const noexcept { return gemm::aligned_extent<T>(rows_max * line_ld); }
  index_t scratch_size(const conv2d_problem& pb) const noexcept {
    return v_size(pb) + m_size(pb) + rows_size() + lines_size();
  }
};

// ph[q][i] = src[4i + q] for q = 0..3 and i in [0, count), count a multiple of the SIMD
// width; the phases go to dst[q] + off[q]. Escape hatch: xsimd 8 has no two-source
// permute; other targets copy one by one.
template <class Arch, class T>
BNFF_ALWAYS_INLINE void deinterleave4(const T* BNFF_RESTRICT src, T* const* dst, index_t count) noexcept {
#if defined(__AVX512F__)
  if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, float>) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (index_t i = 0; i < count; i += 16) {
      const float* s = src + 4 * i;
      const __m512 a = _mm512_loadu_ps(s), b = _mm512_loadu_ps(s + 16), c = _mm512_loadu_ps(s + 32),
                   d = _mm512_loadu_ps(s + 48);
      const __m512 e1 = _mm512_permutex2var_ps(a, even, b), o1 = _mm512_permutex2var_ps(a, odd, b);
      const __m512 e2 = _mm512_permutex2var_ps(c, even, d), o2 = _mm512_permutex2var_ps(c, odd, d);
      _mm512_storeu_ps(dst[0] + i, _mm512_permutex2var_ps(e1, even, e2));
      _mm512_storeu_ps(dst[2] + i, _mm512_permutex2var_ps(e1, odd, e2));
      _mm512_storeu_ps(dst[1] + i, _mm512_permutex2var_ps(o1, even, o2));
      _mm512_storeu_ps(dst[3] + i, _mm512_permutex2var_ps(o1, odd, o2));
    }
    return;
  }
  if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, double>) {
    const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    const __m512i odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
    for (index_t i = 0; i < count; i += 8) {
      const double* s = src + 4 * i;
      const __m512d a = _mm512_loadu_pd(s), b = _mm512_loadu_pd(s + 8), c = _mm512_loadu_pd(s + 16),
                    d = _mm512_loadu_pd(s + 24);
      const __m512d e1 = _mm512_permutex2var_pd(a, even, b), o1 = _mm512_permutex2var_pd(a, odd, b);
      const __m512d e2 = _mm512_permutex2var_pd(c, even, d), o2 = _mm512_permutex2var_pd(c, odd, d);
      _mm512_storeu_pd(dst[0] + i, _mm512_permutex2var_pd(e1, even, e2));
      _mm512_storeu_pd(dst[2] + i, _mm512_permutex2var_pd(e1, odd, e2));
      _mm512_storeu_pd(dst[1] + i, _mm512_permutex2var_pd(o1, even, o2));
      _mm512_storeu_pd(dst[3] + i, _mm512_permutex2var_pd(o1, odd, o2));
    }
    return;
  }
#endif
  for (index_t i = 0; i < count; ++i)
    for (int q = 0; q < 4; ++q) dst[q][i] = src[4 * i + q];
}

// dst[4l + j] = o[j][l] for the first `count` elements (count <= 4 * width): one row of
// four outputs per tile, for `width` tiles side by side, back in plane order. The
// inverse of deinterleave4; the same escape hatch (AVX-512 float: two rounds of
// two-source permutes and four stores, the last masked), other targets one by one.
template <class Arch, class T>
BNFF_ALWAYS_INLINE void interleave4(const xsimd::batch<T, Arch> (&o)[4], T* BNFF_RESTRICT dst, index_t count) noexcept {
#if defined(__AVX512F__)
  if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, float>) {
    // Pairs (o0[t], o1[t]) and (o2[t], o3[t]) for t < 8 (lo) and t >= 8 (hi), then
    // 64-bit pairs of pairs: four tiles' outputs per register.
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    const __m512i first = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
    const __m512i second = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
    const __m512 o0 = o[0], o1 = o[1], o2 = o[2], o3 = o[3];
    const __m512d a_lo = _mm512_castps_pd(_mm512_permutex2var_ps(o0, lo, o1));
    const __m512d b_lo = _mm512_castps_pd(_mm512_permutex2var_ps(o2, lo, o3));
    const __m512d a_hi = _mm512_castps_pd(_mm512_permutex2var_ps(o0, hi, o1));
    const __m512d b_hi = _mm512_castps_pd(_mm512_permutex2var_ps(o2, hi, o3));
    const __m512 r[4] = {_mm512_castpd_ps(_mm512_permutex2var_pd(a_lo, first, b_lo)),
                         _mm512_castpd_ps(_mm512_permutex2var_pd(a_lo, second, b_lo)),
                         _mm512_castpd_ps(_mm512_permutex2var_pd(a_hi, first, b_hi)),
                         _mm512_castpd_ps(_mm512_permutex2var_pd(a_hi, second, b_hi))};
    for (int q = 0; q < 4 && 16 * q < count; ++q) {
      const index_t n = count - 16 * q;
      if (n >= 16)
        _mm512_storeu_ps(dst + 16 * q, r[q]);
      else
        _mm512_mask_storeu_ps(dst + 16 * q, __mmask16((1u << n) - 1u), r[q]);
    }
    return;
  }
#endif
  constexpr index_t width = index_t(xsimd::batch<T, Arch>::size);
  alignas(64) T out[4][width];
  for (int j = 0; j < 4; ++j) o[j].store_aligned(out[j]);
  for (index_t e = 0; e < count; ++e) dst[e] = out[e % 4][e / 4];
}

// G of the header, in double.
inline constexpr double winograd_g[6][3] = {{1.0 / 4, 0, 0},
                                            {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                            {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                            {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                            {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                            {0, 0, 1}};

// U_xi(k, c) = (G g_kc G^T)[xi / 6][xi % 6], in double, rounded once to T, packed as
// gemm::pack_a packs a K x C matrix (36 of them, packed_u elements apart).
template <class T, class Arch>
void winograd_pack_weights(const conv2d_problem& pb, const tensor_view<const T>& w, index_t packed_u, T* ap) {
  constexpr int mr = gemm::blocking<T, Arch>::mr;
  const auto& G = winograd_g;
  for (index_t p0 = 0; p0 < pb.k; p0 += mr)
    for (index_t c = 0; c < pb.c; ++c)
      for (index_t i = 0; i < mr; ++i) {
        double u[6][6] = {};
        if (p0 + i < pb.k) {
          double gg[6][3] = {};  // G g
          for (int a = 0; a < 6; ++a)
            for (int s = 0; s < 3; ++s)
              for (int r = 0; r < 3; ++r) gg[a][s] += G[a][r] * double(w(p0 + i, c, r, s));
          for (int a = 0; a < 6; ++a)  // (G g) G^T
            for (int b = 0; b < 6; ++b)
              for (int s = 0; s < 3; ++s) u[a][b] += gg[a][s] * G[b][s];
        }
        for (int xi = 0; xi < 36; ++xi) ap[xi * packed_u + p0 * pb.c + c * mr + i] = T(u[xi / 6][xi % 6]);
      }
}

// B^T d for the six values d0 .. d5 (rows of B^T as in the header).
template <class B>
BNFF_ALWAYS_INLINE void winograd_input_1d(const B& d0, const B& d1, const B& d2, const B& d3, const B& d4,
                                          const B& d5, B* o) noexcept {
  using T = typename B::value_type;
  const B four(T(4)), minus_five(T(-5)), two(T(2)), minus_four(T(-4));
  o[0] = simd::fma(four, d0, simd::fma(minus_five, d2, d4));
  o[1] = simd::fma(minus_four, d1 + d2, d3 + d4);
  o[2] = simd::fma(four, d1 - d2, d4 - d3);
  o[3] = simd::fma(two, d3 - d1, d4 - d2);
  o[4] = simd::fma(two, d1 - d3, d4 - d2);
  o[5] = simd::fma(four, d1, simd::fma(minus_five, d3, d5));
}

// A^T m for the six values m0 .. m5.
template <class B>
BNFF_ALWAYS_INLINE void winograd_output_1d(const B& m0, const B& m1, const B& m2, const B& m3, const B& m4,
                                           const B& m5, B* o) noexcept {
  using T = typename B::value_type;
  const B a = m1 + m2, b = m1 - m2, c = m3 + m4, d = m3 - m4;
  o[0] = m0 + a + c;
  o[1] = simd::fma(B(T(2)), d, b);
  o[2] = simd::fma(B(T(4)), c, a);
  o[3] = simd::fma(B(T(8)), d, b) + m5;
}

// The tiles of one image within a band: its tiles [t0, t0 + count), the first at band
// position `local`, as runs within tile rows.
struct winograd_segment {
  index_t image, t0, count, local, ty0, ty1;  // ty0, ty1: first and last tile row
  // Calls f(ty, tx_lo, tx_hi, pos) for each run: tiles (ty, tx_lo .. tx_hi - 1), the first
  // at band position pos.
  template <class F>
  void for_each_run(index_t tw, F&& f) const {
    for (index_t ty = ty0; ty <= ty1; ++ty) {
      const index_t lo = ty == ty0 ? t0 % tw : 0, hi = ty == ty1 ? (t0 + count - 1) % tw + 1 : tw;
      f(ty, lo, hi, local + ty * tw + lo - t0);
    }
  }
};

// The segments of band [b0, b0 + count) of a task's tile sequence (`tiles` per image).
template <class F>
void for_each_segment(index_t b0, index_t count, index_t tiles, index_t tw, F&& f) {
  for (index_t g = b0; g < b0 + count;) {
    const index_t image = g / tiles, t = g % tiles, len = std::min(tiles - t, b0 + count - g);
    f(winograd_segment{image, t, len, g - b0, t / tw, (t + len - 1) / tw});
    g += len;
  }
}

// The scratch rows and lines of winograd_input_band, set up once per task: zero where
// no input is written (padding columns, spare lanes).
template <class T, class Arch>
void winograd_input_init(const conv2d_problem& pb, const winograd_layout<T, Arch>& lay, T* rows, T* lines) {
  std::fill(rows, rows + winograd_m * lay.rows_max * lay.row_ld, T(0));
  for (index_t r = 0; r < lay.rows_max; ++r)  // the prologue writes line[0, W) only
    std::fill(lines + r * lay.line_ld + pb.w, lines + (r + 1) * lay.line_ld, T(0));
}

// Input transform of tiles [b0, b0 + cols) of the sequence of images n0, n0 + 1, ..., for
// channels [c0, c1): V_xi(c, t) = (B^T d B)[xi / 6][xi % 6] of tile t's 6 x 6 input d
// (through the prologue, zero padding after it), at v[xi * xi_stride + (c - c0) * ld + t - b0].
// One channel and image at a time: the rows through the prologue, split into column
// phases (tile tx reads columns 4tx .. 4tx + 5: phases 0-3 at tx, 0-1 at tx + 1), then
// B^T d B for every tile of the segment. rows and lines: winograd_input_init's scratch.
template <class T, class Arch, class Prologue>
void winograd_input_band(const conv2d_problem& pb, const winograd_layout<T, Arch>& lay, const tensor_view<const T>& x,
                         index_t n0, index_t b0, index_t cols, index_t c0, index_t c1, const Prologue& prologue,
                         T* v, index_t ld, index_t xi_stride, T* rows, T* lines) {
  using batch = xsimd::batch<T, Arch>;
  constexpr index_t width = index_t(batch::size);
  const index_t tw = lay.tw, row_ld = lay.row_ld, ldh = x.strides().h;
  // Padded row r, phase q (its columns 4i + q) at rows + (4r + q) * row_ld: each phase holds
  // the tw + 1 columns the tiles read, at offset up to 1 (the left padding, which stays
  // zero), then lanes only spare tiles read.
  const index_t count = row_ld - width;
  // Column iw of x is padded column j = iw + pad: x's phase q is the padded row's phase
  // (q + pad) % 4, from element (q + pad) / 4 on.
  index_t phase_of[4], offset_of[4];
  for (index_t q = 0; q < 4; ++q) phase_of[q] = (q + pb.pad) % 4, offset_of[q] = (q + pb.pad) / 4;
  for (index_t c = c0; c < c1; ++c)
    for_each_segment(b0, cols, lay.tiles, tw, [&](const winograd_segment& seg) {
      const T* xc = x.plane_ptr(n0 + seg.image, c);
      const index_t in_rows = winograd_m * (seg.ty1 - seg.ty0) + winograd_a;  // from padded row 4 * ty0
      // The next channel's rows of this segment, requested now: one run of a few KiB per
      // channel, planes apart, which the hardware prefetchers would only pick up after
      // its first misses (the loads of the prologue below stalled for half its time).
      if (c + 1 < c1) {
        const index_t first = std::max<index_t>(0, winograd_m * seg.ty0 - pb.pad);
        const index_t last = std::min<index_t>(pb.h, winograd_m * seg.ty0 + in_rows - pb.pad);
        const T* xn = x.plane_ptr(n0 + seg.image, c + 1);
        for (index_t ih = first; ih < last; ++ih) simd::prefetch_lines(xn + ih * ldh, pb.w * index_t(sizeof(T)));
      }
      // All lines first: the split below reads each line's last, partly written vector
      // only after the other lines' work, so the read does not wait on that masked store.
      for (index_t r = 0; r < in_rows; ++r) {
        const index_t ih = winograd_m * seg.ty0 + r - pb.pad;
        if (ih >= 0 && ih < pb.h) prologue.template transform<Arch>(c, xc + ih * ldh, lines + r * lay.line_ld, pb.w);
      }
      for (index_t r = 0; r < in_rows; ++r) {
        T* row = rows + winograd_m * r * row_ld;
        const index_t ih = winograd_m * seg.ty0 + r - pb.pad;
        if (ih < 0 || ih >= pb.h) {
          std::fill(row, row + winograd_m * row_ld, T(0));
          continue;
        }
        T* dst[4];
        for (index_t q = 0; q < 4; ++q) dst[q] = row + phase_of[q] * row_ld + offset_of[q];
        deinterleave4<Arch>(lines + r * lay.line_ld, dst, count);
      }
      seg.for_each_run(tw, [&](index_t ty, index_t lo, index_t hi, index_t local) {
        const T* r0 = rows + winograd_m * (winograd_m * (ty - seg.ty0)) * row_ld;
        for (index_t tx = lo, t = local; tx < hi; tx += width, t += width) {
          batch u[6][6];  // B^T applied along each of the six rows
#pragma GCC unroll 6
          for (int r = 0; r < 6; ++r) {
            const T* ph = r0 + winograd_m * r * row_ld + tx;
            winograd_input_1d(batch::load_unaligned(ph), batch::load_unaligned(ph + row_ld),
                              batch::load_unaligned(ph + 2 * row_ld), batch::load_unaligned(ph + 3 * row_ld),
                              batch::load_unaligned(ph + 1), batch::load_unaligned(ph + row_ld + 1), u[r]);
          }
          // ... then down each column, into V_xi row c from column t; a run's last vector
          // may reach past the run: the next run (or the band's spare columns) overwrites
          // those lanes.
          T* vt = v + (c - c0) * ld + t;
#pragma GCC unroll 6
          for (int j = 0; j < 6; ++j) {
            batch o[6];
            winograd_input_1d(u[0][j], u[1][j], u[2][j], u[3][j], u[4][j], u[5][j], o);
#pragma GCC unroll 6
            for (int i = 0; i < 6; ++i) o[i].store_unaligned(vt + (i * 6 + j) * xi_stride);
          }
        }
      });
    });
}

// The output columns of one image that are final once its first `done` tiles (row-major;
// clamped to [0, tiles]) are transformed, cut down to whole column tiles of `tile` (the
// direct engine's, on which the statistics partition's blocks lie): whole tile rows give
// 4 output rows each; the last column tile, shorter, only with the whole plane.
template <class T, class Arch>
index_t winograd_finished_columns(const winograd_layout<T, Arch>& lay, index_t P, index_t Q, index_t tile,
                                  index_t done) noexcept {
  if (done <= 0) return 0;
  if (done >= lay.tiles) return P * Q;
  const index_t rows = std::min<index_t>(P, winograd_m * (done / lay.tw));
  return rows * Q / tile * tile;
}

// Images n0 .. n0 + images - 1 through the Winograd path: bands of input transform, 36
// GEMMs and output transform, then the epilogue over the output that band finished, in
// the direct engine's tiles (columns `tile` at a time, rows mc at a time), each tile once.
template <class T, class Arch, class Prologue, class Epilogue>
void winograd_task(const conv2d_problem& pb, const winograd_layout<T, Arch>& lay, const T* ap,
                   const tensor_view<const T>& x, const tensor_view<T>& y, index_t n0, index_t images,
                   const Prologue& prologue, const Epilogue& epilogue, index_t tile, T* scratch) {
  using batch = xsimd::batch<T, Arch>;
  using blk = gemm::blocking<T, Arch>;
  constexpr index_t width = index_t(batch::size);
  const index_t C = pb.c, K = pb.k, P = pb.p(), Q = pb.q(), tw = lay.tw, ld = lay.ld;
  T* v = gemm::align_pointer(scratch);
  T* m = gemm::align_pointer(scratch + lay.v_size(pb));
  T* rows = gemm::align_pointer(scratch + lay.v_size(pb) + lay.m_size(pb));
  T* lines = gemm::align_pointer(scratch + lay.v_size(pb) + lay.m_size(pb) + lay.rows_size());
  const T* b_rows[blk::kc];
  const index_t xi_stride = lay.v_stride(pb), m_stride = lay.m_stride(pb);  // V_xi and M_xi, xi = 0 .. 35
  winograd_input_init(pb, lay, rows, lines);

  const index_t total = images * lay.tiles;
  for (index_t b0 = 0; b0 < total; b0 += lay.band) {
    const index_t cols = std::min(lay.band, total - b0);
    winograd_input_band(pb, lay, x, n0, b0, cols, 0, C, prologue, v, ld, xi_stride, rows, lines);
    // The GEMMs read whole register tiles: columns past a short band are zero.
    const index_t padded = gemm::round_up(cols, blk::nr);
    if (padded > cols)
      for (index_t xi = 0; xi < winograd_xis; ++xi)
        for (index_t c = 0; c < C; ++c) std::fill(v + xi * xi_stride + c * ld + cols, v + xi * xi_stride + c * ld + padded, T(0));
    for (index_t xi = 0; xi < winograd_xis; ++xi) {
      auto rows_for = [&](index_t k0, index_t kcount) {
        for (index_t k = 0; k < kcount; ++k) b_rows[k] = v + xi * xi_stride + (k0 + k) * ld;
        return static_cast<const T* const*>(b_rows);
      };
      gemm::gemm_tile_rows<T, Arch>(K, C, ap + xi * lay.packed_u, rows_for, m + xi * m_stride, ld, cols,
                                    [](index_t, index_t) {});
    }
    // Output transform: Y = A^T M A per tile, written to the tile's 4 x 4 outputs (fewer
    // at the plane's bottom and right edges).
    for (index_t k = 0; k < K; ++k) {
      const T* mk = m + k * ld;
      for_each_segment(b0, cols, lay.tiles, tw, [&](const winograd_segment& seg) {
        T* yk = y.plane_ptr(n0 + seg.image, k);
        seg.for_each_run(tw, [&](index_t ty, index_t lo, index_t hi, index_t local) {
          const index_t p0 = winograd_m * ty, prows = std::min<index_t>(winograd_m, P - p0);
          for (index_t tx = lo, t = local; tx < hi; tx += width, t += width) {
            const T* mt = mk + t;
            batch s[4][6];  // A^T applied down each of the six columns
#pragma GCC unroll 6
            for (int j = 0; j < 6; ++j) {
              batch col[4];
              winograd_output_1d(batch::load_unaligned(mt + (0 * 6 + j) * m_stride),
                                 batch::load_unaligned(mt + (1 * 6 + j) * m_stride),
                                 batch::load_unaligned(mt + (2 * 6 + j) * m_stride),
                                 batch::load_unaligned(mt + (3 * 6 + j) * m_stride),
                                 batch::load_unaligned(mt + (4 * 6 + j) * m_stride),
                                 batch::load_unaligned(mt + (5 * 6 + j) * m_stride), col);
              for (int i = 0; i < 4; ++i) s[i][j] = col[i];
            }
            // Output row p0 + i of these tiles: outputs 4 tx .. 4 (tx + valid) - 1, cut at Q.
            const index_t valid = std::min<index_t>(width, hi - tx);
            const index_t count = std::min<index_t>(winograd_m * valid, Q - winograd_m * tx);
            for (index_t i = 0; i < prows; ++i) {
              batch o[4];
              winograd_output_1d(s[i][0], s[i][1], s[i][2], s[i][3], s[i][4], s[i][5], o);
              interleave4<Arch>(o, yk + (p0 + i) * Q + winograd_m * tx, count);
            }
          }
        });
      });
    }
    // The output tiles this band finished, to the epilogue while they are still in cache.
    for (index_t i = b0 / lay.tiles; i < images && i * lay.tiles < b0 + cols; ++i) {
      const index_t from = winograd_finished_columns(lay, P, Q, tile, b0 - i * lay.tiles);
      const index_t to = winograd_finished_columns(lay, P, Q, tile, b0 + cols - i * lay.tiles);
      T* base = y.plane_ptr(n0 + i, 0);
      const index_t ldc = y.strides().c;
      for (index_t col0 = from; col0 < to; col0 += tile) {
        const index_t ncols = std::min(tile, P * Q - col0);
        for (index_t i0 = 0; i0 < K; i0 += blk::mc) {
          const index_t rows_n = std::min<index_t>(blk::mc, K - i0);
          epilogue(output_tile<T>{base + i0 * ldc + col0, ldc, n0 + i, i0, rows_n, col0, ncols});
        }
      }
    }
  }
}

}  // namespace bnff::detail
