// bnff: argument checks shared by the batch-norm operations. Each throws
// bnff::error naming the operation, the argument, expected and actual values;
// operations run all of them before writing anything.
#pragma once

#include <cmath>
#include <type_traits>

#include "bnff/config.hpp"
#include "bnff/error.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff::detail {

// Deduce an operation's element type from its output only, so inputs may be
// passed as mutable or const views alike.
template <class T>
struct nondeduced {
  using type = T;
};
template <class T>
using nondeduced_t = typename nondeduced<T>::type;

// The SIMD kernels sweep each H x W plane as one contiguous run.
template <class T>
void check_planes(const char* where, const char* arg, const tensor_view<T>& v) {
  check_arg(!v.empty(), where, arg, "a non-empty tensor view", "an empty view");
  check_arg(v.plane_contiguous(), where, arg,
            concat("contiguous H x W planes (strides.h == ", v.w(), ", strides.w == 1)"),
            concat("strides ", v.strides()));
}

// A tensor that must have the shape of `x` (and contiguous planes).
template <class T>
void check_like(const char* where, const char* arg, const tensor_view<T>& v, const shape4& expected) {
  check_planes(where, arg, v);
  check_equal(where, arg, expected, v.shape());
}

// A per-channel vector: exactly `channels` elements, or empty where optional.
template <class T>
void check_channels(const char* where, const char* arg, const vector_view<T>& v, index_t channels,
                    bool optional = false) {
  if (optional && v.empty()) return;
  check_arg(v.size() == channels, where, arg,
            concat(channels, " elements (one per channel)", optional ? " or empty" : ""),
            concat(v.size(), " elements"));
}

inline void check_eps(const char* where, double eps) {
  check_arg(eps > 0 && std::isfinite(eps), where, "eps", "a finite value > 0", eps);
}

inline void check_momentum(const char* where, double momentum) {
  check_arg(momentum >= 0 && momentum <= 1, where, "momentum", "a value in [0, 1]", momentum);
}

// Exactly the same elements: the one aliasing an in-place operation accepts.
template <class T, class U>
bool same_view(const tensor_view<T>& a, const tensor_view<U>& b) noexcept {
  return static_cast<const void*>(a.data()) == static_cast<const void*>(b.data()) && a.shape() == b.shape() &&
         a.strides() == b.strides();
}

// Output `out` may not share any element with input `in`.
template <class T, class U>
void check_disjoint(const char* where, const char* out_arg, const tensor_view<T>& out, const char* in_arg,
                    const tensor_view<U>& in) {
  check_arg(!overlaps(out, in), where, out_arg, concat("no element shared with '", in_arg, "'"), "overlapping memory");
}

// Output `out` may be exactly `in` (in place) or disjoint from it, nothing in between.
template <class T, class U>
void check_in_place_or_disjoint(const char* where, const char* out_arg, const tensor_view<T>& out, const char* in_arg,
                                const tensor_view<U>& in) {
  check_arg(same_view(out, in) || !overlaps(out, in), where, out_arg,
            concat("exactly '", in_arg, "' (in place) or no element shared with it"), "partially overlapping memory");
}

// Vectors (and any other contiguous ranges) that must not share a byte.
template <class T, class U>
void check_disjoint(const char* where, const char* out_arg, const vector_view<T>& out, const char* in_arg,
                    const vector_view<U>& in) {
  check_arg(out.empty() || in.empty() || !ranges_overlap(out.begin(), out.end(), in.begin(), in.end()), where, out_arg,
            concat("no element shared with '", in_arg, "'"), "overlapping memory");
}

template <class T, class U>
void check_disjoint(const char* where, const char* out_arg, const vector_view<T>& out, const char* in_arg,
                    const tensor_view<U>& in) {
  check_arg(out.empty() || in.empty() || !ranges_overlap(out.begin(), out.end(), in.begin_address(), in.end_address()),
            where, out_arg, concat("no element shared with '", in_arg, "'"), "overlapping memory");
}

template <class T, class U>
void check_disjoint(const char* where, const char* out_arg, const tensor_view<T>& out, const char* in_arg,
                    const vector_view<U>& in) {
  check_arg(out.empty() || in.empty() || !ranges_overlap(out.begin_address(), out.end_address(), in.begin(), in.end()),
            where, out_arg, concat("no element shared with '", in_arg, "'"), "overlapping memory");
}

}  // namespace bnff::detail
