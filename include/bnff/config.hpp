// bnff: version and configuration macros.
#pragma once

#define BNFF_VERSION_MAJOR 0
#define BNFF_VERSION_MINOR 1
#define BNFF_VERSION_PATCH 0
#define BNFF_VERSION (BNFF_VERSION_MAJOR * 10000 + BNFF_VERSION_MINOR * 100 + BNFF_VERSION_PATCH)

#include <cstddef>

#if defined(__GNUC__) || defined(__clang__)
#define BNFF_ALWAYS_INLINE inline __attribute__((always_inline))
#define BNFF_RESTRICT __restrict__
#else
#define BNFF_ALWAYS_INLINE inline
#define BNFF_RESTRICT
#endif

namespace bnff {

// Signed extents and strides, as in std::mdspan's common usage: differences of
// indices are meaningful and loops count down without wrap-around surprises.
using index_t = std::ptrdiff_t;

struct version_info {
  int major, minor, patch;
};
constexpr version_info version() noexcept { return {BNFF_VERSION_MAJOR, BNFF_VERSION_MINOR, BNFF_VERSION_PATCH}; }

}  // namespace bnff
