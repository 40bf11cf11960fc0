// bnff baseline: the batch-norm backward reductions as a sweep over x and a
// stored dy (the ReLU-backward pass already applied the mask).
#pragma once

#include <xsimd/xsimd.hpp>

#include <array>

#include "bnff/config.hpp"
#include "bnff/fusion/bn_relu_backward_epilogue.hpp"
#include "bnff/ops/bn_checks.hpp"
#include "bnff/ops/bn_tasks.hpp"
#include "bnff/simd/fma.hpp"
#include "bnff/simd/sum_lanes.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff::detail {

template <class T>
void unfused_batch_norm_backward_reduce_check(tensor_view<const bnff::detail::nondeduced_t<T>> x,
                                              tensor_view<const bnff::detail::nondeduced_t<T>> dy,
                                              vector_view<const bnff::detail::nondeduced_t<T>> mean,
                                              vector_view<const bnff::detail::nondeduced_t<T>> invstd,
                                              vector_view<T> sum_dy, vector_view<T> sum_dy_xhat) {
  constexpr const char* where = "unfused::batch_norm_backward_reduce";
  bnff::detail::check_planes(where, "x", x);
  bnff::detail::check_like(where, "dy", dy, x.shape());
  bnff::detail::check_channels(where, "mean", mean, x.c());
  bnff::detail::check_channels(where, "invstd", invstd, x.c());
  bnff::detail::check_channels(where, "sum_dy", sum_dy, x.c());
  bnff::detail::check_channels(where, "sum_dy_xhat", sum_dy_xhat, x.c());
  const char* out_names[2] = {"sum_dy", "sum_dy_xhat"};
  const vector_view<T> outs[2] = {sum_dy, sum_dy_xhat};
  for (int i = 0; i < 2; ++i) {
    bnff::detail::check_disjoint(where, out_names[i], outs[i], "x", x);
    bnff::detail::check_disjoint(where, out_names[i], outs[i], "dy", dy);
    bnff::detail::check_disjoint(where, out_names[i], outs[i], "mean", mean);
    bnff::detail::check_disjoint(where, out_names[i], outs[i], "invstd", invstd);
  }
  bnff::detail::check_disjoint(where, "sum_dy_xhat", sum_dy_xhat, "sum_dy", sum_dy);
}

template <class Arch, class T>
void unfused_batch_norm_backward_reduce_run(tensor_view<const bnff::detail::nondeduced_t<T>> x,
                                            tensor_view<const bnff::detail::nondeduced_t<T>> dy,
                                            vector_view<const bnff::detail::nondeduced_t<T>> mean,
                                            vector_view<const bnff::detail::nondeduced_t<T>> invstd,
                                            vector_view<T> sum_dy, vector_view<T> sum_dy_xhat) {
  using batch = xsimd::batch<T, Arch>;
  reduce_channel_groups<2>(
      x,
      [&](index_t n, index_t c, std::array<double, 2>& sums) {
        const T mean_c = mean[c];
        const batch vmean(mean_c);
        const T* xp = x.plane_ptr(n, c);
        const T* dyp = dy.plane_ptr(n, c);
        simd::sum_lanes<2, T, Arch>(x.plane(), sums, [&](auto lanes, auto& acc) {
          const batch d = lanes.load(dyp, T(0));
          acc[0] += d;
          acc[1] = simd::fma(d, lanes.load(xp, mean_c) - vmean, acc[1]);
        });
      },
      [&](index_t c, const std::array<double, 2>& sums) {
        sum_dy[c] = T(sums[0]);
        sum_dy_xhat[c] = T(sums[1] * double(invstd[c]));
      });
}

// The same sums block by block: each (n, c) plane cut into blocks of `block` elements,
// each block's (sum dy, sum dy * (x - mean)) as bn_backward_block_sums, added in
// (n, b) order in double from zero (merge_bn_backward_channel's order).
template <class Arch, class T>
void unfused_batch_norm_backward_reduce_blocks_run(tensor_view<const bnff::detail::nondeduced_t<T>> x,
                                                   tensor_view<const bnff::detail::nondeduced_t<T>> dy,
                                                   vector_view<const bnff::detail::nondeduced_t<T>> mean,
                                                   vector_view<const bnff::detail::nondeduced_t<T>> invstd,
                                                   index_t block, vector_view<T> sum_dy, vector_view<T> sum_dy_xhat) {
  const index_t plane = x.plane();
  bnff::detail::for_each_channel_group(x.c(), sweep_group_channels(x), [&](index_t c0, index_t c1) {
    bn_backward_partial acc[sweep_group_max];
    for (index_t n = 0; n < x.n(); ++n)
      for (index_t c = c0; c < c1; ++c)
        for (index_t b0 = 0; b0 < plane; b0 += block) {
          const index_t b1 = b0 + block < plane ? b0 + block : plane;
          const bn_backward_partial p =
              bn_backward_block_sums<T, Arch>(dy.plane_ptr(n, c) + b0, x.plane_ptr(n, c) + b0, b1 - b0, mean[c]);
          acc[c - c0].sum_dy += p.sum_dy;
          acc[c - c0].sum_dy_xc += p.sum_dy_xc;
        }
    for (index_t c = c0; c < c1; ++c) {
      sum_dy[c] = T(acc[c - c0].sum_dy);
      sum_dy_xhat[c] = T(acc[c - c0].sum_dy_xc * double(invstd[c]));
    }
  });
}

}  // namespace bnff::detail

namespace bnff::unfused {

// sum_dy[c] = sum(dy[:, c]),  sum_dy_xhat[c] = sum(dy * (x - mean[c])) * invstd[c]
// (dbeta and dgamma), in double per channel.
template <class Arch = xsimd::default_arch, class T>
void batch_norm_backward_reduce(tensor_view<const bnff::detail::nondeduced_t<T>> x,
                                tensor_view<const bnff::detail::nondeduced_t<T>> dy,
                                vector_view<const bnff::detail::nondeduced_t<T>> mean,
                                vector_view<const bnff::detail::nondeduced_t<T>> invstd, vector_view<T> sum_dy,
                                vector_view<T> sum_dy_xhat) {
  bnff::detail::unfused_batch_norm_backward_reduce_check<T>(x, dy, mean, invstd, sum_dy, sum_dy_xhat);
  bnff::detail::unfused_batch_norm_backward_reduce_run<Arch, T>(x, dy, mean, invstd, sum_dy, sum_dy_xhat);
}

// The same sums with the blocks and order of the fused backward's epilogue
// (bn_relu_backward_epilogue over a partition of `block` elements per block):
// for the same x and dy, sum_dy and sum_dy_xhat are bitwise those of
// conv2d_backward_data_bn_relu merged by bn_backward_finalize.
template <class Arch = xsimd::default_arch, class T>
void batch_norm_backward_reduce_blocks(tensor_view<const bnff::detail::nondeduced_t<T>> x,
                                       tensor_view<const bnff::detail::nondeduced_t<T>> dy,
                                       vector_view<const bnff::detail::nondeduced_t<T>> mean,
                                       vector_view<const bnff::detail::nondeduced_t<T>> invstd, index_t block,
                                       vector_view<T> sum_dy, vector_view<T> sum_dy_xhat) {
  bnff::detail::unfused_batch_norm_backward_reduce_check<T>(x, dy, mean, invstd, sum_dy, sum_dy_xhat);
  check_arg(block > 0, "unfused::batch_norm_backward_reduce_blocks", "block", "> 0", block);
  bnff::detail::unfused_batch_norm_backward_reduce_blocks_run<Arch, T>(x, dy, mean, invstd, block, sum_dy, sum_dy_xhat);
}

}  // namespace bnff::unfused
