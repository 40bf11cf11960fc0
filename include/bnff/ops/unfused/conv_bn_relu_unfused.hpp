// bnff: the unfused forward a conventional framework runs (one sweep per step:
// conv, statistics, BN apply, ReLU), each pass with the same SIMD, threads and
// convolution engine as the fused operations. The baseline of the benchmarks.
#pragma once

#include <xsimd/xsimd.hpp>

#include "bnff/fusion/detail/transform_row.hpp"
#include "bnff/ops/conv2d_forward_stats.hpp"
#include "bnff/stats/block_moments.hpp"

namespace bnff::unfused {

// Statistics pass: partials[part.slot(c, n, b)] = block_moments(block b of y[n, c]).
template <class T>
void channel_stats(tensor_view<const T> y, const stats_partition& part, vector_view<moments> partials) {
  constexpr const char* where = "unfused::channel_stats";
  check_arg(y.plane_contiguous(), where, "y", "contiguous H x W planes", y.strides());
  check_arg(part.images == y.n() && part.channels == y.c() && part.plane == y.plane() && part.block > 0, where,
            "partition", detail::concat("images ", y.n(), ", channels ", y.c(), ", plane ", y.plane()),
            detail::concat("images ", part.images, ", channels ", part.channels, ", plane ", part.plane));
  check_arg(partials.size() >= part.size(), where, "partials", detail::concat(">= ", part.size()), partials.size());
  const index_t blocks = part.blocks_per_plane();
  parallel_for(y.c() * y.n(), [&](index_t task) {
    const index_t c = task / y.n(), n = task % y.n();
    const T* plane = y.plane_ptr(n, c);
    for (index_t b = 0; b < blocks; ++b)
      partials[part.slot(c, n, b)] =
          block_moments(plane + part.block_begin(b), part.block_end(b) - part.block_begin(b));
  });
}

// BN apply pass: z = x * scale[c] + shift[c] (z may be x).
template <class T, class Arch = xsimd::default_arch>
void bn_apply(tensor_view<const T> x, vector_view<const T> scale, vector_view<const T> shift, tensor_view<T> z) {
  constexpr const char* where = "unfused::bn_apply";
  check_arg(x.plane_contiguous(), where, "x", "contiguous H x W planes", x.strides());
  check_equal(where, "z", x.shape(), z.shape());
  check_arg(z.plane_contiguous(), where, "z", "contiguous H x W planes", z.strides());
  check_arg(scale.size() == x.c(), where, "scale", detail::concat("size ", x.c()), scale.size());
  check_arg(shift.size() == x.c(), where, "shift", detail::concat("size ", x.c()), shift.size());
  parallel_for(x.n() * x.c(), [&](index_t task) {
    const index_t n = task / x.c(), c = task % x.c();
    const T sc = scale[c], sh = shift[c];
    const xsimd::batch<T, Arch> vsc(sc), vsh(sh);
    fusion::detail::transform_row<Arch>(x.plane_ptr(n, c), z.plane_ptr(n, c), x.plane(), [&](const auto& v) {
      if constexpr (std::is_same_v<std::decay_t<decltype(v)>, T>)
        return T(std::fma(v, sc, sh));
      else
        return xsimd::fma(v, vsc, vsh);
    });
  });
}

// ReLU pass: a = max(0, z) (a may be z).
template <class T, class Arch = xsimd::default_arch>
void relu(tensor_view<const T> z, tensor_view<T> a) {
  constexpr const char* where = "unfused::relu";
  check_arg(z.plane_contiguous(), where, "z", "contiguous H x W planes", z.strides());
  check_equal(where, "a", z.shape(), a.shape());
  check_arg(a.plane_contiguous(), where, "a", "contiguous H x W planes", a.strides());
  parallel_for(z.n() * z.c(), [&](index_t task) {
    const index_t n = task / z.c(), c = task % z.c();
    const xsimd::batch<T, Arch> zero(T(0));
    fusion::detail::transform_row<Arch>(z.plane_ptr(n, c), a.plane_ptr(n, c), z.plane(), [&](const auto& v) {
      if constexpr (std::is_same_v<std::decay_t<decltype(v)>, T>)
        return v > T(0) ? v : T(0);
      else
        return xsimd::select(v > zero, v, zero);
    });
  });
}

// conv, then a statistics pass over y.
template <class T, class Arch = xsimd::default_arch>
void conv2d_forward_stats(const conv2d_problem& problem, tensor_view<const T> x, tensor_view<const T> w,
                          tensor_view<T> y, vector_view<moments> partials, vector_view<T> workspace) {
  conv2d_forward<T, Arch>(problem, x, w, vector_view<const T>{}, y, workspace);
  channel_stats<T>(y, conv2d_stats_partition<T, Arch>(problem), partials);
}

// BN apply pass (x -> z), ReLU pass (z -> a, in place), conv (a -> y), statistics pass over y.
// z: a tensor shaped like x, the stored normalized and activated input a fused run never writes.
template <class T, class Arch = xsimd::default_arch>
void bn_relu_conv2d_forward_stats(const conv2d_problem& problem, tensor_view<const T> x, vector_view<const T> scale,
                                  vector_view<const T> shift, tensor_view<const T> w, tensor_view<T> y,
                                  vector_view<moments> partials, tensor_view<T> z, vector_view<T> workspace) {
  bn_apply<T, Arch>(x, scale, shift, z);
  relu<T, Arch>(z, z);
  unfused::conv2d_forward_stats<T, Arch>(problem, tensor_view<const T>(z), w, y, partials, workspace);
}

}  // namespace bnff::unfused
