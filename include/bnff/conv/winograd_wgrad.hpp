// bnff: the weight gradient of 3x3 stride-1 convolutions by Winograd's F(4x4, 3x3).
//
// The forward computes each 4 x 4 output tile as Y = A^T [ (G g G^T) .* (B^T d B) ] A
// (winograd.hpp). Y is linear in the filter g, so the filter's gradient is a sum over
// every tile of every image:
//   dg = G^T [ sum_tiles (A dY A^T) .* (B^T d B) ] G      per filter (k, c)
// with dY the tile's 4 x 4 output gradient (zero past the plane's edges) and d its 6 x 6
// input through the prologue (BN + ReLU recomputed, padding zero after it), and
//   A = [1 0 0 0; 1 1 1 1; 1 -1 1 -1; 1 2 4 8; 1 -2 4 -8; 0 0 0 1]   (the forward's A^T, transposed).
// With Z = A dY A^T and V = B^T d B (the forward's input transform), the 36 sums are GEMMs
//   S_xi(c, k) = sum_t V_xi(c, t) Z_xi(k, t),   xi = 0 .. 35,
// 36 multiply-adds per tile and (k, c) where the direct weight gradient does 144, run on
// the direct engine's outer-product tile (wgrad_block) over bands of tiles; then
// dW(k, c) = G^T S(c, k) G in double. The tests bound each weight's error from the
// transform matrices (tests/test_conv_backward.cpp).
//
// Work: `segments` fixed ranges of images (from the shape alone), each summing its tiles
// band by band into its own partial S; the partials are added in segment order at the
// end, so the result does not depend on the thread count.
#pragma once

#include <algorithm>
#include <xsimd/xsimd.hpp>

#include "bnff/config.hpp"
#include "bnff/conv/conv2d_problem.hpp"
#include "bnff/conv/wgrad_kernels.hpp"
#include "bnff/conv/winograd.hpp"
#include "bnff/gemm/task_queue.hpp"
#include "bnff/parallel/parallel.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff::detail {

// Sizes of the Winograd weight gradient for register tiles of `mr` columns (input
// channels) by `lanes` rows (filters): see conv2d_backward_weights_plan.
template <class T, class Arch>
struct winograd_wgrad_layout {
  static constexpr index_t width = index_t(xsimd::batch<T, Arch>::size);
  static constexpr index_t max_segments = 4;
  // Input channels whose V a band holds at once, at most (a multiple of mr below it).
  static constexpr index_t max_channel_block = 96;
  winograd_layout<T, Arch> lay;  // tiles, the input transform's scratch rows, the band
  index_t segments = 0;          // ranges of images, each with its partial S
  index_t cols_p = 0, rows_p = 0;  // C rounded up to mr, K to lanes: one S_xi is cols_p x rows_p
  index_t channel_block = 0;       // channels transformed per pass over a band

  winograd_wgrad_layout(const conv2d_problem& pb, index_t mr, index_t lanes) noexcept : lay(pb) {
    segments = std::min(max_segments, pb.n);
    cols_p = gemm::round_up(pb.c, mr);
    rows_p = gemm::round_up(pb.k, lanes);
    // Z of a band (36 x K x band) in about 1 MiB, 2 to 8 vectors of tiles (longer bands
    // were slightly faster on 56 x 56 planes; shorter ones only add passes).
    const index_t fit = index_t(1024 * 1024 / (winograd_xis * sizeof(T))) / std::max<index_t>(pb.k, 1);
    lay.set_band(std::clamp<index_t>(fit / width * width, 2 * width, 8 * width));
    // V of a band's channel block (36 x block x band) in about 512 KiB.
    const index_t vfit = index_t(512 * 1024 / (winograd_xis * sizeof(T))) / lay.ld;
    channel_block = std::clamp<index_t>(vfit / mr * mr, mr, max_channel_block / mr * mr);
  }

  // The 36 blocks of V and of Z lie one cache line more than a multiple of the row length
  // apart: a multiple of 4 KiB (K * ld = 32 * 64 floats, say) put all 36 stores of a
  // transform into one L1 set (8-10% slower on densenet121.b1.l6.conv2).
  index_t v_stride() const noexcept { return channel_block * lay.ld + width; }
  index_t z_stride(const conv2d_problem& pb) const noexcept { return pb.k * lay.ld + width; }
  index_t at_stride() const noexcept { return (lay.band + width) * rows_p; }
  index_t partial_size() const noexcept { return gemm::aligned_extent<T>(winograd_xis * cols_p * rows_p); }
  index_t partials_size() const noexcept { return segments * partial_size(); }
  index_t v_size() const noexcept { return gemm::aligned_extent<T>(winograd_xis * v_stride()); }
  index_t z_size(const conv2d_problem& pb) const noexcept { return gemm::aligned_extent<T>(winograd_xis * z_stride(pb)); }
  index_t at_size() const noexcept { return gemm::aligned_extent<T>(winograd_xis * at_stride()); }
  // Four output-gradient rows split into column phases, and one row zero past Q.
  index_t grad_rows_size() const noexcept { return gemm::aligned_extent<T>(16 * lay.row_ld); }
  index_t grad_line_size() const noexcept { return gemm::aligned_extent<T>(lay.line_ld); }
  index_t zero_size() const noexcept { return gemm::aligned_extent<T>(lay.ld); }
  index_t per_thread_size(const conv2d_problem& pb) const noexcept {
    return v_size() + z_size(pb) + at_size() + lay.rows_size() + lay.lines_size() + grad_rows_size() +
           grad_line_size() + zero_size();
  }
  index_t workspace_size(const conv2d_problem& pb, int threads) const noexcept {
    return partials_size() + index_t(threads) * per_thread_size(pb);
  }
};

// A y for the four values y0 .. y3: six values.
template <class B>
BNFF_ALWAYS_INLINE void winograd_grad_1d(const B& y0, const B& y1, const B& y2, const B& y3, B* o) noexcept {
  using T = typename B::value_type;
  const B e = y0 + y2, d = y1 + y3, e4 = simd::fma(B(T(4)), y2, y0), d8 = simd::fma(B(T(8)), y3, y1 + y1);
  o[0] = y0;
  o[1] = e + d;
  o[2] = e - d;
  o[3] = e4 + d8;
  o[4] = e4 - d8;
  o[5] = y3;
}

// Z = A dY A^T for every filter k and every tile of band [b0, b0 + cols) of images n0, ...:
// Z_xi(k, t) at z[xi * z_stride + k * ld + t - b0]. grad_rows and grad_line: the layout's
// scratch (grad_line zero past Q).
template <class T, class Arch>
void winograd_grad_band(const conv2d_problem& pb, const winograd_wgrad_layout<T, Arch>& wl,
                        const tensor_view<const T>& dy, index_t n0, index_t b0, index_t cols, T* z, T* grad_rows,
                        T* grad_line) {
  using batch = xsimd::batch<T, Arch>;
  constexpr index_t width = index_t(batch::size);
  const winograd_layout<T, Arch>& lay = wl.lay;
  const index_t K = pb.k, P = pb.p(), Q = pb.q(), tw = lay.tw, ld = lay.ld, row_ld = lay.row_ld;
  const index_t z_stride = wl.z_stride(pb), dy_h = dy.strides().h;
  // A run's last vector may reach past the run: the next run, or the band's spare
  // columns, take those lanes.
  for (index_t k = 0; k < K; ++k)
    for_each_segment(b0, cols, lay.tiles, tw, [&](const winograd_segment& sg) {
      const T* dyk = dy.plane_ptr(n0 + sg.image, k);
      sg.for_each_run(tw, [&](index_t ty, index_t lo, index_t hi, index_t local) {
        // The tile row's four output rows, in column phases (tile tx's column q at
        // phase q, index tx); zero below P and right of Q.
        for (index_t a = 0; a < winograd_m; ++a) {
          T* ph = grad_rows + a * winograd_m * row_ld;
          const index_t p = winograd_m * ty + a;
          if (p >= P) {
            std::fill(ph, ph + winograd_m * row_ld, T(0));
            continue;
          }
          std::copy(dyk + p * dy_h, dyk + p * dy_h + Q, grad_line);
          T* dst[4] = {ph, ph + row_ld, ph + 2 * row_ld, ph + 3 * row_ld};
          deinterleave4<Arch>(grad_line, dst, row_ld - width);
        }
        for (index_t tx = lo, t = local; tx < hi; tx += width, t += width) {
          batch u[4][6];  // A applied along each of the four rows
#pragma GCC unroll 4
          for (int a = 0; a < 4; ++a) {
            const T* ph = grad_rows + a * winograd_m * row_ld + tx;
            winograd_grad_1d(batch::load_unaligned(ph), batch::load_unaligned(ph + row_ld),
                             batch::load_unaligned(ph + 2 * row_ld), batch::load_unaligned(ph + 3 * row_ld),
                             u[a]);
          }
          T* zt = z + k * ld + t;  // ... then down each of the six columns
#pragma GCC unroll 6
          for (int j = 0; j < 6; ++j) {
            batch o[6];
            winograd_grad_1d(u[0][j], u[1][j], u[2][j], u[3][j], o);
#pragma GCC unroll 6
            for (int i = 0; i < 6; ++i) o[i].store_unaligned(zt + (i * 6 + j) * z_stride);
          }
        }
      });
    });
}

// dW(k, c) = G^T S G (K x 9C, row stride ldw), S the sum of the segments' partials in
// segment order (in double).
template <class T, class Arch>
void winograd_wgrad_finish(const conv2d_problem& pb, const winograd_wgrad_layout<T, Arch>& wl, const T* partials,
                           T* dw, index_t ldw) {
  const index_t C = pb.c, K = pb.k, rows_p = wl.rows_p, s_stride = wl.cols_p * rows_p;
  parallel_for(K, [&](index_t k) {
    for (index_t c = 0; c < C; ++c) {
      double s[6][6];
      for (index_t xi = 0; xi < winograd_xis; ++xi) {
        const T* p = partials + xi * s_stride + c * rows_p + k;
        double acc = double(p[0]);
        for (index_t seg = 1; seg < wl.segments; ++seg) acc += double(p[seg * wl.partial_size()]);
        s[xi / 6][xi % 6] = acc;
      }
      double gs[3][6] = {};  // G^T S
      for (int r = 0; r < 3; ++r)
        for (int a = 0; a < 6; ++a)
          for (int b = 0; b < 6; ++b) gs[r][b] += winograd_g[a][r] * s[a][b];
      T* out = dw + k * ldw + c * 9;
      for (int r = 0; r < 3; ++r)
        for (int q = 0; q < 3; ++q) {
          double d = 0;
          for (int b = 0; b < 6; ++b) d += gs[r][b] * winograd_g[b][q];
          out[r * 3 + q] = T(d);
        }
    }
  });
}

// dW (K x 9C, row stride ldw) of a 3x3 stride-1 problem through the Winograd path, with
// the MR x NV register tile of layout wl; x through the prologue, as in the direct engine.
template <class T, class Arch, int MR, int NV, class Prologue>
void winograd_wgrad_run(const conv2d_problem& pb, const winograd_wgrad_layout<T, Arch>& wl,
                        const tensor_view<const T>& x, const tensor_view<const T>& dy, T* dw, index_t ldw,
                        const Prologue& prologue, T* workspace) {
  constexpr index_t lanes = index_t(NV) * index_t(xsimd::batch<T, Arch>::size);
  const winograd_layout<T, Arch>& lay = wl.lay;
  const index_t C = pb.c, K = pb.k, ld = lay.ld;
  const index_t rows_p = wl.rows_p, s_stride = wl.cols_p * rows_p, at_stride = wl.at_stride();
  const index_t z_stride = wl.z_stride(pb), v_stride = wl.v_stride();
  T* partials = gemm::align_pointer(workspace);
  T* thread_base = workspace + wl.partials_size();
  const index_t per_thread = wl.per_thread_size(pb);
  gemm::task_queue queue(wl.segments);
  parallel_region([&](int thread, int) {
    T* base = thread_base + index_t(thread) * per_thread;
    T* v = gemm::align_pointer(base);
    T* z = gemm::align_pointer(base += wl.v_size());
    T* at = gemm::align_pointer(base += wl.z_size(pb));
    T* rows = gemm::align_pointer(base += wl.at_size());
    T* lines = gemm::align_pointer(base += lay.rows_size());
    T* grad_rows = gemm::align_pointer(base += lay.lines_size());
    T* grad_line = gemm::align_pointer(base += wl.grad_rows_size());
    T* zero = gemm::align_pointer(base += wl.grad_line_size());
    winograd_input_init(pb, lay, rows, lines);
    std::fill(grad_line, grad_line + lay.line_ld, T(0));
    std::fill(zero, zero + ld, T(0));
    const T* b_rows[winograd_wgrad_layout<T, Arch>::max_channel_block + MR];
    for (index_t seg = queue.claim(); seg < wl.segments; seg = queue.claim()) {
      const index_range images = split_range(pb.n, wl.segments, seg);
      const index_t n0 = images.begin, total = (images.end - images.begin) * lay.tiles;
      T* out = partials + seg * wl.partial_size();
      for (index_t b0 = 0; b0 < total; b0 += lay.band) {
        const index_t cols = std::min(lay.band, total - b0);
        const bool accumulate = b0 > 0;
        winograd_grad_band(pb, wl, dy, n0, b0, cols, z, grad_rows, grad_line);
        // Z_xi^T: tiles x rows_p lanes, as wgrad_block reads dY^T.
        for (index_t xi = 0; xi < winograd_xis; ++xi)
          pack_transposed<T, Arch>(
              K, rows_p, cols, [&](index_t i) { return z + xi * z_stride + i * ld; }, at + xi * at_stride, rows_p);
        // V of a block of channels at a time, then its 36 products with Z^T into S_xi(c, k).
        for (index_t c0 = 0; c0 < C; c0 += wl.channel_block) {
          const index_t c1 = std::min(C, c0 + wl.channel_block), nc = c1 - c0, nc_p = gemm::round_up(nc, index_t(MR));
          winograd_input_band(pb, lay, x, n0, b0, cols, c0, c1, prologue, v, ld, v_stride, rows, lines);
          for (index_t xi = 0; xi < winograd_xis; ++xi) {
            for (index_t j = 0; j < nc_p; ++j) b_rows[j] = j < nc ? v + xi * v_stride + j * ld : zero;
            T* s = out + xi * s_stride + c0 * rows_p;
            const T* zt = at + xi * at_stride;
            for (index_t ib = 0; ib < rows_p; ib += lanes)
              for (index_t jb = 0; jb < nc_p; jb += MR)
                wgrad_block<T, Arch, MR, NV>(cols, b_rows + jb, 0, zt + ib, rows_p, s + jb * rows_p + ib, rows_p,
                                             accumulate);
          }
        }
      }
    }
  });
  winograd_wgrad_finish(pb, wl, partials, dw, ldw);
}

}  // namespace bnff::detail
