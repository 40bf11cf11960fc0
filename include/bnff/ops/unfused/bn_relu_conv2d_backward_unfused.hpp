// bnff baseline: the backward of BN + ReLU + convolution as a conventional framework
// runs it, one sweep per step, each SIMD and threaded like the fused operations:
//   conv data gradient (write da), ReLU backward from the stored activation (read a, da,
//   write dy), BN reductions (read x, dy), BN dx (read x, dy, write dx), and the weight
//   gradient from the stored activation a (no recomputation).
#pragma once

#include <cmath>
#include <xsimd/xsimd.hpp>

#include "bnff/fusion/detail/for_each_batch.hpp"
#include "bnff/ops/bn_backward_dx.hpp"
#include "bnff/ops/conv2d_backward_data.hpp"
#include "bnff/ops/conv2d_backward_weights.hpp"
#include "bnff/simd/fma.hpp"

namespace bnff::unfused {

// ReLU backward pass from the stored activation: dy = da * [a > 0] (dy may be da).
template <class T, class Arch = xsimd::default_arch>
void relu_backward_stored(tensor_view<const T> a, tensor_view<const T> da, tensor_view<T> dy) {
  constexpr const char* where = "unfused::relu_backward_stored";
  check_arg(!a.empty() && a.plane_contiguous(), where, "a", "non-empty, contiguous H x W planes", a.strides());
  bnff::detail::check_conv_tensor(where, "da", da, a.shape());
  bnff::detail::check_conv_tensor(where, "dy", dy, a.shape());
  bnff::detail::check_no_alias(where, "dy", dy, a, "a");
  const index_t planes = a.n() * a.c(), per = bnff::detail::planes_per_task(a.plane());
  parallel_for((planes + per - 1) / per, [&](index_t task) {
    using batch = xsimd::batch<T, Arch>;
    const batch zero(T(0));
    for (index_t i = task * per; i < std::min(planes, (task + 1) * per); ++i) {
      const index_t n = i / a.c(), c = i % a.c();
      const T* ap = a.plane_ptr(n, c);
      const T* dap = da.plane_ptr(n, c);
      T* dyp = dy.plane_ptr(n, c);
      fusion::detail::for_each_batch<T, Arch>(
          a.plane(),
          [&](index_t j) {
            xsimd::select(batch::load_unaligned(ap + j) > zero, batch::load_unaligned(dap + j), zero)
                .store_unaligned(dyp + j);
          },
          [&](index_t j) { dyp[j] = ap[j] > T(0) ? dap[j] : T(0); });
    }
  });
}

// BN backward reductions pass: dbeta[c] = sum(dy), dgamma[c] = sum(dy * (x - mean)) * invstd,
// one task per channel, images in order (SIMD sums per plane in T, planes added in double).
template <class T, class Arch = xsimd::default_arch>
void bn_backward_reduce(tensor_view<const T> x, tensor_view<const T> dy, vector_view<const T> mean,
                        vector_view<const T> invstd, vector_view<T> dgamma, vector_view<T> dbeta) {
  constexpr const char* where = "unfused::bn_backward_reduce";
  check_arg(!x.empty() && x.plane_contiguous(), where, "x", "non-empty, contiguous H x W planes", x.strides());
  bnff::detail::check_conv_tensor(where, "dy", dy, x.shape());
  bnff::detail::check_conv_vector(where, "mean", mean, x.c());
  bnff::detail::check_conv_vector(where, "invstd", invstd, x.c());
  bnff::detail::check_conv_vector(where, "dgamma", dgamma, x.c());
  bnff::detail::check_conv_vector(where, "dbeta", dbeta, x.c());
  bnff::detail::check_no_alias(where, "dgamma", dgamma, x, "x");
  bnff::detail::check_no_alias(where, "dbeta", dbeta, x, "x");
  bnff::detail::check_no_alias(where, "dgamma", dgamma, dy, "dy");
  bnff::detail::check_no_alias(where, "dbeta", dbeta, dy, "dy");
  parallel_for(x.c(), [&](index_t c) {
    using batch = xsimd::batch<T, Arch>;
    const batch vmean(mean[c]);
    double s0 = 0, s1 = 0;
    for (index_t n = 0; n < x.n(); ++n) {
      const T* xp = x.plane_ptr(n, c);
      const T* dyp = dy.plane_ptr(n, c);
      batch a0(T(0)), a1(T(0));
      double t0 = 0, t1 = 0;
      fusion::detail::for_each_batch<T, Arch>(
          x.plane(),
          [&](index_t j) {
            const batch d = batch::load_unaligned(dyp + j);
            a0 += d;
            a1 = simd::fma(d, batch::load_unaligned(xp + j) - vmean, a1);
          },
          [&](index_t j) {
            t0 += double(dyp[j]);
            t1 += double(dyp[j]) * double(xp[j] - mean[c]);
          });
      s0 += double(xsimd::hadd(a0)) + t0;
      s1 += double(xsimd::hadd(a1)) + t1;
    }
    dbeta[c] = T(s0);
    dgamma[c] = T(s1 * double(invstd[c]));
  });
}

// The unfused backward of out = conv(a, w), a = max(0, BN(x)) stored by the unfused forward:
// conv data gradient into da, ReLU backward in place (da becomes dy), BN reductions, BN dx
// (GradMode: grad_overwrite or grad_accumulate), weight gradient from the stored a. da: scratch shaped like x.
template <class T, class Arch = xsimd::default_arch, class GradMode>
void bn_relu_conv2d_backward(const conv2d_problem& problem, tensor_view<const T> x, tensor_view<const T> a,
                             vector_view<const T> mean, vector_view<const T> invstd, vector_view<const T> scale,
                             tensor_view<const T> w, tensor_view<const T> dout, tensor_view<T> dw, tensor_view<T> da,
                             vector_view<T> dgamma, vector_view<T> dbeta, tensor_view<T> dx, GradMode mode,
                             vector_view<T> workspace) {
  conv2d_backward_weights<T, Arch>(problem, a, dout, dw, {}, workspace);
  conv2d_backward_data<T, Arch>(problem, dout, w, da, grad_overwrite{}, workspace);
  relu_backward_stored<T, Arch>(a, da, da);
  bn_backward_reduce<T, Arch>(x, da, mean, invstd, dgamma, dbeta);
  bn_backward_dx<T, Arch>(x, da, mean, invstd, scale, dgamma, dbeta, dx, mode);
}

}  // namespace bnff::unfused
