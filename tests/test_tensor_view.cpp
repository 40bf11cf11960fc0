#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "bnff/tensor/tensor_view.hpp"

using bnff::shape4;
using bnff::strides4;
using bnff::tensor_view;

namespace {
// The message of the bnff::error that f throws ("" if none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const bnff::error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("tensor_view: packed NCHW indexing", "[tensor]") {
  std::vector<float> buf(2 * 3 * 4 * 5);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = float(i);
  tensor_view<float> t(buf.data(), 2, 3, 4, 5);
  CHECK(t.contiguous());
  CHECK(t.plane_contiguous());
  CHECK(t.strides() == strides4{60, 20, 5, 1});
  CHECK(t(1, 2, 3, 4) == float(60 + 40 + 15 + 4));
  CHECK(t.plane_ptr(1, 1) == buf.data() + 80);
  CHECK(t.size() == 120);
}

TEST_CASE("tensor_view: channel slices of a concatenation buffer", "[tensor]") {
  std::vector<float> buf(2 * 8 * 3 * 3, 0.0f);
  tensor_view<float> concat(buf.data(), 2, 8, 3, 3);
  auto slice = concat.channels(5, 3);
  CHECK(slice.c() == 3);
  CHECK(slice.strides().n == 8 * 9);  // the parent's batch stride, not 3 * 9
  CHECK(!slice.contiguous());
  CHECK(slice.plane_contiguous());
  slice(1, 0, 2, 2) = 7.0f;
  CHECK(buf[std::size_t(1 * 72 + 5 * 9 + 8)] == 7.0f);
  // Slices of slices compose.
  auto inner = slice.channels(1, 2);
  CHECK(inner.plane_ptr(0, 0) == buf.data() + 6 * 9);
  // const view from mutable view
  tensor_view<const float> cv = slice;
  CHECK(cv(1, 0, 2, 2) == 7.0f);
}

TEST_CASE("tensor_view: images and overlap", "[tensor]") {
  std::vector<double> buf(4 * 6 * 2 * 2);
  tensor_view<double> t(buf.data(), 4, 6, 2, 2);
  auto img = t.images(2, 2);
  CHECK(img.n() == 2);
  CHECK(img.plane_ptr(0, 0) == buf.data() + 2 * 24);
  // Interleaved channel slices of one buffer do not share elements.
  CHECK_FALSE(bnff::overlaps(t.channels(0, 3), t.channels(3, 3)));
  CHECK(bnff::overlaps(t.channels(0, 4), t.channels(3, 3)));
  CHECK(bnff::overlaps(t, t.channels(5, 1)));
  CHECK_FALSE(bnff::overlaps(t.images(0, 2), t.images(2, 2)));
}

TEST_CASE("tensor_view: misuse raises bnff::error naming the argument", "[tensor][errors]") {
  std::vector<float> buf(64);
  SECTION("zero or negative extents") {
    auto msg = error_of([&] { tensor_view<float>(buf.data(), 1, 0, 2, 2); });
    CHECK(msg == "tensor_view: argument 'shape.c': expected > 0, got 0");
    msg = error_of([&] { tensor_view<float>(buf.data(), -1, 1, 2, 2); });
    CHECK(msg == "tensor_view: argument 'shape.n': expected > 0, got -1");
    CHECK_THROWS_AS(tensor_view<float>(buf.data(), 1, 1, 1, 0), bnff::error);
  }
  SECTION("null data") {
    auto msg = error_of([&] { tensor_view<float>(nullptr, 1, 1, 2, 2); });
    CHECK(msg.find("'data'") != std::string::npos);
    CHECK(msg.find("nullptr") != std::string::npos);
  }
  SECTION("overlapping strides") {
    // Channel stride 2 with a 2x2 plane: channels would share elements.
    auto msg = error_of([&] { tensor_view<float>(buf.data(), shape4{1, 2, 2, 2}, strides4{8, 2, 2, 1}); });
    CHECK(msg.find("argument 'strides.c'") != std::string::npos);
    CHECK(msg.find("expected >= 4") != std::string::npos);
    CHECK_THROWS_AS(tensor_view<float>(buf.data(), shape4{2, 2, 2, 2}, strides4{4, 4, 2, 1}), bnff::error);
    CHECK_THROWS_AS(tensor_view<float>(buf.data(), shape4{1, 1, 2, 2}, strides4{4, 4, 0, 1}), bnff::error);
    // Padded rows and a padded batch stride are fine.
    CHECK_NOTHROW(tensor_view<float>(buf.data(), shape4{2, 2, 2, 2}, strides4{20, 9, 3, 1}));
  }
  SECTION("slices out of range") {
    tensor_view<float> t(buf.data(), 2, 4, 2, 2);
    auto msg = error_of([&] { (void)t.channels(3, 2); });
    CHECK(msg == "tensor_view::channels: argument 'first, count': expected a range inside [0, 4), got [3, 5)");
    CHECK_THROWS_AS(t.channels(-1, 1), bnff::error);
    CHECK_THROWS_AS(t.channels(0, 0), bnff::error);
    CHECK_THROWS_AS(t.images(1, 2), bnff::error);
  }
  SECTION("vector views") {
    CHECK_THROWS_AS(bnff::vector_view<float>(nullptr, 3), bnff::error);
    CHECK_THROWS_AS(bnff::vector_view<float>(buf.data(), -1), bnff::error);
    bnff::vector_view<float> v(buf.data(), 8);
    CHECK(v.subview(2, 3).data() == buf.data() + 2);
    CHECK_THROWS_AS(v.subview(6, 3), bnff::error);
  }
}

TEST_CASE("bnff::error is an invalid_argument", "[errors]") {
  CHECK_THROWS_AS(bnff::check_equal("op", "x.c", 3, 4), std::invalid_argument);
  try {
    bnff::check_equal("op", "x.c", 3, 4);
  } catch (const bnff::error& e) {
    CHECK(std::string(e.what()) == "op: argument 'x.c': expected 3, got 4");
  }
}
