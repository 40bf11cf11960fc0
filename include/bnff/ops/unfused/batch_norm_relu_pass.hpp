// bnff baseline: ReLU as its own sweep over the batch-norm output.
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
void unfused_relu_check(tensor_view<const bnff::detail::nondeduced_t<T>> y, tensor_view<T> z) {
  constexpr const char* where = "unfused::relu";
  bnff::detail::check_planes(where, "y", y);
  bnff::detail::check_like(where, "z", z, y.shape());
  bnff::detail::check_in_place_or_disjoint(where, "z", z, "y", y);
}

template <class Arch, class T>
void unfused_relu_run(tensor_view<const bnff::detail::nondeduced_t<T>> y, tensor_view<T> z) {
  bnff::detail::with_store_policy<T>(z.size(), z.data() == y.data(), [&](auto store) {
    using Store = decltype(store);
    bnff::detail::for_each_plane(
        y.n(), y.c(), y.plane(),
        [&](index_t n, index_t c) {
          const T* yp = y.plane_ptr(n, c);
          T* zp = z.plane_ptr(n, c);
          Store::template for_each<T, Arch>(
              y.plane(), zp, [&](auto lanes, auto) { lanes.store(zp, bn_relu::forward(lanes.load(yp))); });
        },
        [] { Store::finish(); });
  });
}

}  // namespace bnff::detail

namespace bnff::unfused {

// z = max(0, y). z may be exactly y (in place).
template <class Arch = xsimd::default_arch, class T>
void relu(tensor_view<const bnff::detail::nondeduced_t<T>> y, tensor_view<T> z) {
  bnff::detail::unfused_relu_check<T>(y, z);
  bnff::detail::unfused_relu_run<Arch, T>(y, z);
}

}  // namespace bnff::unfused
