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
//   tasks own a block of rows of dW and a fixed segment of the positions, loop over
//   it in order and leave a partial dW per segment, added in segment order, so
//   the reduction over images is deterministic; the input operand is built by
//   the forward im2col/pointwise packers (with their prologue: padding stays zero
//   after the transform). dY is packed transposed (positions x K), so the product is
//   an outer product per position in registers, with no horizontal sums.
#pragma once

#include <algorithm>
#include <optional>
#include <type_traits>
#include <xsimd/xsimd.hpp>

#include "bnff/config.hpp"
#include "bnff/conv/conv2d_engine.hpp"
#include "bnff/conv/conv2d_problem.hpp"
#include "bnff/conv/wgrad_kernels.hpp"
#include "bnff/conv/winograd_wgrad.hpp"
#include "bnff/fusion/detail/transform_row.hpp"
#include "bnff/fusion/identity_prologue.hpp"
#include "bnff/fusion/output_tile.hpp"
#include "bnff/gemm/block_gemm.hpp"
#include "bnff/gemm/blocking.hpp"
#include "bnff/gemm/task_queue.hpp"
#include "bnff/parallel/parallel.hpp"
#include "bnff/simd/fma.hpp"
#include "bnff/simd/transpose.hpp"
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

// How the weight gradient of `problem` is cut. dW[K x CRS] is a matrix of dot products over
// the N * P * Q positions, cut into `chunks` runs of at most kc positions. The runs form
// `segments` consecutive groups (a fixed function of the problem); a task owns one segment
// and one block of rows of dW (output channels), or of columns when there are too few
// segments to keep 4 tasks, and computes, run by run in order, the dot products of those
// rows with its columns over its segment. Each run's block of dY rows is packed once and
// swept by every column block of im2col in turn, so dY and x are each read once per row
// block (or column group). Every task writes its block of its segment's partial dW
// (stored transposed, dW^T), and the partials are added in segment order afterwards: the
// reduction order depends on the problem alone, never on the thread count.
template <class T, class Arch = xsimd::default_arch>
struct conv2d_backward_weights_plan {
  using batch = xsimd::batch<T, Arch>;
  static constexpr index_t width = index_t(batch::size);
  // Register tile of the outer-product kernel (wgrad_block): MR im2col rows, each element
  // broadcast (read in place: packed rows or shifted runs of a slab, any alignment, so no
  // load splits a cache line), against NV batches of transposed dY (dY^T[position][k]).
  // NV follows K, so that few lanes compute padding (K = 12 in 2 batches wasted 62% of
  // the FMAs): with 32 vector registers (AVX-512) NV = 1, 2, 3, 4 with MR = 12, 12, 8, 6
  // (12 to 24 accumulators; 6 x 4 is 10 loads per 24 FMAs); with 16, NV = 1 or 2, MR = 12 or 6.
  static constexpr bool many_registers = gemm::blocking<T, Arch>::many_registers;  // 32 vector registers
  static constexpr index_t max_nv = many_registers ? 4 : 2, max_mr = 12;
  static constexpr index_t tile_mr(index_t nv) noexcept {
    return nv <= 1 ? 12 : nv == 2 ? (many_registers ? 12 : 6) : nv == 3 ? 8 : 6;
  }
  // The NV that does the most useful FMAs per cycle for k rows: the share of lanes that are
  // not padding, times the tile's own rate (1 batch: 13 loads per 12 FMAs, load-bound,
  // about 3/4; 2: about 0.9; 3 and 4: FMA-bound). The larger NV on a tie.
  static constexpr index_t tile_nv(index_t k) noexcept {
    constexpr index_t rate[5] = {0, 75, 90, 100, 100};
    index_t best = 1;
    for (index_t nv = 2; nv <= max_nv; ++nv)
      if (rate[nv] * gemm::round_up(k, best * width) >= rate[best] * gemm::round_up(k, nv * width)) best = nv;
    return best;
  }
  static constexpr index_t kc = 512;  // positions per packed run (a multiple of every width)
  static constexpr index_t max_segments = 4;
  static constexpr index_t max_col_block = 128;
  // Runs read in place from a slab need no packed im2col block in L2: longer runs, fewer passes.
  static constexpr index_t slab_kc = 1024;
  // Below this many bytes of dW, small planes read im2col from a slab too (see the constructor).
  static constexpr index_t small_dw_bytes = index_t(512) << 10;
  // Positions per kernel call: the kernel's block of dY^T, kc_inner x NV batches, stays in
  // L1 (32 KiB) while every column of the block sweeps it.
  static constexpr index_t inner_bytes = 32 * 1024;
  static_assert(kc % width == 0 && slab_kc % width == 0, "runs are whole batches");
  conv2d_problem problem{};
  index_t rows = 0, cols = 0, plane = 0;  // K, C*R*S, P*Q
  index_t row_block = 0, col_block = 0, row_blocks = 0, col_blocks = 0, col_groups = 1, tasks = 0;
  // The N * P * Q positions, in (image, position) order, cut into `chunks` equal runs of
  // `chunk` positions (the last shorter): a run may span images, so small planes still
  // give long dot products. Segment s holds runs [seg_begin(s), seg_begin(s + 1)).
  index_t chunk = 0, chunks = 0, segments = 0;
  // Stride 1, not pointwise: no im2col. Positions are indexed on a grid as wide as the padded
  // input (u = p * wp + q, as in padded_slab.hpp), so im2col row (c, r, s) over a run of the
  // grid is the run of channel c's zero-padded input (the slab, built through the prologue)
  // shifted by r * wp + s, read in place. dY is packed onto the grid with zeros in the
  // columns q >= Q, so those positions add nothing. Runs then stay inside one image:
  // run i of image n covers grid positions [i * chunk, min((i + 1) * chunk, grid)).
  bool slab = false;
  index_t wp = 0, hp = 0, grid = 0, runs_per_image = 0, slab_plane = 0;
  // The register tile, mr x nv (tile_nv(K)). Rows of dW (K) are handled `lanes` = nv * width
  // at a time, columns (C*R*S) `mr` at a time; rows_p and cols_p round K and C*R*S up to them.
  index_t mr = 0, nv = 0, lanes = 0, kc_inner = 0, rows_p = 0, cols_p = 0;
  // 3x3 stride 1 on planes of more than detail::winograd_min_plane positions: Winograd
  // F(4x4, 3x3) on the same register tile (winograd_wgrad.hpp); the fields above then
  // only give the tile.
  std::optional<detail::winograd_wgrad_layout<T, Arch>> winograd;

  explicit conv2d_backward_weights_plan(const conv2d_problem& pb) : problem(pb) {
    rows = pb.k;
    cols = pb.c * pb.r * pb.s;
    plane = pb.p() * pb.q();
    // Where an image's grid holds at least one full run, or where dW is small. Runs never
    // span images on the grid, so on a small plane (14 x 14, 7 x 7) a run is one image and
    // every run ends by adding the register tiles into the task's block of partial dW^T:
    // cheap while that block stays in L2 (DenseNet's 3x3 layers, 32 x 1152: slab runs made
    // the weight gradient 1.4-1.5x faster at 14 x 14 and 1.1x at 7 x 7, with no im2col to
    // pack), but ResNet-50's conv5_x 3x3 (512 x 4608, 9.4 MB) became 1.3x slower; the packed
    // path runs across images there, 400 positions per run.
    slab = pb.stride == 1 && !pb.is_pointwise() &&
           (pb.p() * (pb.w + 2 * pb.pad) >= kc || rows * cols * index_t(sizeof(T)) <= small_dw_bytes);
    if (slab) {
      wp = pb.w + 2 * pb.pad;
      hp = pb.h + 2 * pb.pad;
      grid = pb.p() * wp;
      runs_per_image = gemm::ceil_div(grid, slab_kc);
      chunk = std::min(slab_kc, gemm::round_up(gemm::ceil_div(grid, runs_per_image), width));
      runs_per_image = gemm::ceil_div(grid, chunk);
      chunks = pb.n * runs_per_image;
      // A row read from grid position u reaches u + (R - 1) * wp + S - 1 plus the rounding of
      // the run to whole batches: the slab keeps that much past the last grid position.
      slab_plane = gemm::round_up(
          std::max(hp * wp, gemm::round_up(grid, width) + (pb.r - 1) * wp + pb.s - 1), width);
    } else {
      const index_t total = pb.n * plane;
      chunks = gemm::ceil_div(total, kc);
      chunk = std::min(kc, gemm::round_up(gemm::ceil_div(total, chunks), width));
      chunks = gemm::ceil_div(total, chunk);
    }
    segments = std::min(max_segments, chunks);
    nv = tile_nv(rows);
    mr = tile_mr(nv);
    lanes = nv * width;
    kc_inner = std::max(width, inner_bytes / index_t(sizeof(T)) / lanes / width * width);
    rows_p = gemm::round_up(rows, lanes);
    cols_p = gemm::round_up(cols, mr);
    // Column blocks of about 128 im2col rows (one packed block); the dY block of a task,
    // row_block x kc, is what stays in L2 while they sweep it: at most 256 rows (512 KiB).
    col_block = gemm::round_up(gemm::ceil_div(cols, gemm::ceil_div(cols, max_col_block)), mr);
    col_blocks = gemm::ceil_div(cols, col_block);
    // At least 4 tasks (so that 2 or 4 threads share them evenly): with fewer segments than
    // that, the smaller operand is the one packed twice, split the other way: the column
    // blocks into groups when im2col has more rows than dY (then each group packs dY again),
    // else the dY rows (each row block packs im2col again).
    const index_t extra = gemm::ceil_div(max_segments, segments);
    index_t rparts = gemm::ceil_div(rows, 256);
    if (extra > 1 && cols > rows && col_blocks >= extra)
      col_groups = extra;
    else
      rparts = std::max(rparts, extra);
    row_block = gemm::round_up(gemm::ceil_div(rows, rparts), lanes);
    row_blocks = gemm::ceil_div(rows, row_block);
    tasks = segments * row_blocks * col_groups;
    if (detail::winograd_eligible(pb)) winograd.emplace(pb, mr, lanes);
  }

  constexpr index_t seg_begin(index_t s) const noexcept { return split_range(chunks, segments, s).begin; }
  constexpr index_t seg_end(index_t s) const noexcept { return split_range(chunks, segments, s).end; }

  // With a slab, dY's rows on the grid (then transposed): row_block x slab_kc.
  index_t packed_a_size() const noexcept { return slab ? gemm::aligned_extent<T>(row_block * slab_kc) : 0; }
  // dY^T of a run: (kc + width) positions x row_block (a transposed tile may write up to
  // width - 1 positions past the run before they are zeroed).
  index_t transposed_a_size() const noexcept {
    return gemm::aligned_extent<T>(((slab ? slab_kc : kc) + width) * row_block);
  }
  // A packed im2col block, or with a slab one row of zeros (the padding rows of a register block).
  index_t packed_b_size() const noexcept { return gemm::aligned_extent<T>(slab ? slab_kc : col_block * kc); }
  // Without a slab: the zero-padded planes of one input image, through the prologue (only
  // the rows a chunk reads are filled), so that the im2col taps copy runs of them instead of
  // transforming R * S times (padded_planes.hpp). With a slab: the slab of every input
  // channel (only the rows a run reads are filled).
  index_t transformed_size() const noexcept {
    if (problem.is_pointwise()) return 0;
    return gemm::aligned_extent<T>(problem.c * (slab ? slab_plane : detail::padded_plane_size(problem)));
  }
  // The partial dW^T of every segment, cols_p x rows_p (rows of dW as columns: the kernel's
  // NV batches are consecutive rows of dW).
  index_t partials_size() const noexcept { return gemm::aligned_extent<T>(segments * cols_p * rows_p); }
  index_t per_thread_size() const noexcept {
    return packed_a_size() + transposed_a_size() + packed_b_size() + transformed_size();
  }
  index_t workspace_size(int threads) const noexcept {
    if (winograd) return winograd->workspace_size(problem, threads);
    return partials_size() + index_t(threads) * per_thread_size();
  }
};

namespace detail {

// Wt[c, k, r, s] = W[k, c, R-1-r, S-1-s]: the forward weights of the transposed convolution.
// 1x1 (the data gradient's most frequent case, where this is a plain transpose) goes by
// batch-square register tiles; elsewhere element by element, in blocks of 16 x 16 (c, k)
// so that W's rows, C * R * S elements apart, stay in cache.
template <class T, class Arch>
void flip_transpose_weights(const conv2d_problem& pb, const tensor_view<const T>& w, T* wt) {
  constexpr index_t width = index_t(xsimd::batch<T, Arch>::size), tile = 16;
  const index_t rs = pb.r * pb.s;
  index_t c_done = 0, k_done = 0;  // the tiles below cover [0, c_done) x [0, k_done)
  if (rs == 1 && w.strides().c == 1) {
    c_done = pb.c / width * width;
    k_done = pb.k / width * width;
    const T* rows[width];
    for (index_t c0 = 0; c0 < c_done; c0 += width)
      for (index_t k0 = 0; k0 < k_done; k0 += width) {
        for (index_t i = 0; i < width; ++i) rows[i] = &w(k0 + i, c0, 0, 0);
        simd::transpose_tile<T, Arch>(rows, wt + c0 * pb.k + k0, pb.k);
      }
  }
  auto one = [&](index_t c, index_t k) {
    T* dst = wt + (c * pb.k + k) * rs;
    for (index_t r = 0; r < pb.r; ++r)
      for (index_t s = 0; s < pb.s; ++s) dst[r * pb.s + s] = w(k, c, pb.r - 1 - r, pb.s - 1 - s);
  };
  // The rest: columns [k_done, K) of rows [0, c_done), then rows [c_done, C) whole.
  auto blocks = [&](index_t c_lo, index_t c_hi, index_t k_lo, index_t k_hi) {
    for (index_t c0 = c_lo; c0 < c_hi; c0 += tile)
      for (index_t k0 = k_lo; k0 < k_hi; k0 += tile)
        for (index_t k = k0; k < std::min(k_hi, k0 + tile); ++k)
          for (index_t c = c0; c < std::min(c_hi, c0 + tile); ++c) one(c, k);
  };
  blocks(0, c_done, k_done, pb.k);
  blocks(c_done, pb.c, 0, pb.k);
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
    flip_transpose_weights<T, Arch>(pb, w, wt);
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
  gemm::task_queue queue(pb.n);  // one task per image, claimed: a slowed thread holds no one up
  parallel_region([&](int thread, int) {
    T* bp = gemm::align_pointer(base + index_t(thread) * (plan.packed_b_size() + plan.cols_size()));
    T* cols =
        gemm::align_pointer(base + index_t(thread) * (plan.packed_b_size() + plan.cols_size()) + plan.packed_b_size());
    for (index_t n = queue.claim(); n < pb.n; n = queue.claim()) {
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

// The weight-gradient engine with an MR x NV register tile (the plan's); see below.
template <int MR, int NV, class T, class Arch, class Prologue>
void conv2d_backward_weights_tiles(const conv2d_backward_weights_plan<T, Arch>& plan, const tensor_view<const T>& x,
                                   const tensor_view<const T>& dy, T* dw, index_t ldw, const Prologue& prologue,
                                   T* workspace) {
  if (plan.winograd)
    return winograd_wgrad_run<T, Arch, MR, NV>(plan.problem, *plan.winograd, x, dy, dw, ldw, prologue, workspace);
  using plan_t = conv2d_backward_weights_plan<T, Arch>;
  constexpr index_t width = plan_t::width, lanes = index_t(NV) * width;
  const conv2d_problem& pb = plan.problem;
  const bool pointwise = pb.is_pointwise();
  const index_t per_thread = plan.per_thread_size(), rs = pb.r * pb.s, q_extent = pb.q();
  T* partials = gemm::align_pointer(workspace);
  T* thread_base = workspace + plan.partials_size();
  const index_t ldp = plan.rows_p, part_size = plan.cols_p * plan.rows_p;
  gemm::task_queue queue(plan.tasks);
  parallel_region([&](int thread, int) {
    T* base = thread_base + index_t(thread) * per_thread;
    T* ap = gemm::align_pointer(base);  // slab only
    T* at = gemm::align_pointer(base + plan.packed_a_size());
    T* bp = gemm::align_pointer(base + plan.packed_a_size() + plan.transposed_a_size());
    T* xt = gemm::align_pointer(base + plan.packed_a_size() + plan.transposed_a_size() + plan.packed_b_size());
    const T* b_rows[plan_t::max_col_block + plan_t::max_mr];  // im2col rows of a column block
    if (plan.slab) std::fill(bp, bp + plan_t::slab_kc, T(0));  // the padding rows of register tiles
    for (index_t task = queue.claim(); task < plan.tasks; task = queue.claim()) {
      const index_t group = task % plan.col_groups, seg = task / plan.col_groups / plan.row_blocks;
      const index_t i0 = (task / plan.col_groups % plan.row_blocks) * plan.row_block;
      const index_range cb = split_range(plan.col_blocks, plan.col_groups, group);  // its column blocks
      const index_t j_begin = cb.begin * plan.col_block, j_end = std::min(plan.cols, cb.end * plan.col_block);
      const index_t nrows = std::min(plan.row_block, plan.rows - i0), nrows_p = gemm::round_up(nrows, lanes);
      // This task's rows of its segment's partial dW^T: out[j * ldp + i] for dW row i0 + i.
      T* out = partials + seg * part_size + i0;
      for (index_t ch = plan.seg_begin(seg); ch < plan.seg_end(seg); ++ch) {
        const bool first = ch == plan.seg_begin(seg);
        // The products of im2col rows b_rows[0 .. ncols) (column j0 on) with dY^T (at, the run's
        // kcp positions, nrows_p lanes), into the task's block of dW^T: per lane block, kc_inner
        // positions at a time (a block of at that stays in L1), every column tile in turn.
        // (A lookahead prefetch of what is packed next, as the forward engine issues, cost
        // more than it saved here: the hardware prefetcher follows the packers' runs.)
        auto sweep = [&](index_t j0, index_t ncols, index_t kcp) {
          const index_t ncols_p = gemm::round_up(ncols, index_t(MR));
          for (index_t ib = 0; ib < nrows_p; ib += lanes)
            for (index_t kk = 0; kk < kcp; kk += plan.kc_inner) {
              const index_t klen = std::min(plan.kc_inner, kcp - kk);
              for (index_t jb = 0; jb < ncols_p; jb += MR)
                wgrad_block<T, Arch, MR, NV>(klen, b_rows + jb, kk, at + kk * nrows_p + ib, nrows_p,
                                             out + (j0 + jb) * ldp + ib, ldp, !(first && kk == 0));
            }
        };
        if (plan.slab) {
          const index_t n = ch / plan.runs_per_image, u0 = (ch % plan.runs_per_image) * plan.chunk;
          const index_t u1 = std::min(u0 + plan.chunk, plan.grid), used = u1 - u0;
          const index_t kcp = gemm::round_up(used, width), wp = plan.wp;
          // dY rows i0.. on the grid: each output row's Q values, then zeros to the grid's width.
          for (index_t i = 0; i < nrows; ++i) {
            const T* src = dy.plane_ptr(n, i0 + i);
            T* dst = ap + i * kcp - u0;
            for (index_t u = u0; u < u1;) {
              const index_t p = u / wp, q = u % wp, end = std::min(u1, (p + 1) * wp);
              const index_t valid = std::min(end - u, std::max<index_t>(0, q_extent - q));
              fusion::detail::transform_row<Arch>(src + p * q_extent + q, dst + u, valid,
                                                  [](const auto& v) { return v; });
              std::fill(dst + u + valid, dst + end, T(0));
              u = end;
            }
          }
          pack_transposed<T, Arch>(nrows, nrows_p, used, [&](index_t i) { return ap + i * kcp; }, at, nrows_p);
          std::fill(at + used * nrows_p, at + kcp * nrows_p, T(0));
          // The slab rows this run reads, every channel of the task's columns: padded rows t_lo .. t_hi.
          const index_t last = u1 - 1 + (width - 1) + (pb.r - 1) * wp + (pb.s - 1);
          const index_t t_lo = u0 / wp, t_hi = std::min(plan.hp - 1, last / wp);
          for (index_t c = j_begin / rs; c <= (j_end - 1) / rs; ++c) {
            T* sc = xt + c * plan.slab_plane;
            const T* xc = x.plane_ptr(n, c);
            pad_channel_rows<Arch>(pb, c, xc, x.strides().h, prologue, t_lo, t_hi - t_lo + 1, sc + t_lo * wp);
            if (t_hi == plan.hp - 1) std::fill(sc + plan.hp * wp, sc + plan.slab_plane, T(0));
          }
          for (index_t j0 = j_begin; j0 < j_end; j0 += plan.col_block) {
            const index_t ncols = std::min(plan.col_block, j_end - j0), ncols_p = gemm::round_up(ncols, index_t(MR));
            for (index_t j = 0; j < ncols_p; ++j) {
              if (j >= ncols) {
                b_rows[j] = bp;
                continue;
              }
              const index_t kk = j0 + j, c = kk / rs, r = (kk % rs) / pb.s, s = kk % pb.s;
              b_rows[j] = xt + c * plan.slab_plane + u0 + r * wp + s;
            }
            sweep(j0, ncols, kcp);
          }
          continue;
        }
        const index_t g0 = ch * plan.chunk, g1 = std::min(g0 + plan.chunk, pb.n * plan.plane);
        const index_t kcp = gemm::round_up(g1 - g0, width), used = g1 - g0;
        // dY^T of rows i0.. over this run: segments of one image each, one after another.
        for (index_t g = g0; g < g1;) {
          const index_t n = g / plan.plane, pos0 = g % plan.plane, len = std::min(g1 - g, plan.plane - pos0);
          pack_transposed<T, Arch>(
              nrows, nrows_p, len, [&](index_t i) { return dy.plane_ptr(n, i0 + i) + pos0; },
              at + (g - g0) * nrows_p, nrows_p);
          g += len;
        }
        std::fill(at + used * nrows_p, at + kcp * nrows_p, T(0));
        for (index_t j0 = j_begin; j0 < j_end; j0 += plan.col_block) {
          const index_t ncols = std::min(plan.col_block, j_end - j0), ncols_p = gemm::round_up(ncols, index_t(MR));
          // im2col rows j0.. (input channels, or (c, r, s) triples, through the prologue) over this run.
          for (index_t g = g0; g < g1;) {
            const index_t n = g / plan.plane, pos0 = g % plan.plane, len = std::min(g1 - g, plan.plane - pos0);
            const index_t off = g - g0;
            if (pointwise) {
              pointwise_packer<T, Arch, Prologue> packer{x.plane_ptr(n, 0) + pos0, x.strides().c, len, prologue};
              packer.pack(j0, ncols, bp + off, kcp);
            } else {
              // Pad the rows this piece's taps read (channels of the column block) once, through
              // the prologue, then copy im2col runs out of the padded planes (padded_planes.hpp).
              const index_t pp = padded_plane_size(pb), wp = pb.w + 2 * pb.pad;
              const index_t c_lo = j0 / rs, c_hi = (j0 + ncols - 1) / rs;
              const index_t p0 = pos0 / q_extent, q0 = pos0 % q_extent, t_lo = p0 * pb.stride;
              const index_t t_hi = (pos0 + len - 1) / q_extent * pb.stride + pb.r - 1;
              for (index_t c = c_lo; c <= c_hi; ++c)
                pad_channel_rows<Arch>(pb, c, x.plane_ptr(n, c), x.strides().h, prologue, t_lo, t_hi - t_lo + 1,
                                       xt + c * pp + t_lo * wp);
              for (index_t j = 0; j < ncols; ++j) {
                const index_t kk = j0 + j, c = kk / rs, r = (kk % rs) / pb.s, s = kk % pb.s;
                pack_padded_row<Arch>(pb, xt + c * pp, r, s, p0, q0, len, bp + j * kcp + off);
              }
            }
            g += len;
          }
          for (index_t j = 0; j < ncols_p; ++j) {
            std::fill(bp + j * kcp + (j < ncols ? used : 0), bp + (j + 1) * kcp, T(0));
            b_rows[j] = bp + j * kcp;
          }
          sweep(j0, ncols, kcp);
        }
      }
    }
  });
  // dW[k][j] = partial 0 + partial 1 + ... (of dW^T[j][k]), in segment order, a tile of
  // width x width at a time; one task per band of columns.
  parallel_for(gemm::ceil_div(plan.cols, width), [&](index_t band) {
    alignas(64) T sum[width * width];
    alignas(64) T sum_t[width * width];
    const T* src[width];
    const index_t j0 = band * width, nj = std::min(width, plan.cols - j0);
    for (index_t r = 0; r < width; ++r) src[r] = sum + r * width;
    for (index_t k0 = 0; k0 < plan.rows; k0 += width) {
      const index_t nk = std::min(width, plan.rows - k0);
      for (index_t r = 0; r < width; ++r) {
        T* d = sum + r * width;
        if (r >= nj) {
          std::fill(d, d + width, T(0));
          continue;
        }
        const T* p = partials + (j0 + r) * ldp + k0;
        xsimd::batch<T, Arch> v = xsimd::batch<T, Arch>::load_aligned(p);
        for (index_t s = 1; s < plan.segments; ++s) v += xsimd::batch<T, Arch>::load_aligned(p + s * part_size);
        v.store_aligned(d);
      }
      simd::transpose_tile<T, Arch>(src, sum_t, width);
      for (index_t k = 0; k < nk; ++k) std::copy(sum_t + k * width, sum_t + k * width + nj, dw + (k0 + k) * ldw + j0);
    }
  });
}

// Weight-gradient engine; arguments assumed valid. dW: K x CRS row-major with row stride ldw.
// Prologue transforms the stored input while it is packed (the forward's prologue).
// Per run of positions, dY's rows are packed transposed (dY^T: positions x K) and the
// im2col rows are read as rows (packed, or in place from a slab): each kernel tile is then
// an outer product per position, with no horizontal sums. Tasks accumulate dW^T of their
// segment; the partials are added in segment order and transposed into dW at the end.
template <class T, class Arch, class Prologue>
void conv2d_backward_weights_run(const conv2d_backward_weights_plan<T, Arch>& plan, const tensor_view<const T>& x,
                                 const tensor_view<const T>& dy, T* dw, index_t ldw, const Prologue& prologue,
                                 T* workspace) {
  using plan_t = conv2d_backward_weights_plan<T, Arch>;
  constexpr int mr1 = int(plan_t::tile_mr(1)), mr2 = int(plan_t::tile_mr(2));
  if constexpr (plan_t::max_nv == 4) {
    constexpr int mr3 = int(plan_t::tile_mr(3)), mr4 = int(plan_t::tile_mr(4));
    switch (plan.nv) {
      case 1: return conv2d_backward_weights_tiles<mr1, 1>(plan, x, dy, dw, ldw, prologue, workspace);
      case 2: return conv2d_backward_weights_tiles<mr2, 2>(plan, x, dy, dw, ldw, prologue, workspace);
      case 3: return conv2d_backward_weights_tiles<mr3, 3>(plan, x, dy, dw, ldw, prologue, workspace);
      default: return conv2d_backward_weights_tiles<mr4, 4>(plan, x, dy, dw, ldw, prologue, workspace);
    }
  } else {
    if (plan.nv == 1) return conv2d_backward_weights_tiles<mr1, 1>(plan, x, dy, dw, ldw, prologue, workspace);
    return conv2d_backward_weights_tiles<mr2, 2>(plan, x, dy, dw, ldw, prologue, workspace);
  }
}

}  // namespace detail
}  // namespace bnff
