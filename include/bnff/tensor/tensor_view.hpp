// bnff: non-owning NCHW tensor views over the caller's memory.
#pragma once

#include <algorithm>
#include <array>
#include <type_traits>

#include "bnff/config.hpp"
#include "bnff/error.hpp"

namespace bnff {

// Extents of a 4-d tensor in NCHW order.
struct shape4 {
  index_t n = 0, c = 0, h = 0, w = 0;
  constexpr index_t plane() const noexcept { return h * w; }
  constexpr index_t size() const noexcept { return n * c * h * w; }
  friend constexpr bool operator==(const shape4& a, const shape4& b) noexcept {
    return a.n == b.n && a.c == b.c && a.h == b.h && a.w == b.w;
  }
  friend constexpr bool operator!=(const shape4& a, const shape4& b) noexcept { return !(a == b); }
  template <class Os>
  friend Os& operator<<(Os& os, const shape4& s) {
    os << '[' << s.n << ", " << s.c << ", " << s.h << ", " << s.w << ']';
    return os;
  }
};

// Element strides of a 4-d tensor, NCHW order.
struct strides4 {
  index_t n = 0, c = 0, h = 0, w = 0;
  static constexpr strides4 packed(const shape4& s) noexcept { return {s.c * s.h * s.w, s.h * s.w, s.w, 1}; }
  friend constexpr bool operator==(const strides4& a, const strides4& b) noexcept {
    return a.n == b.n && a.c == b.c && a.h == b.h && a.w == b.w;
  }
  template <class Os>
  friend Os& operator<<(Os& os, const strides4& s) {
    os << '[' << s.n << ", " << s.c << ", " << s.h << ", " << s.w << ']';
    return os;
  }
};

namespace detail {

inline void check_shape(const char* where, const shape4& s) {
  check_arg(s.n > 0, where, "shape.n", "> 0", s.n);
  check_arg(s.c > 0, where, "shape.c", "> 0", s.c);
  check_arg(s.h > 0, where, "shape.h", "> 0", s.h);
  check_arg(s.w > 0, where, "shape.w", "> 0", s.w);
}

// Strides must be positive and must not let two indices reach one element:
// ordered by stride, each dimension must step over the whole of the smaller ones.
inline void check_strides(const char* where, const shape4& s, const strides4& st) {
  const std::array<index_t, 4> ext{s.n, s.c, s.h, s.w};
  const std::array<index_t, 4> str{st.n, st.c, st.h, st.w};
  const char* names[4] = {"strides.n", "strides.c", "strides.h", "strides.w"};
  for (int i = 0; i < 4; ++i) check_arg(str[i] > 0, where, names[i], "> 0", str[i]);
  std::array<int, 4> order{0, 1, 2, 3};
  std::sort(order.begin(), order.end(),
            // On equal strides the inner dimension (w, then h, c, n) counts as the smaller,
            // so the error names the outer one, which is usually the one set wrongly.
            [&](int a, int b) { return str[a] != str[b] ? str[a] < str[b] : a > b; });
  index_t span = 1;  // elements covered by the dimensions already seen
  for (int i : order) {
    if (ext[i] == 1) continue;  // a dimension of extent 1 never steps
    if (str[i] < span)
      throw error(detail::concat(where, ": argument '", names[i], "': expected >= ", span,
                                 " so that elements do not overlap (shape ", s, ", strides ", st, "), got ", str[i]));
    span = str[i] * ext[i];
  }
}

}  // namespace detail

// A view of an N x C x H x W tensor in the caller's memory. Copying a view
// copies the pointer, never the data. A channel slice keeps the parent's batch
// stride, so one DenseNet concatenation buffer serves as many views.
template <class T>
class tensor_view {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;

  tensor_view() = default;

  // A packed NCHW tensor.
  tensor_view(T* data, shape4 shape) : tensor_view(data, shape, strides4::packed(shape)) {}
  tensor_view(T* data, index_t n, index_t c, index_t h, index_t w) : tensor_view(data, shape4{n, c, h, w}) {}

  // Any non-overlapping strides.
  tensor_view(T* data, shape4 shape, strides4 strides) : data_(data), shape_(shape), strides_(strides) {
    detail::check_shape("tensor_view", shape);
    detail::check_strides("tensor_view", shape, strides);
    check_arg(data != nullptr, "tensor_view", "data", "non-null pointer for a non-empty tensor", "nullptr");
  }

  // A view of const elements converts implicitly from a mutable one.
  template <class U, class = std::enable_if_t<std::is_same_v<T, const U>>>
  tensor_view(const tensor_view<U>& other) noexcept
      : data_(other.data()), shape_(other.shape()), strides_(other.strides()) {}

  T* data() const noexcept { return data_; }
  const shape4& shape() const noexcept { return shape_; }
  const strides4& strides() const noexcept { return strides_; }
  index_t n() const noexcept { return shape_.n; }
  index_t c() const noexcept { return shape_.c; }
  index_t h() const noexcept { return shape_.h; }
  index_t w() const noexcept { return shape_.w; }
  index_t plane() const noexcept { return shape_.plane(); }
  index_t size() const noexcept { return shape_.size(); }
  bool empty() const noexcept { return data_ == nullptr; }

  // Each H x W plane is one contiguous run: what the SIMD kernels need.
  bool plane_contiguous() const noexcept { return strides_.w == 1 && strides_.h == shape_.w; }
  bool contiguous() const noexcept { return strides_ == strides4::packed(shape_); }

  // Start of the H x W plane of image `n`, channel `c`.
  T* plane_ptr(index_t n, index_t c) const noexcept { return data_ + n * strides_.n + c * strides_.c; }

  T& operator()(index_t n, index_t c, index_t h, index_t w) const noexcept {
    return data_[n * strides_.n + c * strides_.c + h * strides_.h + w * strides_.w];
  }

  // Channels [first, first + count) of every image.
  tensor_view channels(index_t first, index_t count) const {
    check_arg(first >= 0 && count > 0 && first + count <= shape_.c, "tensor_view::channels", "first, count",
              detail::concat("a range inside [0, ", shape_.c, ")"),
              detail::concat("[", first, ", ", first + count, ")"));
    tensor_view v = *this;
    v.data_ = data_ + first * strides_.c;
    v.shape_.c = count;
    return v;
  }

  // Images [first, first + count).
  tensor_view images(index_t first, index_t count) const {
    check_arg(first >= 0 && count > 0 && first + count <= shape_.n, "tensor_view::images", "first, count",
              detail::concat("a range inside [0, ", shape_.n, ")"),
              detail::concat("[", first, ", ", first + count, ")"));
    tensor_view v = *this;
    v.data_ = data_ + first * strides_.n;
    v.shape_.n = count;
    return v;
  }

  // The lowest and one-past-highest addresses the view can reach (for aliasing checks).
  const value_type* begin_address() const noexcept { return data_; }
  const value_type* end_address() const noexcept {
    return data_ + (shape_.n - 1) * strides_.n + (shape_.c - 1) * strides_.c + (shape_.h - 1) * strides_.h +
           (shape_.w - 1) * strides_.w + 1;
  }

 private:
  T* data_ = nullptr;
  shape4 shape_{};
  strides4 strides_{};
};

// A contiguous per-channel vector (gamma, beta, running statistics, ...).
template <class T>
class vector_view {
 public:
  using element_type = T;
  vector_view() = default;
  vector_view(T* data, index_t size) : data_(data), size_(size) {
    check_arg(size >= 0, "vector_view", "size", ">= 0", size);
    check_arg(size == 0 || data != nullptr, "vector_view", "data", "non-null pointer for a non-empty vector",
              "nullptr");
  }
  template <class U, class = std::enable_if_t<std::is_same_v<T, const U>>>
  vector_view(const vector_view<U>& other) noexcept : data_(other.data()), size_(other.size()) {}

  T* data() const noexcept { return data_; }
  index_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  T& operator[](index_t i) const noexcept { return data_[i]; }
  T* begin() const noexcept { return data_; }
  T* end() const noexcept { return data_ + size_; }

  vector_view subview(index_t first, index_t count) const {
    check_arg(first >= 0 && count >= 0 && first + count <= size_, "vector_view::subview", "first, count",
              detail::concat("a range inside [0, ", size_, "]"), detail::concat("[", first, ", ", first + count, ")"));
    return vector_view(data_ + first, count);
  }

 private:
  T* data_ = nullptr;
  index_t size_ = 0;
};

// Do two address ranges [a0, a1) and [b0, b1) share any byte?
template <class T, class U>
bool ranges_overlap(const T* a0, const T* a1, const U* b0, const U* b1) noexcept {
  auto pa0 = reinterpret_cast<const char*>(a0), pa1 = reinterpret_cast<const char*>(a1);
  auto pb0 = reinterpret_cast<const char*>(b0), pb1 = reinterpret_cast<const char*>(b1);
  return pa0 < pb1 && pb0 < pa1;
}

// Can two views reach a common element? Compared image by image, so channel
// slices of one concatenation buffer (interleaved in memory) count as disjoint.
template <class T, class U>
bool overlaps(const tensor_view<T>& a, const tensor_view<U>& b) noexcept {
  if (a.empty() || b.empty()) return false;
  if (!ranges_overlap(a.begin_address(), a.end_address(), b.begin_address(), b.end_address())) return false;
  const auto a_img = a.images(0, 1), b_img = b.images(0, 1);
  const index_t a_len = a_img.end_address() - a_img.begin_address();
  const index_t b_len = b_img.end_address() - b_img.begin_address();
  for (index_t i = 0; i < a.n(); ++i) {
    const auto* a0 = a.begin_address() + i * a.strides().n;
    for (index_t j = 0; j < b.n(); ++j) {
      const auto* b0 = b.begin_address() + j * b.strides().n;
      if (ranges_overlap(a0, a0 + a_len, b0, b0 + b_len)) return true;
    }
  }
  return false;
}

}  // namespace bnff
