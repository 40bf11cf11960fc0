// The layers of the network that are neither convolution nor batch normalization:
// 2x2 average pooling, global average pooling, the fully connected classifier
// and softmax cross-entropy. Plain loops the compiler vectorizes, threaded over
// independent outputs; every sum runs in a fixed order, so results do not
// depend on the thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include <bnff/error.hpp>
#include <bnff/parallel/parallel.hpp>
#include <bnff/tensor/tensor_view.hpp>

namespace trainer {

using bnff::index_t;
using bnff::tensor_view;

// parallel_for, except for small problems, where starting threads costs more
// than the work. Only for tasks that write disjoint outputs: the result is the
// same either way.
template <class F>
void parallel_tasks(index_t tasks, index_t elements, F&& f) {
  constexpr index_t serial_below = index_t(1) << 15;
  if (elements < serial_below) {
    for (index_t t = 0; t < tasks; ++t) f(t);
  } else {
    bnff::parallel_for(tasks, std::forward<F>(f));
  }
}

// y[n,c,i,j] = (x[2i,2j] + x[2i,2j+1] + x[2i+1,2j] + x[2i+1,2j+1]) / 4
// (stride 2, no padding; an odd last row or column is dropped, as in PyTorch's AvgPool2d(2)).
template <class T>
void avg_pool2x2_forward(tensor_view<const T> x, tensor_view<T> y) {
  const char* where = "avg_pool2x2_forward";
  bnff::check_equal(where, "y.shape", bnff::shape4{x.n(), x.c(), x.h() / 2, x.w() / 2}, y.shape());
  bnff::check_arg(!bnff::overlaps(x, y), where, "y", "no overlap with x", "overlapping views");
  parallel_tasks(x.n() * x.c(), x.size(), [&](index_t task) {
    const index_t n = task / x.c(), c = task % x.c();
    const T* src = x.plane_ptr(n, c);
    T* dst = y.plane_ptr(n, c);
    const auto xs = x.strides(), ys = y.strides();
    for (index_t i = 0; i < y.h(); ++i) {
      const T* r0 = src + 2 * i * xs.h;
      const T* r1 = r0 + xs.h;
      for (index_t j = 0; j < y.w(); ++j)
        dst[i * ys.h + j * ys.w] =
            T(0.25) * (r0[2 * j * xs.w] + r0[(2 * j + 1) * xs.w] + r1[2 * j * xs.w] + r1[(2 * j + 1) * xs.w]);
    }
  });
}

// dx[n,c,2i+a,2j+b] = dy[n,c,i,j] / 4; a dropped odd row or column gets 0. Overwrites dx.
template <class T>
void avg_pool2x2_backward(tensor_view<const T> dy, tensor_view<T> dx) {
  const char* where = "avg_pool2x2_backward";
  bnff::check_arg(dx.h() / 2 == dy.h() && dx.w() / 2 == dy.w() && dx.n() == dy.n() && dx.c() == dy.c(), where,
                  "dx.shape",
                  bnff::detail::concat("[", dy.n(), ", ", dy.c(), ", ", 2 * dy.h(), " or ", 2 * dy.h() + 1, ", ",
                                       2 * dy.w(), " or ", 2 * dy.w() + 1, "]"),
                  dx.shape());
  bnff::check_arg(!bnff::overlaps(dx, dy), where, "dx", "no overlap with dy", "overlapping views");
  parallel_tasks(dx.n() * dx.c(), dx.size(), [&](index_t task) {
    const index_t n = task / dx.c(), c = task % dx.c();
    const T* src = dy.plane_ptr(n, c);
    T* dst = dx.plane_ptr(n, c);
    const auto ds = dy.strides(), xs = dx.strides();
    for (index_t i = 0; i < dx.h(); ++i)
      for (index_t j = 0; j < dx.w(); ++j) {
        const bool inside = i / 2 < dy.h() && j / 2 < dy.w();
        dst[i * xs.h + j * xs.w] = inside ? T(0.25) * src[(i / 2) * ds.h + (j / 2) * ds.w] : T(0);
      }
  });
}

// y[n,c,i,j] = max of x[n,c,2i+a,2j+b] over a, b in {-1, 0, 1} inside the image
// (3x3 max pooling, stride 2, padding 1 that never wins, as PyTorch's MaxPool2d(3, 2, 1)).
inline index_t max_pool3x3s2_extent(index_t h) noexcept { return (h + 2 - 3) / 2 + 1; }

template <class T>
void max_pool3x3s2_forward(tensor_view<const T> x, tensor_view<T> y) {
  const char* where = "max_pool3x3s2_forward";
  bnff::check_equal(where, "y.shape",
                    bnff::shape4{x.n(), x.c(), max_pool3x3s2_extent(x.h()), max_pool3x3s2_extent(x.w())}, y.shape());
  bnff::check_arg(!bnff::overlaps(x, y), where, "y", "no overlap with x", "overlapping views");
  parallel_tasks(x.n() * x.c(), x.size(), [&](index_t task) {
    const index_t n = task / x.c(), c = task % x.c();
    for (index_t i = 0; i < y.h(); ++i)
      for (index_t j = 0; j < y.w(); ++j) {
        T m = x(n, c, 2 * i, 2 * j);
        for (index_t a = std::max<index_t>(0, 2 * i - 1); a <= std::min(x.h() - 1, 2 * i + 1); ++a)
          for (index_t b = std::max<index_t>(0, 2 * j - 1); b <= std::min(x.w() - 1, 2 * j + 1); ++b)
            m = x(n, c, a, b) > m ? x(n, c, a, b) : m;
        y(n, c, i, j) = m;
      }
  });
}

// dx = dy routed to the first position (row-major in the window) holding each window's
// maximum y; everything else 0. Overwrites dx.
template <class T>
void max_pool3x3s2_backward(tensor_view<const T> x, tensor_view<const T> y, tensor_view<const T> dy,
                            tensor_view<T> dx) {
  const char* where = "max_pool3x3s2_backward";
  bnff::check_equal(where, "dx.shape", x.shape(), dx.shape());
  bnff::check_equal(where, "dy.shape", y.shape(), dy.shape());
  bnff::check_equal(where, "y.shape",
                    bnff::shape4{x.n(), x.c(), max_pool3x3s2_extent(x.h()), max_pool3x3s2_extent(x.w())}, y.shape());
  bnff::check_arg(!bnff::overlaps(dx, dy), where, "dx", "no overlap with dy", "overlapping views");
  parallel_tasks(x.n() * x.c(), x.size(), [&](index_t task) {
    const index_t n = task / x.c(), c = task % x.c();
    for (index_t i = 0; i < x.h(); ++i)
      for (index_t j = 0; j < x.w(); ++j) dx(n, c, i, j) = T(0);
    for (index_t i = 0; i < y.h(); ++i)
      for (index_t j = 0; j < y.w(); ++j) {
        const T m = y(n, c, i, j);
        bool done = false;
        for (index_t a = std::max<index_t>(0, 2 * i - 1); a <= std::min(x.h() - 1, 2 * i + 1) && !done; ++a)
          for (index_t b = std::max<index_t>(0, 2 * j - 1); b <= std::min(x.w() - 1, 2 * j + 1) && !done; ++b)
            if (x(n, c, a, b) == m) {
              dx(n, c, a, b) += dy(n, c, i, j);
              done = true;
            }
      }
  });
}

// y[n * C + c] = mean over h, w of x[n,c,h,w]   (y is N x C row-major, the FC input)
template <class T>
void global_avg_pool_forward(tensor_view<const T> x, T* y) {
  bnff::check_arg(y != nullptr, "global_avg_pool_forward", "y", "non-null pointer", "nullptr");
  const double inv = 1.0 / double(x.plane());
  parallel_tasks(x.n(), x.size(), [&](index_t n) {
    for (index_t c = 0; c < x.c(); ++c) {
      double sum = 0;  // spatial extents are small here; double keeps the mean exact to float
      for (index_t i = 0; i < x.h(); ++i)
        for (index_t j = 0; j < x.w(); ++j) sum += double(x(n, c, i, j));
      y[n * x.c() + c] = T(sum * inv);
    }
  });
}

// dx[n,c,h,w] = dy[n * C + c] / (H * W). Overwrites dx.
template <class T>
void global_avg_pool_backward(const T* dy, tensor_view<T> dx) {
  bnff::check_arg(dy != nullptr, "global_avg_pool_backward", "dy", "non-null pointer", "nullptr");
  const T inv = T(1.0 / double(dx.plane()));
  parallel_tasks(dx.n(), dx.size(), [&](index_t n) {
    for (index_t c = 0; c < dx.c(); ++c) {
      const T g = dy[n * dx.c() + c] * inv;
      for (index_t i = 0; i < dx.h(); ++i)
        for (index_t j = 0; j < dx.w(); ++j) dx(n, c, i, j) = g;
    }
  });
}

// A fully connected layer on row-major matrices: x is N x in, weight is out x in
// (PyTorch's layout), bias and y have `out` columns.
struct fc_shape {
  index_t n = 0, in = 0, out = 0;
  void validate(const char* where) const {
    bnff::check_arg(n > 0, where, "shape.n", "> 0", n);
    bnff::check_arg(in > 0, where, "shape.in", "> 0", in);
    bnff::check_arg(out > 0, where, "shape.out", "> 0", out);
  }
};

// y[n,o] = bias[o] + sum_i x[n,i] * weight[o,i]
template <class T>
void fc_forward(const fc_shape& s, const T* x, const T* weight, const T* bias, T* y) {
  s.validate("fc_forward");
  bnff::check_arg(x && weight && bias && y, "fc_forward", "x, weight, bias, y", "non-null pointers", "nullptr");
  parallel_tasks(s.n, s.n * s.in * s.out, [&](index_t n) {
    const T* xr = x + n * s.in;
    for (index_t o = 0; o < s.out; ++o) {
      const T* wr = weight + o * s.in;
      T acc = 0;
      for (index_t i = 0; i < s.in; ++i) acc += xr[i] * wr[i];
      y[n * s.out + o] = bias[o] + acc;
    }
  });
}

// d_weight[o,i] = sum_n dy[n,o] x[n,i];  d_bias[o] = sum_n dy[n,o];
// dx[n,i] = sum_o dy[n,o] weight[o,i] (skipped when dx is null). Overwrites the gradients.
template <class T>
void fc_backward(const fc_shape& s, const T* x, const T* weight, const T* dy, T* dx, T* d_weight, T* d_bias) {
  s.validate("fc_backward");
  bnff::check_arg(x && weight && dy && d_weight && d_bias, "fc_backward", "x, weight, dy, d_weight, d_bias",
                  "non-null pointers", "nullptr");
  parallel_tasks(s.out, s.n * s.in * s.out, [&](index_t o) {
    T* dw = d_weight + o * s.in;
    for (index_t i = 0; i < s.in; ++i) dw[i] = 0;
    T db = 0;
    for (index_t n = 0; n < s.n; ++n) {  // images in order: the sum is the same on any thread count
      const T g = dy[n * s.out + o];
      const T* xr = x + n * s.in;
      for (index_t i = 0; i < s.in; ++i) dw[i] += g * xr[i];
      db += g;
    }
    d_bias[o] = db;
  });
  if (!dx) return;
  parallel_tasks(s.n, s.n * s.in * s.out, [&](index_t n) {
    T* dxr = dx + n * s.in;
    for (index_t i = 0; i < s.in; ++i) dxr[i] = 0;
    for (index_t o = 0; o < s.out; ++o) {
      const T g = dy[n * s.out + o];
      const T* wr = weight + o * s.in;
      for (index_t i = 0; i < s.in; ++i) dxr[i] += g * wr[i];
    }
  });
}

struct loss_result {
  double loss = 0;      // mean cross-entropy over the batch
  index_t correct = 0;  // images whose largest logit is the label (first maximum on ties)
};

// loss = mean_n (log sum_k exp(z[n,k]) - z[n,label[n]]);
// d_logits[n,k] = (softmax(z[n])[k] - [k == label[n]]) / N  (skipped when null).
template <class T>
loss_result softmax_cross_entropy(index_t n, index_t classes, const T* logits, const std::int32_t* labels,
                                  T* d_logits) {
  const char* where = "softmax_cross_entropy";
  bnff::check_arg(n > 0, where, "n", "> 0", n);
  bnff::check_arg(classes > 0, where, "classes", "> 0", classes);
  bnff::check_arg(logits && labels, where, "logits, labels", "non-null pointers", "nullptr");
  for (index_t i = 0; i < n; ++i)
    bnff::check_arg(labels[i] >= 0 && labels[i] < classes, where, "labels",
                    bnff::detail::concat("values in [0, ", classes, ")"),
                    bnff::detail::concat(labels[i], " at index ", i));
  std::vector<double> row_loss(static_cast<std::size_t>(n));
  std::vector<char> row_correct(static_cast<std::size_t>(n));
  parallel_tasks(n, n * classes * 8, [&](index_t i) {
    const T* z = logits + i * classes;
    index_t best = 0;
    for (index_t k = 1; k < classes; ++k)
      if (z[k] > z[best]) best = k;
    const double zmax = double(z[best]);  // subtract the maximum: exp never overflows
    double sum = 0;
    for (index_t k = 0; k < classes; ++k) sum += std::exp(double(z[k]) - zmax);
    const double log_sum = std::log(sum) + zmax;
    row_loss[std::size_t(i)] = log_sum - double(z[labels[i]]);
    row_correct[std::size_t(i)] = best == labels[i];
    if (d_logits)
      for (index_t k = 0; k < classes; ++k)
        d_logits[i * classes + k] = T((std::exp(double(z[k]) - log_sum) - (k == labels[i] ? 1.0 : 0.0)) / double(n));
  });
  loss_result r;
  for (index_t i = 0; i < n; ++i) {  // merged serially in image order
    r.loss += row_loss[std::size_t(i)];
    r.correct += row_correct[std::size_t(i)];
  }
  r.loss /= double(n);
  return r;
}

}  // namespace trainer
