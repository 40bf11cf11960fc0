// bnff: the convolution backward engines, on the forward engine's packers, GEMM
// driver and microkernel.
//
// Data gradient, dX = conv_transpose(dY, W):
//   - stride 1, square kernel: a forward convolution of dY with the flipped,
//     transposed weights Wt[c, k, r, s] = W[k, c, R-1-r, S-1-s] and padding R-1-pad,
//     run by the forward engine with its epilogues (tasks: image x column tile);
//   - otherwise (or when accumulating into dX): cols_n[CRS x PQ] = W^T * dY_n block
//     by block, each finished block scatter-added into dX_n (col2im); one task per
//     image, so the additions run in one fixed order.
// Weight gradient, dW[K x CRS] = sum_n dY_n[K x PQ] * im2col(prologue(X_n))^T:
//   tasks own blocks of dW and loop over every image and position in order, so
//   the reduction over images is deterministic; the input operand is built by
//   the forward im2col/pointwise packers (with their prologue: padding stays zero
//   after the transform) and transposed into the GEMM's B layout.
#pragma once

#include <algorithm>
#include <optional>
#include <xsimd/xsimd.hpp>

#include "bnff/config.hpp"
#include "bnff/conv/conv2d_engine.hpp"
#include "bnff/conv/conv2d_problem.hpp"
#include "bnff/fusion/identity_prologue.hpp"
#include "bnff/fusion/output_tile.hpp"
#include "bnff/gemm/block_gemm.hpp"
#include "bnff/parallel/parallel.hpp"
#include "bnff/stats/stats_partition.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff {

// How the data gradient of `problem` is cut; every size is a function of the problem alone.
template <class T, class Arch = xsimd::default_arch>
struct conv2d_backward_data_plan {
  using blk = gemm::blocking<T, Arch>;
  conv2d_problem problem{};
  // Stride 1 and a square kernel: dX is the forward convolution `forward` of dY.
  std::optional<conv2d_plan<T, Arch>> forward;
  // The col2im path: GEMM rows C*R*S, depth K, column tiles over the P x Q plane.
  index_t rows = 0, plane = 0, tile = 0, tiles = 0;

  conv2d_backward_data_plan(const conv2d_problem& pb, bool accumulate) : problem(pb) {
    if (pb.stride == 1 && pb.r == pb.s && !accumulate)
      forward.emplace(conv2d_problem{pb.n, pb.k, pb.p(), pb.q(), pb.c, pb.r, pb.s, pb.r - 1 - pb.pad, 1});
    rows = pb.c * pb.r * pb.s;
    plane = pb.p() * pb.q();
    // Column tiles bounded so that the rows x tile block of columns stays near L2 size.
    const index_t max_cols = std::clamp<index_t>((index_t(1) << 17) / rows, blk::nr, blk::nc_max);
    const index_t parts = gemm::ceil_div(plane, max_cols);
    tile = gemm::round_up(gemm::ceil_div(plane, parts), blk::nr);
    tiles = gemm::ceil_div(plane, tile);
  }

  // Elements of the flipped, transposed weights (forward path).
  index_t weights_size() const noexcept { return gemm::aligned_extent<T>(problem.filter_shape().size()); }
  index_t packed_a_size() const noexcept {
    return gemm::aligned_extent<T>(gemm::packed_a_size<T, Arch>(rows, problem.k));
  }
  index_t packed_b_size() const noexcept {
    return gemm::aligned_extent<T>(gemm::packed_b_size<T, Arch>(problem.k, tile));
  }
  index_t cols_size() const noexcept { return gemm::aligned_extent<T>(rows * tile); }
  index_t workspace_size(int threads) const noexcept {
    if (forward) return weights_size() + forward->workspace_size(threads);
    return packed_a_size() + index_t(threads) * (packed_b_size() + cols_size());
  }
  // The partition of dX the fused epilogues reduce over: one partial per (channel, image,
  // block); blocks are the forward engine's column tiles, or fixed blocks of whole planes.
  stats_partition partition() const noexcept {
    return stats_partition{problem.n, problem.c, problem.h * problem.w, forward ? forward->tile : default_stats_block};
  }
};

// How the weight gradient of `problem` is cut.
template <class T, class Arch = xsimd::default_arch>
struct conv2d_backward_weights_plan {
  using blk = gemm::blocking<T, Arch>;
  conv2d_problem problem{};
  index_t rows = 0, cols = 0, plane = 0;  // K, C*R*S, P*Q (the reduction runs over N * P * Q)
  index_t row_block = 0, col_block = 0, row_blocks = 0, col_blocks = 0, tasks = 0;
  static constexpr index_t kc = blk::kc;  // positions per packed block

  explicit conv2d_backward_weights_plan(const conv2d_problem& pb) : problem(pb) {
    rows = pb.k;
    cols = pb.c * pb.r * pb.s;
    plane = pb.p() * pb.q();
    // Blocks of at most 64 rows and about 256 columns: a packed kc x col_block block of
    // the input stays in L2 while every row panel of dY sweeps it.
    const index_t rparts = gemm::ceil_div(rows, 64), cparts = gemm::ceil_div(cols, 256);
    row_block = gemm::round_up(gemm::ceil_div(rows, rparts), blk::mr);
    col_block = gemm::round_up(gemm::ceil_div(cols, cparts), blk::nr);
    row_blocks = gemm::ceil_div(rows, row_block);
    col_blocks = gemm::ceil_div(cols, col_block);
    tasks = row_blocks * col_blocks;
  }

  index_t packed_a_size() const noexcept { return gemm::aligned_extent<T>(row_block * kc); }
  index_t im2col_size() const noexcept { return gemm::aligned_extent<T>(col_block * kc); }
  index_t packed_b_size() const noexcept { return gemm::aligned_extent<T>(kc * col_block); }
  index_t workspace_size(int threads) const noexcept {
    return index_t(threads) * (packed_a_size() + im2col_size() + packed_b_size());
  }
};

namespace detail {

// Wt[c, k, r, s] = W[k, c, R-1-r, S-1-s]: the forward weights of the transposed convolution.
template <class T>
void flip_transpose_weights(const conv2d_problem& pb, const tensor_view<const T>& w, T* wt) {
  for (index_t c = 0; c < pb.c; ++c)
    for (index_t k = 0; k < pb.k; ++k)
      for (index_t r = 0; r < pb.r; ++r)
        for (index_t s = 0; s < pb.s; ++s) *wt++ = w(k, c, pb.r - 1 - r, pb.s - 1 - s);
}

// dX_n[c, p * stride - pad + r, q * stride - pad + s] += cols[(c, r, s), position] for the
// rows [row0, row0 + nrows) of a finished column block (positions col0 .. col0 + ncols).
template <class T>
void col2im_add(const conv2d_problem& pb, const T* cols, index_t ldc, index_t row0, index_t nrows, index_t col0,
                index_t ncols, T* dx, index_t ldx, index_t ldh) {
  const index_t q_extent = pb.q(), rs = pb.r * pb.s;
  for (index_t i = row0; i < row0 + nrows; ++i) {
    const index_t c = i / rs, r = (i % rs) / pb.s, s = i % pb.s;
    const T* src = cols + i * ldc;
    T* xc = dx + c * ldx;
    index_t j = 0;
    while (j < ncols) {
      const index_t pos = col0 + j, p = pos / q_extent, q0 = pos % q_extent;
      const index_t run = std::min(ncols - j, q_extent - q0);
      const index_t ih = p * pb.stride - pb.pad + r;
      if (ih >= 0 && ih < pb.h) {
        const index_t off = s - pb.pad;
        index_t qlo = off >= 0 ? 0 : (-off + pb.stride - 1) / pb.stride;
        index_t qhi = (pb.w - 1 - off) >= 0 ? (pb.w - 1 - off) / pb.stride + 1 : 0;
        qlo = std::clamp(qlo, q0, q0 + run);
        qhi = std::clamp(qhi, qlo, q0 + run);
        T* row = xc + ih * ldh + off;
        const T* s0 = src + j - q0;
        if (pb.stride == 1)
          for (index_t q = qlo; q < qhi; ++q) row[q] += s0[q];
        else
          for (index_t q = qlo; q < qhi; ++q) row[q * pb.stride] += s0[q];
      }
      j += run;
    }
  }
}

// The data-gradient engine; arguments are assumed valid (the public operations check them).
// Accumulate (only on the col2im path) adds to dx instead of overwriting it. Epilogue
// receives every block of dx once, after it is final: an output_tile over channels and
// positions of one image, with col0 on a boundary of plan.partition().
template <class T, class Arch, class Epilogue>
void conv2d_backward_data_run(const conv2d_backward_data_plan<T, Arch>& plan, const tensor_view<const T>& dy,
                              const tensor_view<const T>& w, const tensor_view<T>& dx, bool accumulate,
                              const Epilogue& epilogue, T* workspace) {
  const conv2d_problem& pb = plan.problem;
  if (plan.forward) {
    T* wt = gemm::align_pointer(workspace);
    flip_transpose_weights(pb, w, wt);
    const tensor_view<const T> wtv(wt, shape4{pb.c, pb.k, pb.r, pb.s});
    conv2d_forward_run(*plan.forward, dy, wtv, dx, identity_prologue{}, epilogue, workspace + plan.weights_size());
    return;
  }
  const index_t rs = pb.r * pb.s;
  T* ap = gemm::align_pointer(workspace);
  gemm::pack_a<T, Arch>(
      plan.rows, pb.k, [&](index_t i, index_t k) { return w(k, i / rs, (i % rs) / pb.s, i % pb.s); }, ap);
  T* base = workspace + plan.packed_a_size();
  const identity_prologue identity{};
  parallel_region([&](int thread, int threads) {
    T* bp = gemm::align_pointer(base + index_t(thread) * (plan.packed_b_size() + plan.cols_size()));
    T* cols =
        gemm::align_pointer(base + index_t(thread) * (plan.packed_b_size() + plan.cols_size()) + plan.packed_b_size());
    for (index_t n = thread; n < pb.n; n += threads) {
      T* dxn = dx.plane_ptr(n, 0);
      const index_t ldx = dx.strides().c, ldh = dx.strides().h;
      if (!accumulate)
        for (index_t c = 0; c < pb.c; ++c) std::fill(dxn + c * ldx, dxn + c * ldx + pb.h * pb.w, T(0));
      for (index_t t = 0; t < plan.tiles; ++t) {
        const index_t col0 = t * plan.tile, ncols = std::min(plan.tile, plan.plane - col0);
        pointwise_packer<T, Arch, identity_prologue> packer{dy.plane_ptr(n, 0) + col0, dy.strides().c, ncols, identity};
        gemm::gemm_tile<T, Arch>(plan.rows, pb.k, ap, packer, bp, cols, plan.tile, ncols,
                                 [&](index_t row0, index_t nrows) {
                                   col2im_add(pb, cols, plan.tile, row0, nrows, col0, ncols, dxn, ldx, ldh);
                                 });
      }
      epilogue(output_tile<T>{dxn, dx.strides().c, n, 0, pb.c, 0, pb.h * pb.w});
    }
  });
}

// rows x cols block of src (row stride lds) -> dst[j * ldd + i] = src[i * lds + j], in
// 8 x 8 squares so that both sides stay within a few cache lines.
template <class T>
void transpose_block(const T* src, index_t lds, index_t rows, index_t cols, T* dst, index_t ldd) {
  constexpr index_t b = 8;
  for (index_t i0 = 0; i0 < rows; i0 += b) {
    const index_t i1 = std::min(rows, i0 + b);
    for (index_t j0 = 0; j0 < cols; j0 += b) {
      const index_t j1 = std::min(cols, j0 + b);
      for (index_t j = j0; j < j1; ++j)
        for (index_t i = i0; i < i1; ++i) dst[j * ldd + i] = src[i * lds + j];
    }
  }
}

// Weight-gradient engine; arguments assumed valid. dw: K x CRS row-major with row stride ldw.
// Prologue transforms the stored input while it is packed (the forward's prologue).
template <class T, class Arch, class Prologue>
void conv2d_backward_weights_run(const conv2d_backward_weights_plan<T, Arch>& plan, const tensor_view<const T>& x,
                                 const tensor_view<const T>& dy, T* dw, index_t ldw, const Prologue& prologue,
                                 T* workspace) {
  using blk = gemm::blocking<T, Arch>;
  using kernel = gemm::microkernel<T, Arch, blk::mr, blk::nv>;
  constexpr index_t mr = blk::mr, nr = blk::nr, kc = plan.kc;
  const conv2d_problem& pb = plan.problem;
  const bool pointwise = pb.is_pointwise();
  const index_t per_thread = plan.packed_a_size() + plan.im2col_size() + plan.packed_b_size();
  parallel_region([&](int thread, int threads) {
    T* ap = gemm::align_pointer(workspace + index_t(thread) * per_thread);
    T* tmp = gemm::align_pointer(workspace + index_t(thread) * per_thread + plan.packed_a_size());
    T* bp = gemm::align_pointer(workspace + index_t(thread) * per_thread + plan.packed_a_size() + plan.im2col_size());
    for (index_t task = thread; task < plan.tasks; task += threads) {
      const index_t i0 = (task / plan.col_blocks) * plan.row_block, j0 = (task % plan.col_blocks) * plan.col_block;
      const index_t nrows = std::min(plan.row_block, plan.rows - i0), ncols = std::min(plan.col_block, plan.cols - j0);
      const index_t ldb = gemm::round_up(ncols, nr);
      for (index_t n = 0; n < pb.n; ++n) {
        for (index_t pos0 = 0; pos0 < plan.plane; pos0 += kc) {
          const index_t kcount = std::min(kc, plan.plane - pos0);
          // A: rows i0.. of dY_n at positions pos0.., in panels of mr rows (zero rows past the end).
          for (index_t p0 = 0; p0 < nrows; p0 += mr) {
            T* dst = ap + p0 * kcount;
            for (index_t i = 0; i < mr; ++i) {
              if (p0 + i < nrows) {
                const T* src = dy.plane_ptr(n, i0 + p0 + i) + pos0;
                for (index_t k = 0; k < kcount; ++k) dst[k * mr + i] = src[k];
              } else {
                for (index_t k = 0; k < kcount; ++k) dst[k * mr + i] = T(0);
              }
            }
          }
          // B: im2col rows j0.. (input channels, or (c, r, s) triples) at positions pos0..,
          // through the prologue, then transposed to positions x columns.
          if (pointwise) {
            pointwise_packer<T, Arch, Prologue> packer{x.plane_ptr(n, 0) + pos0, x.strides().c, kcount, prologue};
            packer.pack(j0, ncols, tmp, kc);
          } else {
            im2col_packer<T, Arch, Prologue> packer{x.plane_ptr(n, 0), x.strides().c, x.strides().h, pb, pos0, kcount,
                                                    prologue};
            packer.pack(j0, ncols, tmp, kc);
          }
          transpose_block(tmp, kc, ncols, kcount, bp, ldb);
          if (ldb > ncols)
            for (index_t k = 0; k < kcount; ++k) std::fill(bp + k * ldb + ncols, bp + (k + 1) * ldb, T(0));
          const bool accumulate = n > 0 || pos0 > 0;
          for (index_t i = 0; i < nrows; i += mr) {
            const index_t rows_here = std::min(mr, nrows - i);
            for (index_t j = 0; j < ncols; j += nr) {
              const index_t cols_here = std::min(nr, ncols - j);
              T* c = dw + (i0 + i) * ldw + j0 + j;
              if (rows_here == mr && cols_here == nr)
                kernel::run(kcount, ap + i * kcount, bp + j, ldb, c, ldw, accumulate);
              else
                kernel::run_edge(kcount, ap + i * kcount, bp + j, ldb, c, ldw, accumulate, rows_here, cols_here);
            }
          }
        }
      }
    }
  });
}

}  // namespace detail
}  // namespace bnff
