// bnff baseline: ReLU backward as its own sweep, writing dy for the
// batch-norm backward sweeps that follow.
#pragma once

#include <xsimd/xsimd.hpp>

#include "bnff/config.hpp"
#include "bnff/ops/bn_activation.hpp"
#include "bnff/ops/bn_checks.hpp"
#include "bnff/ops/bn_tasks.hpp"
#include "bnff/simd/store_policy.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff::detail {

template <class T>
void unfused_relu_backward_check(tensor_view<const bnff::detail::nondeduced_t<T>> y,
                                 tensor_view<const bnff::detail::nondeduced_t<T>> dz, tensor_view<T> dy) {
  constexpr const char* where = "unfused::relu_backward";
  bnff::detail::check_planes(where, "y", y);
  bnff::detail::check_like(where, "dz", dz, y.shape());
  bnff::detail::check_like(where, "dy", dy, y.shape());
  bnff::detail::check_disjoint(where, "dy", dy, "y", y);
  bnff::detail::check_in_place_or_disjoint(where, "dy", dy, "dz", dz);
}

template <class Arch, class T>
void unfused_relu_backward_run(tensor_view<const bnff::detail::nondeduced_t<T>> y,
                               tensor_view<const bnff::detail::nondeduced_t<T>> dz, tensor_view<T> dy) {
  bnff::detail::with_store_policy<T>(dy.size(), dy.data() == dz.data(), [&](auto store) {
    using Store = decltype(store);
    bnff::detail::for_each_plane(
        y.n(), y.c(), y.plane(),
        [&](index_t n, index_t c) {
          const T* yp = y.plane_ptr(n, c);
          const T* dzp = dz.plane_ptr(n, c);
          T* dyp = dy.plane_ptr(n, c);
          Store::template for_each<T, Arch>(y.plane(), dyp, [&](auto lanes, auto) {
            lanes.store(dyp, bn_relu::backward(lanes.load(yp), lanes.load(dzp)));
          });
        },
        [] { Store::finish(); });
  });
}

}  // namespace bnff::detail

namespace bnff::unfused {

// dy = dz * [y > 0], with y the stored batch-norm output (the ReLU input).
// dy may be exactly dz (in place), and must not overlap y.
template <class Arch = xsimd::default_arch, class T>
void relu_backward(tensor_view<const bnff::detail::nondeduced_t<T>> y,
                   tensor_view<const bnff::detail::nondeduced_t<T>> dz, tensor_view<T> dy) {
  bnff::detail::unfused_relu_backward_check<T>(y, dz, dy);
  bnff::detail::unfused_relu_backward_run<Arch, T>(y, dz, dy);
}

}  // namespace bnff::unfused
