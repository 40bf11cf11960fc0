// bnff: software prefetch of a byte range into the caches.
#pragma once

#include <cstdint>

#include "bnff/config.hpp"

namespace bnff::simd {

constexpr index_t cache_line_bytes = 64;

// Ask for the cache lines of [p, p + bytes) ahead of a read. A hint only: no
// fault, no effect on results.
BNFF_ALWAYS_INLINE void prefetch_lines(const void* p, index_t bytes) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  const char* c = static_cast<const char*>(p);
  const char* end = c + bytes;
  c -= std::uintptr_t(c) % std::uintptr_t(cache_line_bytes);
  for (; c < end; c += cache_line_bytes) __builtin_prefetch(c, 0, 3);
#else
  (void)p, (void)bytes;
#endif
}

}  // namespace bnff::simd
