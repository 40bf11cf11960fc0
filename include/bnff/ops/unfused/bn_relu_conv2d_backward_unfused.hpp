// bnff baseline: the backward of BN + ReLU + convolution as a conventional framework
// runs it, one sweep per step, each SIMD and threaded like the fused operations:
//   conv data gradient (write da), ReLU backward from the stored activation (read a, da,
//   write dy), BN reductions (read x, dy), BN dx (read x, dy, write dx), and the weight
//   gradient from the stored activation a (no recomputation).
#pragma once

#include <xsimd/xsimd.hpp>

#include "bnff/ops/bn_backward_dx.hpp"
#include "bnff/ops/conv2d_backward_data.hpp"
#include "bnff/ops/conv2d_backward_weights.hpp"
#include "bnff/ops/unfused/batch_norm_backward_reduce_pass.hpp"
#include "bnff/ops/unfused/batch_norm_relu_backward_pass.hpp"

namespace bnff::unfused {

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
  const tensor_view<const T> dy = da;
  unfused::relu_backward<Arch, T>(a, dy, da);
  // The reductions over the blocks of the fused epilogue: the same dgamma and dbeta bits.
  const index_t block = conv2d_backward_data_plan<T, Arch>(problem, false).partition().block;
  unfused::batch_norm_backward_reduce_blocks<Arch, T>(x, dy, mean, invstd, block, dbeta, dgamma);
  bn_backward_dx<T, Arch>(x, da, mean, invstd, scale, dgamma, dbeta, dx, mode);
}

}  // namespace bnff::unfused
