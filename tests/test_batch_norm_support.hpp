// Test fixtures for the batch-norm operations: tensors that live as a channel
// slice of a larger buffer, at a misaligned address, surrounded by sentinels.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "bnff/tensor/tensor_view.hpp"
#include "support/random.hpp"

namespace bnff::test {

// The shapes the batch-norm tests sweep: planes around the SIMD widths
// (4, 8, 16 floats) and the 1024-element statistics block.
inline std::vector<shape4> bn_shapes() {
  return {{1, 1, 1, 1},  {2, 3, 1, 1},  {1, 2, 1, 3}, {3, 2, 1, 7},   {2, 3, 3, 5},   {2, 2, 4, 4},
          {1, 3, 1, 17}, {2, 2, 3, 11}, {3, 2, 5, 7}, {2, 1, 31, 33}, {1, 2, 32, 33}, {2, 3, 7, 7}};
}

// A tensor of `shape` stored as channels [before, before + shape.c) of a
// buffer with before + shape.c + after channels, starting `offset` elements
// into its allocation (offset 1 misaligns every plane for SIMD).
template <class T>
struct slice_tensor {
  shape4 shape;
  index_t before, after, offset;
  std::vector<T> storage;

  slice_tensor(shape4 s, index_t before_c = 1, index_t after_c = 1, index_t offset_elems = 1)
      : shape(s), before(before_c), after(after_c), offset(offset_elems) {
    storage.assign(std::size_t(offset + s.n * (s.c + before + after) * s.plane()), sentinel());
  }

  static T sentinel() { return T(-12345.0); }

  shape4 parent_shape() const { return {shape.n, shape.c + before + after, shape.h, shape.w}; }
  tensor_view<T> view() { return tensor_view<T>(storage.data() + offset, parent_shape()).channels(before, shape.c); }
  tensor_view<const T> cview() const {
    return tensor_view<const T>(storage.data() + offset, parent_shape()).channels(before, shape.c);
  }

  // The slice packed NCHW, in double (what the reference takes).
  std::vector<double> packed() const {
    std::vector<double> out;
    out.reserve(std::size_t(shape.size()));
    const auto v = cview();
    for (index_t n = 0; n < shape.n; ++n)
      for (index_t c = 0; c < shape.c; ++c)
        for (index_t h = 0; h < shape.h; ++h)
          for (index_t w = 0; w < shape.w; ++w) out.push_back(double(v(n, c, h, w)));
    return out;
  }

  void set_packed(const std::vector<double>& values) {
    const auto v = view();
    std::size_t i = 0;
    for (index_t n = 0; n < shape.n; ++n)
      for (index_t c = 0; c < shape.c; ++c)
        for (index_t h = 0; h < shape.h; ++h)
          for (index_t w = 0; w < shape.w; ++w) v(n, c, h, w) = T(values[i++]);
  }

  void fill(T value) {
    const auto v = view();
    for (index_t n = 0; n < shape.n; ++n)
      for (index_t c = 0; c < shape.c; ++c)
        for (index_t h = 0; h < shape.h; ++h)
          for (index_t w = 0; w < shape.w; ++w) v(n, c, h, w) = value;
  }
  void fill_nan() { fill(std::numeric_limits<T>::quiet_NaN()); }

  // Random values in [lo, hi), rounded to T (so the reference sees exactly what the kernel sees).
  void fill_random(std::uint64_t seed, double lo = -1.0, double hi = 1.0) {
    auto r = random_vector(std::size_t(shape.size()), seed, lo, hi);
    for (auto& x : r) x = double(T(x));
    set_packed(r);
  }

  // Every element outside the slice still holds the sentinel.
  bool outside_untouched() const {
    std::vector<bool> inside(storage.size(), false);
    const auto v = cview();
    for (index_t n = 0; n < shape.n; ++n)
      for (index_t c = 0; c < shape.c; ++c)
        for (index_t i = 0; i < shape.plane(); ++i) inside[std::size_t(v.plane_ptr(n, c) + i - storage.data())] = true;
    for (std::size_t i = 0; i < storage.size(); ++i)
      if (!inside[i] && !(storage[i] == sentinel())) return false;
    return true;
  }
};

template <class T>
std::vector<T> to_vector(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

template <class T>
vector_view<T> vview(std::vector<T>& v) {
  return vector_view<T>(v.data(), index_t(v.size()));
}
template <class T>
vector_view<const T> cvview(const std::vector<T>& v) {
  return vector_view<const T>(v.data(), index_t(v.size()));
}

// Largest |a - b| over two equally long sequences.
template <class A, class B>
double max_abs_diff(const A& a, const B& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(double(a[i]) - double(b[i]));
    if (!(d <= m)) m = d;  // a NaN difference sticks
  }
  return m;
}

template <class A>
double max_abs(const A& a) {
  double m = 0;
  for (const auto& x : a) m = std::max(m, std::abs(double(x)));
  return m;
}

}  // namespace bnff::test
