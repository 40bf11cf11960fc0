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
//   after the transform). Both operands keep positions contiguous, so the product is
//   a block of dot products along positions (no transposes).
#pragma once

#include <algorithm>
#include <optional>
#include <type_traits>
#include <xsimd/xsimd.hpp>

#include "bnff/config.hpp"
#include "bnff/conv/conv2d_engine.hpp"
#include "bnff/conv/conv2d_problem.hpp"
#include "bnff/fusion/detail/transform_row.hpp"
#include "bnff/fusion/identity_prologue.hpp"
#include "bnff/fusion/output_tile.hpp"
#include "bnff/gemm/block_gemm.hpp"
#include "bnff/gemm/task_queue.hpp"
#include "bnff/parallel/parallel.hpp"
#include "bnff/simd/fma.hpp"
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
// block (or column group). With several segments every task writes a partial dW of
// its own, and the partials are added in segment order afterwards: the reduction order
// depends on the problem alone, never on the thread count.
template <class T, class Arch = xsimd::default_arch>
struct conv2d_backward_weights_plan {
  using batch = xsimd::batch<T, Arch>;
  static constexpr index_t width = index_t(batch::size);
  // Register block: mb rows of dY (streamed from L2) against nb rows of im2col (kept in L1),
  // mb * nb = 16 vector accumulators and mb + nb = 10 loads per 16 FMAs; only mb of them
  // come from L2, which bounds the kernel when the dY block outgrows L1.
  static constexpr index_t mb = 2, nb = 8;
  // With a slab the im2col rows are unaligned shifted runs: the block turns around, 8 dY rows
  // (in L1) against 2 slab rows, so that only 2 of the 10 loads per 16 FMAs split cache lines.
  static constexpr index_t slab_mb = 8, slab_nb = 2;
  static constexpr index_t kc = 512;  // positions per packed run (a multiple of every width)
  static constexpr index_t max_segments = 4;
  static constexpr index_t max_col_block = 128;  // a multiple of nb
  // Runs read in place from a slab need no packed im2col block in L2: longer runs, fewer reductions.
  static constexpr index_t slab_kc = 1024;
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

  explicit conv2d_backward_weights_plan(const conv2d_problem& pb) : problem(pb) {
    rows = pb.k;
    cols = pb.c * pb.r * pb.s;
    plane = pb.p() * pb.q();
    // Only where an image's grid holds at least one full run: runs never span images on the
    // grid, and small planes (14 x 14, 7 x 7) would give dot products of a few batches, which
    // the packed path avoids by running across images.
    slab = pb.stride == 1 && !pb.is_pointwise() && pb.p() * (pb.w + 2 * pb.pad) >= kc;
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
    // Column blocks of at most 128 im2col rows (one packed block); the dY block of a task,
    // row_block x kc, is what stays in L2 while they sweep it: at most 256 rows (512 KiB).
    col_block = gemm::round_up(gemm::ceil_div(cols, gemm::ceil_div(cols, max_col_block)), nb);
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
    row_block = gemm::round_up(gemm::ceil_div(rows, rparts), slab ? slab_mb : mb);
    row_blocks = gemm::ceil_div(rows, row_block);
    tasks = segments * row_blocks * col_groups;
  }

  constexpr index_t seg_begin(index_t s) const noexcept { return split_range(chunks, segments, s).begin; }
  constexpr index_t seg_end(index_t s) const noexcept { return split_range(chunks, segments, s).end; }

  index_t packed_a_size() const noexcept { return gemm::aligned_extent<T>(row_block * (slab ? slab_kc : kc)); }
  // A packed im2col block, or with a slab one row of zeros (the padding rows of a register block).
  index_t packed_b_size() const noexcept { return gemm::aligned_extent<T>(slab ? slab_kc : col_block * kc); }
  // Strided problems: one input image transformed by the prologue (only the rows a chunk
  // reads are filled), so that the im2col taps copy it instead of transforming R * S times.
  // Stride 1: the slab of every input channel (only the rows a run reads are filled).
  index_t transformed_size() const noexcept {
    if (problem.is_pointwise()) return 0;
    return gemm::aligned_extent<T>(slab ? problem.c * slab_plane : problem.c * problem.h * problem.w);
  }
  // The partial dW of every segment (none with a single segment: tasks then write dW).
  index_t partials_size() const noexcept {
    return segments > 1 ? gemm::aligned_extent<T>(segments * rows * cols) : 0;
  }
  index_t per_thread_size() const noexcept { return packed_a_size() + packed_b_size() + transformed_size(); }
  index_t workspace_size(int threads) const noexcept {
    return partials_size() + index_t(threads) * per_thread_size();
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

// Where xsimd::haddp leaves each row's sum: lane[i] of its result holds the sum of row[i].
// Measured once rather than assumed, because the order is not the same on every
// architecture (xsimd 8.1's AVX-512 float kernel returns rows 0 1 4 5 2 3 6 7 ...).
template <class T, class Arch>
struct haddp_lanes {
  using batch = xsimd::batch<T, Arch>;
  static constexpr index_t width = index_t(batch::size);
  index_t lane[width];
  haddp_lanes() noexcept {
    batch rows[width];
    for (index_t i = 0; i < width; ++i) rows[i] = batch(T(i));
    alignas(64) T sums[width];
    xsimd::haddp(rows).store_aligned(sums);
    for (index_t l = 0; l < width; ++l) lane[index_t(sums[l]) / width] = l;  // small integers: exact
  }
  static const haddp_lanes& get() noexcept {
    static const haddp_lanes lanes;
    return lanes;
  }
};

// sums[g + lanes.lane[r]] (g = r - r % width) = sum_k a[i * ld + k] * b[j * ld + k] for r = i * NB + j,
// an MB x NB block of rows over len positions (a multiple of the width, rows aligned):
// MB * NB independent FMA chains cover the FMA latency; the accumulators are reduced once
// per call, a batch of them at a time (haddp: one shuffle tree instead of a horizontal add each).
// b's rows: b_rows[j] (unaligned: shifted runs of a slab), a's: packed, ld apart.
template <class T, class Arch, int MB, int NB>
BNFF_ALWAYS_INLINE void dot_block(const T* BNFF_RESTRICT a, const T* const* b_rows, index_t ld, index_t len,
                                  T* sums) noexcept {
  using batch = xsimd::batch<T, Arch>;
  constexpr index_t width = index_t(batch::size);
  constexpr int count = MB * NB;
  static_assert(count % width == 0, "the accumulators reduce in groups of one batch");
  const T* b[NB];
#pragma GCC unroll 16
  for (int j = 0; j < NB; ++j) b[j] = b_rows[j];
  batch acc[count];
#pragma GCC unroll 32
  for (int i = 0; i < count; ++i) acc[i] = batch(T(0));
  for (index_t k = 0; k < len; k += width) {
    batch bv[NB];
#pragma GCC unroll 16
    for (int j = 0; j < NB; ++j) bv[j] = batch::load_unaligned(b[j] + k);
#pragma GCC unroll 16
    for (int i = 0; i < MB; ++i) {
      const batch av = batch::load_aligned(a + i * ld + k);
#pragma GCC unroll 16
      for (int j = 0; j < NB; ++j) acc[i * NB + j] = simd::fma(av, bv[j], acc[i * NB + j]);
    }
  }
#pragma GCC unroll 16
  for (int g = 0; g < count; g += int(width)) xsimd::haddp(acc + g).store_aligned(sums + g);
}

template <class T, class Arch, int MB, int NB>
BNFF_ALWAYS_INLINE void dot_block(const T* BNFF_RESTRICT a, const T* BNFF_RESTRICT b, index_t ld, index_t len,
                                  T* sums) noexcept {
  using batch = xsimd::batch<T, Arch>;
  constexpr index_t width = index_t(batch::size);
  constexpr int count = MB * NB;
  static_assert(count % width == 0, "the accumulators reduce in groups of one batch");
  batch acc[count];
#pragma GCC unroll 32
  for (int i = 0; i < count; ++i) acc[i] = batch(T(0));
  for (index_t k = 0; k < len; k += width) {
    batch bv[NB];
#pragma GCC unroll 16
    for (int j = 0; j < NB; ++j) bv[j] = batch::load_aligned(b + j * ld + k);
#pragma GCC unroll 16
    for (int i = 0; i < MB; ++i) {
      const batch av = batch::load_aligned(a + i * ld + k);
#pragma GCC unroll 16
      for (int j = 0; j < NB; ++j) acc[i * NB + j] = simd::fma(av, bv[j], acc[i * NB + j]);
    }
  }
#pragma GCC unroll 16
  for (int g = 0; g < count; g += int(width)) xsimd::haddp(acc + g).store_aligned(sums + g);
}

// Rows [0, rows) x columns [0, cols) of a dot block's sums into c (rows ldc apart), each
// sum read through the block's slot order (slot[i * slot_ld + j]: where dot_block left the
// sum of row pair (i, j)): stored on a segment's first run, added on the later ones.
template <class T>
BNFF_ALWAYS_INLINE void store_dot_sums(T* c, index_t ldc, const T* sums, const index_t* slot, index_t slot_ld,
                                       index_t rows, index_t cols, bool first) noexcept {
  for (index_t i = 0; i < rows; ++i, c += ldc) {
    const index_t* si = slot + i * slot_ld;
    if (first)
      for (index_t j = 0; j < cols; ++j) c[j] = sums[si[j]];
    else
      for (index_t j = 0; j < cols; ++j) c[j] += sums[si[j]];
  }
}

// Weight-gradient engine; arguments assumed valid. dw: K x CRS row-major with row stride ldw.
// Prologue transforms the stored input while it is packed (the forward's prologue).
template <class T, class Arch, class Prologue>
void conv2d_backward_weights_run(const conv2d_backward_weights_plan<T, Arch>& plan, const tensor_view<const T>& x,
                                 const tensor_view<const T>& dy, T* dw, index_t ldw, const Prologue& prologue,
                                 T* workspace) {
  using plan_t = conv2d_backward_weights_plan<T, Arch>;
  constexpr index_t width = plan_t::width, mb = plan_t::mb, nb = plan_t::nb;
  const conv2d_problem& pb = plan.problem;
  const bool pointwise = pb.is_pointwise();
  const index_t per_thread = plan.per_thread_size(), rs = pb.r * pb.s, q_extent = pb.q();
  constexpr bool transforms = !std::is_same_v<Prologue, identity_prologue>;
  const identity_prologue identity{};
  T* partials = gemm::align_pointer(workspace);
  T* thread_base = workspace + plan.partials_size();
  // slot[i * nb + j]: where dot_block leaves the sum of row pair (i, j).
  static_assert(mb * nb == plan_t::slab_mb * plan_t::slab_nb, "one table of sum slots");
  index_t slot[mb * nb];
  const haddp_lanes<T, Arch>& lanes = haddp_lanes<T, Arch>::get();
  for (index_t r = 0; r < mb * nb; ++r) slot[r] = r - r % width + lanes.lane[r % width];
  gemm::task_queue queue(plan.tasks);
  parallel_region([&](int thread, int) {
    T* ap = gemm::align_pointer(thread_base + index_t(thread) * per_thread);
    T* bp = gemm::align_pointer(thread_base + index_t(thread) * per_thread + plan.packed_a_size());
    T* xt = gemm::align_pointer(thread_base + index_t(thread) * per_thread + plan.packed_a_size() +
                                plan.packed_b_size());
    const T* b_rows[plan_t::max_col_block];  // im2col rows of a column block, read in place (slab)
    if (plan.slab) std::fill(bp, bp + plan_t::slab_kc, T(0));  // the padding rows of register blocks
    for (index_t task = queue.claim(); task < plan.tasks; task = queue.claim()) {
      const index_t group = task % plan.col_groups, seg = task / plan.col_groups / plan.row_blocks;
      const index_t i0 = (task / plan.col_groups % plan.row_blocks) * plan.row_block;
      const index_range cb = split_range(plan.col_blocks, plan.col_groups, group);  // its column blocks
      const index_t j_begin = cb.begin * plan.col_block, j_end = std::min(plan.cols, cb.end * plan.col_block);
      const index_t nrows = std::min(plan.row_block, plan.rows - i0), nrows_p = gemm::round_up(nrows, mb);
      // This task's rows of dW, or of its segment's partial dW.
      T* out = plan.segments > 1 ? partials + seg * plan.rows * plan.cols + i0 * plan.cols : dw + i0 * ldw;
      const index_t ldo = plan.segments > 1 ? plan.cols : ldw;
      for (index_t ch = plan.seg_begin(seg); ch < plan.seg_end(seg); ++ch) {
        const bool first = ch == plan.seg_begin(seg);
        // The dot products of the packed dY rows with the packed im2col rows j0 .. j0 + ncols
        // (padded to whole register blocks), into the task's block of dW.
        // `ahead` prefetches what is packed next while the block computes.
        auto sweep = [&](index_t j0, index_t ncols, index_t kcp, auto& ahead) {
          const index_t ncols_p = gemm::round_up(ncols, nb);
          // A few lines before each register block: spread over the sweep, never a burst.
          const index_t per_block = gemm::ceil_div(ahead.lines(), (ncols_p / nb) * (nrows_p / mb));
          for (index_t jb = 0; jb < ncols_p; jb += nb) {
            const index_t cj = std::min(nb, ncols - jb);
            for (index_t ib = 0; ib < nrows_p; ib += mb) {
              alignas(64) T sums[mb * nb];
              ahead.issue(per_block);
              dot_block<T, Arch, int(mb), int(nb)>(ap + ib * kcp, bp + jb * kcp, kcp, kcp, sums);
              store_dot_sums(out + ib * ldo + j0 + jb, ldo, sums, slot, nb, std::min(mb, nrows - ib), cj, first);
            }
          }
        };
        // Zero past the last position and the last row: the register blocks and batches read them.
        auto zero_a_tail = [&](index_t used, index_t kcp) {
          for (index_t i = 0; i < nrows_p; ++i)
            std::fill(ap + i * kcp + (i < nrows ? used : 0), ap + (i + 1) * kcp, T(0));
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
          zero_a_tail(used, kcp);
          // The slab rows this run reads, every channel of the task's columns: padded rows t_lo .. t_hi.
          const index_t last = u1 - 1 + (width - 1) + (pb.r - 1) * wp + (pb.s - 1);
          const index_t t_lo = u0 / wp, t_hi = std::min(plan.hp - 1, last / wp);
          for (index_t c = j_begin / rs; c <= (j_end - 1) / rs; ++c) {
            T* sc = xt + c * plan.slab_plane;
            const T* xc = x.plane_ptr(n, c);
            for (index_t t = t_lo; t <= t_hi; ++t) {
              T* d = sc + t * wp;
              const index_t ih = t - pb.pad;
              if (ih < 0 || ih >= pb.h) {
                std::fill(d, d + wp, T(0));
                continue;
              }
              std::fill(d, d + pb.pad, T(0));
              prologue.template transform<Arch>(c, xc + ih * x.strides().h, d + pb.pad, pb.w);
              std::fill(d + pb.pad + pb.w, d + wp, T(0));
            }
            if (t_hi == plan.hp - 1) std::fill(sc + plan.hp * wp, sc + plan.slab_plane, T(0));
          }
          constexpr index_t smb = plan_t::slab_mb, snb = plan_t::slab_nb;
          const index_t nrows_s = gemm::round_up(nrows, smb);
          for (index_t i = nrows_p; i < nrows_s; ++i) std::fill(ap + i * kcp, ap + (i + 1) * kcp, T(0));
          for (index_t j0 = j_begin; j0 < j_end; j0 += plan.col_block) {
            const index_t ncols = std::min(plan.col_block, j_end - j0), ncols_p = gemm::round_up(ncols, snb);
            for (index_t j = 0; j < ncols_p; ++j) {
              if (j >= ncols) {
                b_rows[j] = bp;
                continue;
              }
              const index_t kk = j0 + j, c = kk / rs, r = (kk % rs) / pb.s, s = kk % pb.s;
              b_rows[j] = xt + c * plan.slab_plane + u0 + r * wp + s;
            }
            // 8 dY rows stay in L1 while the slab rows stream past them.
            for (index_t ib = 0; ib < nrows_s; ib += smb) {
              const index_t ri = std::min(smb, nrows - ib);
              for (index_t jb = 0; jb < ncols_p; jb += snb) {
                alignas(64) T sums[smb * snb];
                dot_block<T, Arch, int(smb), int(snb)>(ap + ib * kcp, b_rows + jb, kcp, kcp, sums);
                store_dot_sums(out + ib * ldo + j0 + jb, ldo, sums, slot, snb, ri, std::min(snb, ncols - jb), first);
              }
            }
          }
          continue;
        }
        const index_t g0 = ch * plan.chunk, g1 = std::min(g0 + plan.chunk, pb.n * plan.plane);
        const index_t kcp = gemm::round_up(g1 - g0, width), used = g1 - g0;
        // dY rows i0.. over this run: segments of one image each, side by side.
        for (index_t g = g0; g < g1;) {
          const index_t n = g / plan.plane, pos0 = g % plan.plane, len = std::min(g1 - g, plan.plane - pos0);
          for (index_t i = 0; i < nrows; ++i) {
            const T* src = dy.plane_ptr(n, i0 + i) + pos0;
            fusion::detail::transform_row<Arch>(src, ap + i * kcp + (g - g0), len, [](const auto& v) { return v; });
          }
          g += len;
        }
        zero_a_tail(used, kcp);
        for (index_t j0 = j_begin; j0 < j_end; j0 += plan.col_block) {
          const index_t ncols = std::min(plan.col_block, j_end - j0), ncols_p = gemm::round_up(ncols, nb);
          // im2col rows j0.. (input channels, or (c, r, s) triples, through the prologue) over this run.
          for (index_t g = g0; g < g1;) {
            const index_t n = g / plan.plane, pos0 = g % plan.plane, len = std::min(g1 - g, plan.plane - pos0);
            const index_t off = g - g0;
            if (pointwise) {
              pointwise_packer<T, Arch, Prologue> packer{x.plane_ptr(n, 0) + pos0, x.strides().c, len, prologue};
              packer.pack(j0, ncols, bp + off, kcp);
            } else if (transforms) {
              // Transform the input rows this segment's taps read (channels of the column block,
              // rows of its output rows' windows) once, then build im2col by copying.
              const index_t hw = pb.h * pb.w;
              const index_t c_lo = j0 / rs, c_hi = (j0 + ncols - 1) / rs;
              const index_t p_lo = pos0 / q_extent, p_hi = (pos0 + len - 1) / q_extent;
              const index_t ih_lo = std::max<index_t>(0, p_lo * pb.stride - pb.pad);
              const index_t ih_hi = std::min<index_t>(pb.h - 1, p_hi * pb.stride - pb.pad + pb.r - 1);
              for (index_t c = c_lo; c <= c_hi; ++c)
                for (index_t ih = ih_lo; ih <= ih_hi; ++ih)
                  prologue.template transform<Arch>(c, x.plane_ptr(n, c) + ih * x.strides().h,
                                                    xt + c * hw + ih * pb.w, pb.w);
              im2col_packer<T, Arch, identity_prologue> packer{xt, hw, pb.w, pb, pos0, len, identity};
              packer.pack(j0, ncols, bp + off, kcp);
            } else {
              im2col_packer<T, Arch, Prologue> packer{x.plane_ptr(n, 0), x.strides().c, x.strides().h, pb, pos0, len,
                                                      prologue};
              packer.pack(j0, ncols, bp + off, kcp);
            }
            g += len;
          }
          for (index_t j = 0; j < ncols_p; ++j)
            std::fill(bp + j * kcp + (j < ncols ? used : 0), bp + (j + 1) * kcp, T(0));
          if (pointwise) {
            // 1x1: the rows packed next are plain runs of dY and x; prefetch them (the first
            // image's part of a run) while this block computes, as the forward engine does.
            auto x_rows = [&](index_t g, index_t c0, index_t count) {
              const index_t n = g / plan.plane, pos0 = g % plan.plane;
              const index_t len = std::min(plan.chunk, plan.plane - pos0);
              return gemm::lookahead(x.plane_ptr(n, c0) + pos0, x.strides().c, len, count);
            };
            gemm::lookahead_pair ahead;
            if (j0 + plan.col_block < j_end) {
              ahead.first = x_rows(g0, j0 + plan.col_block, std::min(plan.col_block, j_end - j0 - plan.col_block));
            } else if (ch + 1 < plan.seg_end(seg)) {
              const index_t g = g1, n = g / plan.plane, pos0 = g % plan.plane;
              ahead.first = gemm::lookahead(dy.plane_ptr(n, i0) + pos0, dy.strides().c,
                                            std::min(plan.chunk, plan.plane - pos0), nrows);
              ahead.second = x_rows(g, j_begin, std::min(plan.col_block, j_end - j_begin));
            }
            sweep(j0, ncols, kcp, ahead);
          } else {
            gemm::lookahead none;  // no lines
            sweep(j0, ncols, kcp, none);
          }
        }
      }
    }
  });
  if (plan.segments > 1) {
    // dW = partial 0 + partial 1 + ..., in segment order, one task per output channel.
    parallel_for(plan.rows, [&](index_t k) {
      T* d = dw + k * ldw;
      const T* p = partials + k * plan.cols;
      std::copy(p, p + plan.cols, d);
      for (index_t s = 1; s < plan.segments; ++s) {
        const T* q = p + s * plan.rows * plan.cols;
        for (index_t j = 0; j < plan.cols; ++j) d[j] += q[j];
      }
    });
  }
}

}  // namespace detail
}  // namespace bnff
