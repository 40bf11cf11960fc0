// bnff: one description of a 2-d convolution, shared by kernels, tests and benchmarks.
#pragma once

#include "bnff/config.hpp"
#include "bnff/error.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff {

// Input N x C x H x W, filters K x C x R x S, output N x K x P x Q, symmetric
// zero padding and equal strides per axis (what DenseNet and ResNet use).
struct conv2d_problem {
  index_t n = 1, c = 1, h = 1, w = 1;  // input
  index_t k = 1, r = 1, s = 1;         // filters
  index_t pad = 0, stride = 1;

  constexpr index_t p() const noexcept { return (h + 2 * pad - r) / stride + 1; }
  constexpr index_t q() const noexcept { return (w + 2 * pad - s) / stride + 1; }
  constexpr shape4 input_shape() const noexcept { return {n, c, h, w}; }
  constexpr shape4 filter_shape() const noexcept { return {k, c, r, s}; }
  constexpr shape4 output_shape() const noexcept { return {n, k, p(), q()}; }
  // Output spatial extent (P, Q).
  constexpr index_t output_extent() const noexcept { return p() * q(); }
  // Multiply-adds counted as two flops, as GEMM benchmarks do.
  constexpr double flops() const noexcept {
    return 2.0 * double(n) * double(k) * double(p()) * double(q()) * double(c) * double(r) * double(s);
  }
  constexpr bool is_pointwise() const noexcept { return r == 1 && s == 1 && pad == 0 && stride == 1; }

  void validate(const char* where) const {
    check_arg(n > 0, where, "problem.n", "> 0", n);
    check_arg(c > 0, where, "problem.c", "> 0", c);
    check_arg(h > 0, where, "problem.h", "> 0", h);
    check_arg(w > 0, where, "problem.w", "> 0", w);
    check_arg(k > 0, where, "problem.k", "> 0", k);
    check_arg(r > 0, where, "problem.r", "> 0", r);
    check_arg(s > 0, where, "problem.s", "> 0", s);
    check_arg(pad >= 0, where, "problem.pad", ">= 0", pad);
    check_arg(stride > 0, where, "problem.stride", "> 0", stride);
    check_arg(pad < r && pad < s, where, "problem.pad", "< kernel size", pad);
    check_arg(h + 2 * pad >= r, where, "problem.h", detail::concat(">= ", r - 2 * pad, " (kernel minus padding)"), h);
    check_arg(w + 2 * pad >= s, where, "problem.w", detail::concat(">= ", s - 2 * pad, " (kernel minus padding)"), w);
  }
};

}  // namespace bnff
