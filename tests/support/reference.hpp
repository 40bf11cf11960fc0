// Naive double-precision reference of everything bnff computes: the oracle the
// tests hold every optimized kernel against. Loops as the math is written,
// packed NCHW / KCRS / NKPQ std::vectors, no SIMD, no threads, no cleverness.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include "bnff/conv/conv2d_problem.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff::ref {

using vec = std::vector<double>;

inline std::size_t at(const shape4& s, index_t n, index_t c, index_t h, index_t w) {
  return std::size_t(((n * s.c + c) * s.h + h) * s.w + w);
}

// y[n,k,p,q] = bias[k] + sum_{c,r,s} x[n,c,p*stride-pad+r, q*stride-pad+s] * w[k,c,r,s]
inline vec conv2d_forward(const conv2d_problem& pb, const vec& x, const vec& wt, const vec* bias = nullptr) {
  const shape4 xs = pb.input_shape(), ws = pb.filter_shape(), ys = pb.output_shape();
  vec y(std::size_t(ys.size()), 0.0);
  for (index_t n = 0; n < pb.n; ++n)
    for (index_t k = 0; k < pb.k; ++k)
      for (index_t p = 0; p < ys.h; ++p)
        for (index_t q = 0; q < ys.w; ++q) {
          double acc = bias ? (*bias)[std::size_t(k)] : 0.0;
          for (index_t c = 0; c < pb.c; ++c)
            for (index_t r = 0; r < pb.r; ++r)
              for (index_t s = 0; s < pb.s; ++s) {
                const index_t ih = p * pb.stride - pb.pad + r, iw = q * pb.stride - pb.pad + s;
                if (ih < 0 || ih >= pb.h || iw < 0 || iw >= pb.w) continue;
                acc += x[at(xs, n, c, ih, iw)] * wt[at(ws, k, c, r, s)];
              }
          y[at(ys, n, k, p, q)] = acc;
        }
  return y;
}

// dx = d(sum(y * dy)) / dx for y = conv2d_forward(x, w)
inline vec conv2d_backward_data(const conv2d_problem& pb, const vec& dy, const vec& wt) {
  const shape4 xs = pb.input_shape(), ws = pb.filter_shape(), ys = pb.output_shape();
  vec dx(std::size_t(xs.size()), 0.0);
  for (index_t n = 0; n < pb.n; ++n)
    for (index_t k = 0; k < pb.k; ++k)
      for (index_t p = 0; p < ys.h; ++p)
        for (index_t q = 0; q < ys.w; ++q) {
          const double g = dy[at(ys, n, k, p, q)];
          for (index_t c = 0; c < pb.c; ++c)
            for (index_t r = 0; r < pb.r; ++r)
              for (index_t s = 0; s < pb.s; ++s) {
                const index_t ih = p * pb.stride - pb.pad + r, iw = q * pb.stride - pb.pad + s;
                if (ih < 0 || ih >= pb.h || iw < 0 || iw >= pb.w) continue;
                dx[at(xs, n, c, ih, iw)] += g * wt[at(ws, k, c, r, s)];
              }
        }
  return dx;
}

// dw = d(sum(y * dy)) / dw
inline vec conv2d_backward_weights(const conv2d_problem& pb, const vec& x, const vec& dy) {
  const shape4 xs = pb.input_shape(), ws = pb.filter_shape(), ys = pb.output_shape();
  vec dw(std::size_t(ws.size()), 0.0);
  for (index_t n = 0; n < pb.n; ++n)
    for (index_t k = 0; k < pb.k; ++k)
      for (index_t p = 0; p < ys.h; ++p)
        for (index_t q = 0; q < ys.w; ++q) {
          const double g = dy[at(ys, n, k, p, q)];
          for (index_t c = 0; c < pb.c; ++c)
            for (index_t r = 0; r < pb.r; ++r)
              for (index_t s = 0; s < pb.s; ++s) {
                const index_t ih = p * pb.stride - pb.pad + r, iw = q * pb.stride - pb.pad + s;
                if (ih < 0 || ih >= pb.h || iw < 0 || iw >= pb.w) continue;
                dw[at(ws, k, c, r, s)] += g * x[at(xs, n, c, ih, iw)];
              }
        }
  return dw;
}

// dbias[k] = sum over n, p, q of dy
inline vec conv2d_backward_bias(const conv2d_problem& pb, const vec& dy) {
  const shape4 ys = pb.output_shape();
  vec db(std::size_t(pb.k), 0.0);
  for (index_t n = 0; n < ys.n; ++n)
    for (index_t k = 0; k < ys.c; ++k)
      for (index_t i = 0; i < ys.plane(); ++i) db[std::size_t(k)] += dy[std::size_t((n * ys.c + k) * ys.plane() + i)];
  return db;
}

// Per-channel batch statistics, two passes: mean, then biased variance.
struct channel_stats {
  vec mean, var;
};
inline channel_stats batch_stats(const shape4& s, const vec& x) {
  channel_stats st{vec(std::size_t(s.c), 0.0), vec(std::size_t(s.c), 0.0)};
  const double m = double(s.n * s.plane());
  for (index_t c = 0; c < s.c; ++c) {
    double sum = 0;
    for (index_t n = 0; n < s.n; ++n)
      for (index_t i = 0; i < s.plane(); ++i) sum += x[std::size_t((n * s.c + c) * s.plane() + i)];
    const double mean = sum / m;
    double m2 = 0;
    for (index_t n = 0; n < s.n; ++n)
      for (index_t i = 0; i < s.plane(); ++i) {
        const double d = x[std::size_t((n * s.c + c) * s.plane() + i)] - mean;
        m2 += d * d;
      }
    st.mean[std::size_t(c)] = mean;
    st.var[std::size_t(c)] = m2 / m;
  }
  return st;
}

// y = (x - mean[c]) / sqrt(var[c] + eps) * gamma[c] + beta[c]
inline vec bn_normalize(const shape4& s, const vec& x, const vec& mean, const vec& var, const vec& gamma,
                        const vec& beta, double eps) {
  vec y(x.size());
  for (index_t n = 0; n < s.n; ++n)
    for (index_t c = 0; c < s.c; ++c) {
      const auto cc = std::size_t(c);
      const double invstd = 1.0 / std::sqrt(var[cc] + eps);
      for (index_t i = 0; i < s.plane(); ++i) {
        const auto j = std::size_t((n * s.c + c) * s.plane() + i);
        y[j] = (x[j] - mean[cc]) * invstd * gamma[cc] + beta[cc];
      }
    }
  return y;
}

// Training-mode batch norm with PyTorch semantics: normalize with the biased
// batch variance; running_var takes the unbiased one, m / (m - 1) times it.
struct bn_train_result {
  vec y;
  channel_stats stats;
};
inline bn_train_result bn_forward_train(const shape4& s, const vec& x, const vec& gamma, const vec& beta, double eps,
                                        double momentum, vec& running_mean, vec& running_var) {
  bn_train_result r;
  r.stats = batch_stats(s, x);
  r.y = bn_normalize(s, x, r.stats.mean, r.stats.var, gamma, beta, eps);
  const double m = double(s.n * s.plane());
  for (std::size_t c = 0; c < std::size_t(s.c); ++c) {
    running_mean[c] = (1 - momentum) * running_mean[c] + momentum * r.stats.mean[c];
    running_var[c] = (1 - momentum) * running_var[c] + momentum * r.stats.var[c] * m / (m - 1);
  }
  return r;
}

// Inference-mode batch norm: running statistics in place of batch statistics.
inline vec bn_forward_infer(const shape4& s, const vec& x, const vec& gamma, const vec& beta, const vec& running_mean,
                            const vec& running_var, double eps) {
  return bn_normalize(s, x, running_mean, running_var, gamma, beta, eps);
}

// Gradients of sum(bn_forward_train(x).y * dy) with respect to x, gamma, beta,
// with the batch statistics depending on x (training mode).
struct bn_grads {
  vec dx, dgamma, dbeta;
};
inline bn_grads bn_backward(const shape4& s, const vec& x, const vec& dy, const vec& gamma, double eps) {
  const channel_stats st = batch_stats(s, x);
  bn_grads g{vec(x.size()), vec(std::size_t(s.c), 0.0), vec(std::size_t(s.c), 0.0)};
  const double m = double(s.n * s.plane());
  for (index_t c = 0; c < s.c; ++c) {
    const auto cc = std::size_t(c);
    const double invstd = 1.0 / std::sqrt(st.var[cc] + eps);
    double sum_dy = 0, sum_dy_xhat = 0;
    for (index_t n = 0; n < s.n; ++n)
      for (index_t i = 0; i < s.plane(); ++i) {
        const auto j = std::size_t((n * s.c + c) * s.plane() + i);
        sum_dy += dy[j];
        sum_dy_xhat += dy[j] * (x[j] - st.mean[cc]) * invstd;
      }
    g.dbeta[cc] = sum_dy;
    g.dgamma[cc] = sum_dy_xhat;
    for (index_t n = 0; n < s.n; ++n)
      for (index_t i = 0; i < s.plane(); ++i) {
        const auto j = std::size_t((n * s.c + c) * s.plane() + i);
        const double xhat = (x[j] - st.mean[cc]) * invstd;
        g.dx[j] = gamma[cc] * invstd * (dy[j] - sum_dy / m - xhat * sum_dy_xhat / m);
      }
  }
  return g;
}

inline vec relu(const vec& x) {
  vec y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = x[i] > 0 ? x[i] : 0.0;
  return y;
}

// dx = dz where the ReLU input was positive, else 0.
inline vec relu_backward(const vec& x, const vec& dz) {
  vec dx(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) dx[i] = x[i] > 0 ? dz[i] : 0.0;
  return dx;
}

}  // namespace bnff::ref
