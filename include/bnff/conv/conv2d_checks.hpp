// bnff: argument checks shared by the convolution operations (all run before any write).
#pragma once

#include "bnff/conv/conv2d_problem.hpp"
#include "bnff/error.hpp"
#include "bnff/stats/moments.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff::detail {

template <class T>
void check_conv_tensor(const char* where, const char* arg, const tensor_view<T>& t, const shape4& expected) {
  check_arg(!t.empty(), where, arg, "a non-empty view", "an empty view");
  check_equal(where, arg, expected, t.shape());
  check_arg(t.plane_contiguous(), where, arg, "contiguous H x W planes (strides.h == w, strides.w == 1)", t.strides());
}

template <class T>
void check_conv_vector(const char* where, const char* arg, const vector_view<T>& v, index_t expected) {
  check_arg(v.size() == expected, where, arg, detail::concat("size ", expected), detail::concat("size ", v.size()));
}

// Outputs must not share memory with any input: the engine reads inputs while writing tiles.
template <class T, class U>
void check_no_alias(const char* where, const char* arg, const tensor_view<T>& out, const tensor_view<U>& in,
                    const char* in_name) {
  check_arg(!overlaps(out, in), where, arg, detail::concat("no overlap with '", in_name, "'"), "overlapping memory");
}

template <class T, class U>
void check_no_alias(const char* where, const char* arg, const tensor_view<T>& out, const vector_view<U>& in,
                    const char* in_name) {
  const bool alias = !out.empty() && in.size() > 0 &&
                     ranges_overlap(out.begin_address(), out.end_address(), in.data(), in.data() + in.size());
  check_arg(!alias, where, arg, detail::concat("no overlap with '", in_name, "'"), "overlapping memory");
}

template <class T, class U>
void check_no_alias(const char* where, const char* arg, const vector_view<T>& out, const vector_view<U>& in,
                    const char* in_name) {
  const bool alias = out.size() > 0 && in.size() > 0 &&
                     ranges_overlap(out.data(), out.data() + out.size(), in.data(), in.data() + in.size());
  check_arg(!alias, where, arg, detail::concat("no overlap with '", in_name, "'"), "overlapping memory");
}

template <class T, class U>
void check_no_alias(const char* where, const char* arg, const vector_view<T>& out, const tensor_view<U>& in,
                    const char* in_name) {
  check_no_alias(where, arg, in, out, in_name);
}

}  // namespace bnff::detail
