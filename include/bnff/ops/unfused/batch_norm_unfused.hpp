// bnff baseline: batch norm + ReLU as a conventional framework runs it, one
// sweep per step, each step SIMD and threaded like the fused kernels, so that
// benchmarks compare like with like.
//   forward:  mean (read x), variance (read x), normalize (read x, write y), ReLU (read y, write z)
//   backward: ReLU backward (read y, dz, write dy), reductions (read x, dy), dx (read x, dy, write dx)
#pragma once

#include <xsimd/xsimd.hpp>

#include <cmath>

#include "bnff/config.hpp"
#include "bnff/ops/bn_checks.hpp"
#include "bnff/ops/unfused/batch_norm_backward_dx_pass.hpp"
#include "bnff/ops/unfused/batch_norm_backward_reduce_pass.hpp"
#include "bnff/ops/unfused/batch_norm_mean_pass.hpp"
#include "bnff/ops/unfused/batch_norm_normalize_pass.hpp"
#include "bnff/ops/unfused/batch_norm_relu_backward_pass.hpp"
#include "bnff/ops/unfused/batch_norm_relu_pass.hpp"
#include "bnff/ops/unfused/batch_norm_variance_pass.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff::unfused {

// Training forward of BN + ReLU in four sweeps: y = BN(x) and z = max(0, y)
// are both written (the backward below reads y). mean, var (biased) and
// invstd = 1 / sqrt(var + eps) are per-channel outputs. y and z must not
// overlap x; z may be exactly y.
template <class Arch = xsimd::default_arch, class T>
void batch_norm_relu_forward(tensor_view<const bnff::detail::nondeduced_t<T>> x, tensor_view<T> y, tensor_view<T> z,
                             vector_view<const bnff::detail::nondeduced_t<T>> gamma,
                             vector_view<const bnff::detail::nondeduced_t<T>> beta, double eps, vector_view<T> mean,
                             vector_view<T> var, vector_view<T> invstd) {
  constexpr const char* where = "unfused::batch_norm_relu_forward";
  bnff::detail::check_planes(where, "x", x);
  bnff::detail::check_channels(where, "invstd", invstd, x.c());
  bnff::detail::check_disjoint(where, "invstd", invstd, "mean", mean);
  bnff::detail::check_disjoint(where, "invstd", invstd, "var", var);
  bnff::detail::check_disjoint(where, "z", z, "mean", mean);
  bnff::detail::check_disjoint(where, "z", z, "var", var);
  bnff::detail::check_disjoint(where, "z", z, "invstd", invstd);
  bnff::detail::check_disjoint(where, "y", y, "invstd", invstd);
  bnff::detail::check_disjoint(where, "z", z, "x", x);
  bnff::detail::check_disjoint(where, "y", y, "x", x);
  bnff::detail::check_disjoint(where, "invstd", invstd, "x", x);
  const char* out_names[3] = {"mean", "var", "invstd"};
  const vector_view<T> outs[3] = {mean, var, invstd};
  for (int i = 0; i < 3; ++i) {
    bnff::detail::check_disjoint(where, out_names[i], outs[i], "gamma", gamma);
    bnff::detail::check_disjoint(where, out_names[i], outs[i], "beta", beta);
  }
  bnff::detail::check_eps(where, eps);
  bnff::detail::unfused_batch_norm_mean_check<T>(x, mean);
  bnff::detail::unfused_batch_norm_variance_check<T>(x, mean, var);
  bnff::detail::unfused_batch_norm_normalize_check<T>(x, y, mean, var, gamma, beta, eps);
  bnff::detail::unfused_relu_check<T>(y, z);
  bnff::detail::unfused_batch_norm_mean_run<Arch, T>(x, mean);
  bnff::detail::unfused_batch_norm_variance_run<Arch, T>(x, mean, var);
  bnff::detail::unfused_batch_norm_normalize_run<Arch, T>(x, y, mean, var, gamma, beta, eps);
  bnff::detail::unfused_relu_run<Arch, T>(y, z);
  for (index_t c = 0; c < x.c(); ++c) invstd[c] = T(1.0 / std::sqrt(double(var[c]) + eps));
}

// Backward of the above in three sweeps: dy = relu_backward(y, dz) is written,
// then reduced with x, then dx is computed from x and dy. dy, sum_dy and
// sum_dy_xhat are the caller's workspace (sum_dy and sum_dy_xhat are also
// dbeta and dgamma on return).
template <class Arch = xsimd::default_arch, class T>
void batch_norm_relu_backward(tensor_view<const bnff::detail::nondeduced_t<T>> x,
                              tensor_view<const bnff::detail::nondeduced_t<T>> y,
                              tensor_view<const bnff::detail::nondeduced_t<T>> dz, tensor_view<T> dy,
                              vector_view<const bnff::detail::nondeduced_t<T>> mean,
                              vector_view<const bnff::detail::nondeduced_t<T>> invstd,
                              vector_view<const bnff::detail::nondeduced_t<T>> gamma, vector_view<T> sum_dy,
                              vector_view<T> sum_dy_xhat, tensor_view<T> dx) {
  constexpr const char* where = "unfused::batch_norm_relu_backward";
  bnff::detail::check_planes(where, "x", x);
  bnff::detail::check_like(where, "dy", dy, x.shape());
  bnff::detail::check_disjoint(where, "dy", dy, "x", x);
  bnff::detail::check_disjoint(where, "dx", dx, "y", y);
  bnff::detail::check_disjoint(where, "dx", dx, "dz", dz);
  bnff::detail::check_disjoint(where, "dx", dx, "sum_dy", sum_dy);
  bnff::detail::check_disjoint(where, "dx", dx, "sum_dy_xhat", sum_dy_xhat);
  bnff::detail::check_disjoint(where, "dy", dy, "sum_dy", sum_dy);
  bnff::detail::check_disjoint(where, "dy", dy, "sum_dy_xhat", sum_dy_xhat);
  bnff::detail::check_in_place_or_disjoint(where, "dx", dx, "dy", dy);
  const char* in_names[3] = {"mean", "invstd", "gamma"};
  const vector_view<const T> ins[3] = {mean, invstd, gamma};
  for (int i = 0; i < 3; ++i) {
    bnff::detail::check_disjoint(where, "dy", dy, in_names[i], ins[i]);
    bnff::detail::check_disjoint(where, "sum_dy", sum_dy, in_names[i], ins[i]);
    bnff::detail::check_disjoint(where, "sum_dy_xhat", sum_dy_xhat, in_names[i], ins[i]);
  }
  bnff::detail::unfused_relu_backward_check<T>(y, dz, dy);
  bnff::detail::unfused_batch_norm_backward_reduce_check<T>(x, dy, mean, invstd, sum_dy, sum_dy_xhat);
  bnff::detail::unfused_batch_norm_backward_dx_check<T>(x, dy, mean, invstd, gamma, sum_dy, sum_dy_xhat, dx);
  bnff::detail::unfused_relu_backward_run<Arch, T>(y, dz, dy);
  bnff::detail::unfused_batch_norm_backward_reduce_run<Arch, T>(x, dy, mean, invstd, sum_dy, sum_dy_xhat);
  bnff::detail::unfused_batch_norm_backward_dx_run<Arch, T>(x, dy, mean, invstd, gamma, sum_dy, sum_dy_xhat, dx);
}

}  // namespace bnff::unfused
