// bnff: the convolution engine. Packs weights once, then for every (image, column
// tile) task packs input blocks through a prologue, runs the blocked GEMM and hands
// each finished output block to an epilogue while it is in cache.
//
//   Y_n[K x PQ] = W[K x CRS] * B_n[CRS x PQ],  B_n = im2col(prologue(X_n))
//
// 1x1 stride-1 convolutions read B_n straight from the input planes (no im2col);
// other shapes build each block of B_n from the input rows it covers. Small planes
// (7 x 7, 14 x 14) put several images side by side in one task's columns. Tasks are
// fixed by the problem size; threads only claim which task to run next, so outputs
// and epilogue results are identical for any thread count.
#pragma once

#include <algorithm>
#include <type_traits>
#include <utility>
#include <xsimd/xsimd.hpp>

#include "bnff/config.hpp"
#include "bnff/conv/conv2d_problem.hpp"
#include "bnff/conv/padded_planes.hpp"
#include "bnff/conv/padded_slab.hpp"
#include "bnff/conv/winograd.hpp"
#include "bnff/fusion/output_tile.hpp"
#include "bnff/gemm/block_gemm.hpp"
#include "bnff/gemm/task_queue.hpp"
#include "bnff/parallel/parallel.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff {

// How the engine cuts a forward problem; every size is a function of the problem alone.
template <class T, class Arch = xsimd::default_arch>
struct conv2d_plan {
  using blk = gemm::blocking<T, Arch>;
  conv2d_problem problem{};
  index_t kdim = 0;   // C * R * S, the GEMM depth
  index_t plane = 0;  // P * Q
  index_t tile = 0;   // output columns per task: a multiple of nr, at most about nc_max
  index_t tiles = 0;  // column tiles per image
  index_t tasks = 0;  // images * tiles, or image groups
  // Small planes (14 x 14, 7 x 7): a task computes `group` images side by side, group *
  // plane columns of B built as for each image alone (a 7 x 7 plane alone would fill 49
  // of the 96 columns its register tiles compute, and the in-place path's padded grid
  // fewer still); its output goes to a scratch tile and then to each image.
  index_t group = 1;
  index_t group_ld = 0;  // row stride of the scratch tile (a multiple of nr)
  // Stride 1, not pointwise: B is read in place from a padded slab of input rows (padded_slab.hpp).
  bool in_place = false;
  index_t slab_ld = 0;  // slab elements per input channel
  index_t grid_ld = 0;  // row stride of a task's output on the padded grid (a multiple of nr)
  // 3x3 stride 1 on planes of more than detail::winograd_min_plane positions: F(4x4, 3x3),
  // in groups of images (winograd.hpp); `tile` still cuts the output for the epilogue.
  bool winograd = false;
  detail::winograd_layout<T, Arch> wg;

  explicit conv2d_plan(const conv2d_problem& pb) : problem(pb), wg(pb) {
    kdim = pb.c * pb.r * pb.s;
    plane = pb.p() * pb.q();
    // Balanced tiles of at most about nc_max columns, rounded up to whole register tiles.
    const index_t parts = gemm::ceil_div(plane, blk::nc_max);
    tile = gemm::round_up(gemm::ceil_div(plane, parts), blk::nr);
    tiles = gemm::ceil_div(plane, tile);
    tasks = pb.n * tiles;
    // Stride 1, not pointwise, reads B in place on a padded grid instead, without packing:
    // worth giving up only where that grid wastes a third of its columns or more
    // (7 x 7: 49 of 96; 14 x 14 with pad 1: 196 of 240, which stays in place).
    const bool grid_path = pb.stride == 1 && !pb.is_pointwise();
    const bool grid_wastes = 3 * plane < 2 * gemm::round_up(pb.p() * (pb.w + 2 * pb.pad), blk::nr);
    if (pb.n > 1 && 2 * plane <= blk::nc_max && (!grid_path || grid_wastes)) {
      // As many images as fit in about nc_max columns, balanced over the groups.
      const index_t groups = gemm::ceil_div(pb.n, blk::nc_max / plane);
      group = gemm::ceil_div(pb.n, groups);
      tasks = gemm::ceil_div(pb.n, group);
      group_ld = gemm::round_up(group * plane, blk::nr);
    }
    winograd = detail::winograd_eligible(pb) && group == 1;
    if (winograd) tasks = wg.tasks;
    in_place = pb.stride == 1 && !pb.is_pointwise() && group == 1 && !winograd;
    if (in_place)
      for (index_t t = 0; t < tiles; ++t) {
        const detail::slab_span sp(pb, t * tile, std::min(tile, plane - t * tile));
        slab_ld = std::max(slab_ld, gemm::round_up(sp.reach(pb, blk::nr), index_t(blk::alignment / sizeof(T))));
        grid_ld = std::max(grid_ld, gemm::round_up(sp.grid_cols, blk::nr));
      }
  }

  index_t packed_a_size() const noexcept {
    if (winograd) return wg.weights_size();
    return gemm::aligned_extent<T>(gemm::packed_a_size<T, Arch>(problem.k, kdim));
  }
  index_t packed_b_size() const noexcept {
    return gemm::aligned_extent<T>(gemm::packed_b_size<T, Arch>(kdim, group > 1 ? group_ld : tile));
  }
  // Per-thread scratch: a packed B block (and, with image groups, the output tile), or
  // (in place) the input slab and the output grid tile.
  index_t thread_scratch_size() const noexcept {
    if (winograd) return wg.scratch_size(problem);
    if (group > 1) return packed_b_size() + gemm::aligned_extent<T>(problem.k * group_ld) + padded_size();
    if (!in_place) return packed_b_size();
    return gemm::aligned_extent<T>(problem.c * slab_ld) + gemm::aligned_extent<T>(problem.k * grid_ld);
  }
  // With image groups, not pointwise: the padded planes of one depth block (padded_planes.hpp).
  index_t padded_size() const noexcept {
    if (group == 1 || problem.is_pointwise()) return 0;
    return gemm::aligned_extent<T>(detail::padded_group_scratch_size(problem, group, gemm::blocking<T, Arch>::kc));
  }
  // Workspace elements for `threads` threads: packed weights plus one scratch per thread.
  index_t workspace_size(int threads) const noexcept {
    return packed_a_size() + index_t(threads) * thread_scratch_size();
  }
};

namespace detail {

// Rows of B are input channels; a block is a copy (through the prologue) of runs of input planes.
template <class T, class Arch, class Prologue>
struct pointwise_packer {
  const T* x;   // image n, channel 0, column col0
  index_t ldx;  // channel stride
  index_t cols;
  const Prologue& prologue;

  void pack(index_t k0, index_t kcount, T* bp, index_t ldb) const {
    constexpr index_t ahead = 8;  // rows prefetched ahead: short runs defeat the hardware prefetcher
    for (index_t k = 0; k < kcount; ++k) {
      const index_t c = k0 + k;
      if (k + ahead < kcount) {
        const char* p = reinterpret_cast<const char*>(x + (c + ahead) * ldx);
        for (index_t b = 0; b < index_t(cols * sizeof(T)); b += 64) __builtin_prefetch(p + b, 0, 3);
      }
      prologue.template transform<Arch>(c, x + c * ldx, bp + k * ldb, cols);
    }
  }

  // The lines pack(k0, kcount) reads.
  gemm::lookahead lookahead(index_t k0, index_t kcount) const noexcept {
    return gemm::lookahead(x + k0 * ldx, ldx, cols, kcount);
  }
};

// Rows of B are (c, r, s) triples; column j is output position col0 + j. Each row is
// built output row by output row: zeros where the filter tap falls in the padding,
// the prologue's transform of the input row elsewhere (a contiguous run at stride 1).
template <class T, class Arch, class Prologue>
struct im2col_packer {
  const T* x;        // image n, channel 0
  index_t ldx, ldh;  // channel and row strides of the input
  const conv2d_problem& pb;
  index_t col0, cols;
  const Prologue& prologue;

  void pack(index_t k0, index_t kcount, T* bp, index_t ldb) const {
    const index_t q_extent = pb.q(), rs = pb.r * pb.s;
    const bool same_width = pb.stride == 1 && q_extent == pb.w && ldh == pb.w;
    for (index_t k = 0; k < kcount; ++k) {
      const index_t kk = k0 + k, c = kk / rs, r = (kk % rs) / pb.s, s = kk % pb.s;
      const T* xc = x + c * ldx;
      T* dst = bp + k * ldb;
      if (same_width) {
        pack_shifted(c, r, s, xc, dst);
        continue;
      }
      index_t j = 0;
      while (j < cols) {
        const index_t pos = col0 + j, p = pos / q_extent, q0 = pos % q_extent;
        const index_t run = std::min(cols - j, q_extent - q0);  // columns left in this output row
        T* d = dst + j;
        const index_t ih = p * pb.stride - pb.pad + r;
        if (ih < 0 || ih >= pb.h) {
          std::fill(d, d + run, T(0));
        } else {
          // Output columns q in [q0, q0 + run) read iw = q * stride - pad + s; valid where 0 <= iw < w.
          const index_t off = s - pb.pad;
          index_t qlo = off >= 0 ? 0 : (-off + pb.stride - 1) / pb.stride;
          index_t qhi = (pb.w - 1 - off) >= 0 ? (pb.w - 1 - off) / pb.stride + 1 : 0;
          qlo = std::clamp(qlo, q0, q0 + run);
          qhi = std::clamp(qhi, qlo, q0 + run);
          std::fill(d, d + (qlo - q0), T(0));
          const T* row = xc + ih * ldh;
          if (pb.stride == 1) {
            prologue.template transform<Arch>(c, row + qlo + off, d + (qlo - q0), qhi - qlo);
          } else {
            for (index_t q = qlo; q < qhi; ++q) d[q - q0] = prologue(c, row[q * pb.stride + off]);
          }
          std::fill(d + (qhi - q0), d + run, T(0));
        }
        j += run;
      }
    }
  }

  // Stride 1 with Q == W (e.g. 3x3 pad 1): output position pos reads input element
  // pos + (r - pad) * W + (s - pad) of the flat plane, so a whole row of B is one shifted
  // run through the prologue; then the taps that fell off the left or right edge of an
  // input row (wrapped into a neighbour row) are overwritten with zeros.
  void pack_shifted(index_t c, index_t r, index_t s, const T* xc, T* dst) const {
    const index_t w = pb.w, hw = pb.h * w, dr = (r - pb.pad) * w, ds = s - pb.pad, shift = dr + ds;
    // Valid rows: 0 <= col0 + j + dr < hw; readable elements: 0 <= col0 + j + shift < hw.
    const index_t lo = std::clamp<index_t>(std::max(-dr, -shift) - col0, 0, cols);
    const index_t hi = std::clamp<index_t>(std::min(hw - dr, hw - shift) - col0, lo, cols);
    std::fill(dst, dst + lo, T(0));
    prologue.template transform<Arch>(c, xc + col0 + lo + shift, dst + lo, hi - lo);
    std::fill(dst + hi, dst + cols, T(0));
    if (ds == 0) return;
    // Columns q < -ds (ds < 0) or q >= w - ds (ds > 0) of every output row are padding.
    const index_t first = ds < 0 ? 0 : w - ds, count = ds < 0 ? -ds : ds;
    index_t j = first - col0 % w;  // start of the current output row's run, relative to the tile
    if (j + count <= 0) j += w;    // that run ends before the tile: start with the next row's
    for (; j < cols; j += w) std::fill(dst + std::max<index_t>(j, 0), dst + std::min(j + count, cols), T(0));
  }
};

// Several images side by side (1x1): columns [i * plane, (i + 1) * plane) of B are image
// n0 + i's, as the pointwise packer builds them for that image alone. Other kernels use
// padded_group_packer (padded_planes.hpp).
template <class T, class Arch, class Prologue>
struct pointwise_group_packer {
  const tensor_view<const T>& x;
  index_t n0, images, plane;
  const Prologue& prologue;

  void pack(index_t k0, index_t kcount, T* bp, index_t ldb) const {
    for (index_t i = 0; i < images; ++i) {
      const pointwise_packer<T, Arch, Prologue> one{x.plane_ptr(n0 + i, 0), x.strides().c, plane, prologue};
      one.pack(k0, kcount, bp + i * plane, ldb);
    }
  }
};

// An epilogue that reads memory besides its tile (the backward's ReLU mask reads the
// saved BN input) names it: epilogue.side_input(n, k0, rows, col0, cols) gives the lines
// it will read for that tile, and the engine prefetches them while the tile computes.
template <class E, class = void>
struct has_side_input : std::false_type {};
template <class E>
struct has_side_input<E, std::void_t<decltype(std::declval<const E&>().side_input(index_t{}, index_t{}, index_t{},
                                                                                 index_t{}, index_t{}))>>
    : std::true_type {};

// The engine itself; arguments are assumed valid (the public operations check them).
// Epilogue receives every output_tile<T> once, from the task that owns it.
template <class T, class Arch, class Prologue, class Epilogue>
void conv2d_forward_run(const conv2d_plan<T, Arch>& plan, const tensor_view<const T>& x, const tensor_view<const T>& w,
                        const tensor_view<T>& y, const Prologue& prologue, const Epilogue& epilogue, T* workspace) {
  using blk = gemm::blocking<T, Arch>;
  const conv2d_problem& pb = plan.problem;
  const index_t kdim = plan.kdim, rs = pb.r * pb.s;
  T* ap = gemm::align_pointer(workspace);
  if (plan.winograd) {
    winograd_pack_weights<T, Arch>(pb, w, plan.wg.packed_u, ap);
    T* scratch0 = workspace + plan.packed_a_size();
    gemm::shared_task_queue queue(plan.tasks, max_threads());
    parallel_region([&](int thread, int) {
      T* scratch = scratch0 + index_t(thread) * plan.thread_scratch_size();
      for (index_t t = queue.claim(thread); t < plan.tasks; t = queue.claim(thread)) {
        const index_t n0 = t * plan.wg.group;
        winograd_task<T, Arch>(pb, plan.wg, ap, x, y, n0, std::min(plan.wg.group, pb.n - n0), prologue, epilogue,
                               plan.tile, scratch);
      }
    });
    return;
  }
  if (w.contiguous())  // the usual case: A is W as a K x CRS row-major matrix
    gemm::pack_a_rows<T, Arch>(pb.k, kdim, w.data(), kdim, ap);
  else
    gemm::pack_a<T, Arch>(
        pb.k, kdim, [&](index_t k, index_t kk) { return w(k, kk / rs, (kk % rs) / pb.s, kk % pb.s); }, ap);
  const bool pointwise = pb.is_pointwise();
  T* b_base = workspace + plan.packed_a_size();
  gemm::shared_task_queue queue(plan.tasks, max_threads());
  parallel_region([&](int thread, int) {
    T* scratch = b_base + index_t(thread) * plan.thread_scratch_size();
    T* bp = gemm::align_pointer(scratch);
    const T* b_rows[blk::kc];  // B's rows for one depth block, when read in place
    for (index_t task = queue.claim(thread); task < plan.tasks; task = queue.claim(thread)) {
      if (plan.group > 1) {
        // Images n0 .. n0 + images - 1 into the scratch tile, then each image's rows to y,
        // and the epilogue sees one tile per image (the whole plane), as without groups.
        const index_t n0 = task * plan.group, images = std::min(plan.group, pb.n - n0);
        T* tile = gemm::align_pointer(scratch + plan.packed_b_size());
        const index_t ldy = y.strides().c;
        auto finish = [&](index_t row0, index_t rows) {
          for (index_t i = 0; i < images; ++i) {
            T* yi = y.plane_ptr(n0 + i, 0);
            // Inline copies: a row is one plane (49 or 196 elements), too short for a library call.
            for (index_t r = row0; r < row0 + rows; ++r)
              copy_run<Arch>(tile + r * plan.group_ld + i * plan.plane, yi + r * ldy, plan.plane);
            epilogue(output_tile<T>{yi + row0 * ldy, ldy, n0 + i, row0, rows, 0, plan.plane});
          }
        };
        if (pointwise) {
          pointwise_group_packer<T, Arch, Prologue> packer{x, n0, images, plan.plane, prologue};
          gemm::gemm_tile<T, Arch>(pb.k, kdim, ap, packer, bp, tile, plan.group_ld, images * plan.plane, finish);
        } else {
          T* padded =
              gemm::align_pointer(scratch + plan.packed_b_size() + gemm::aligned_extent<T>(pb.k * plan.group_ld));
          padded_group_packer<T, Arch, Prologue> packer{x, pb, n0, images, plan.plane, prologue, padded};
          gemm::gemm_tile<T, Arch>(pb.k, kdim, ap, packer, bp, tile, plan.group_ld, images * plan.plane, finish);
        }
        continue;
      }
      const index_t n = task / plan.tiles, col0 = (task % plan.tiles) * plan.tile;
      const index_t cols = std::min(plan.tile, plan.plane - col0);
      T* c = y.plane_ptr(n, 0) + col0;
      const index_t ldc = y.strides().c;
      auto finish = [&](index_t row0, index_t rows) {
        epilogue(output_tile<T>{c + row0 * ldc, ldc, n, row0, rows, col0, cols});
      };
      if (pointwise) {
        pointwise_packer<T, Arch, Prologue> packer{x.plane_ptr(n, 0) + col0, x.strides().c, cols, prologue};
        // The next task of this thread's share is most likely task + 1: its first block
        // is prefetched while this one computes (a wrong guess costs only bandwidth).
        gemm::lookahead next;
        if (task + 1 < plan.tasks) {
          const index_t n1 = (task + 1) / plan.tiles, c1 = ((task + 1) % plan.tiles) * plan.tile;
          next = gemm::lookahead(x.plane_ptr(n1, 0) + c1, x.strides().c, std::min(plan.tile, plan.plane - c1),
                                 std::min<index_t>(blk::kc, kdim));
        }
        if constexpr (has_side_input<Epilogue>::value) {
          const gemm::lookahead_chain side_then_next(epilogue.side_input(n, 0, pb.k, col0, cols), next);
          gemm::gemm_tile<T, Arch>(pb.k, kdim, ap, packer, bp, c, ldc, cols, finish, side_then_next);
        } else {
          gemm::gemm_tile<T, Arch>(pb.k, kdim, ap, packer, bp, c, ldc, cols, finish, next);
        }
      } else if (plan.in_place) {
        const slab_span sp(pb, col0, cols);
        T* slab = bp;
        T* grid = gemm::align_pointer(scratch + gemm::aligned_extent<T>(pb.c * plan.slab_ld));
        build_slab<Arch>(pb, sp, x.plane_ptr(n, 0), x.strides().c, x.strides().h, prologue, slab, plan.slab_ld);
        const index_t wp = pb.w + 2 * pb.pad;
        auto rows_for = [&](index_t k0, index_t kcount) {
          for (index_t k = 0; k < kcount; ++k) {
            const index_t kk = k0 + k, ch = kk / rs, r = (kk % rs) / pb.s, s = kk % pb.s;
            b_rows[k] = slab + ch * plan.slab_ld + r * wp + s + sp.q_lo;
          }
          return static_cast<const T* const*>(b_rows);
        };
        auto finish_grid = [&](index_t row0, index_t nrows) {
          copy_out<Arch>(pb, sp, grid + row0 * plan.grid_ld, plan.grid_ld, c + row0 * ldc, ldc, nrows);
          finish(row0, nrows);
        };
        if constexpr (has_side_input<Epilogue>::value)
          gemm::gemm_tile_rows<T, Arch>(pb.k, kdim, ap, rows_for, grid, plan.grid_ld, sp.grid_cols, finish_grid,
                                        epilogue.side_input(n, 0, pb.k, col0, cols));
        else
          gemm::gemm_tile_rows<T, Arch>(pb.k, kdim, ap, rows_for, grid, plan.grid_ld, sp.grid_cols, finish_grid);
      } else {
        im2col_packer<T, Arch, Prologue> packer{x.plane_ptr(n, 0), x.strides().c, x.strides().h, pb, col0, cols,
                                                prologue};
        gemm::gemm_tile<T, Arch>(pb.k, kdim, ap, packer, bp, c, ldc, cols, finish);
      }
    }
  });
}

}  // namespace detail
}  // namespace bnff
