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

// Ask for the cache line `elements` elements past p. A hint: the address may lie
// past the end of the data (it is formed as an integer, never dereferenced).
template <class T>
BNFF_ALWAYS_INLINE void prefetch_ahead(const T* p, index_t elements) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(p) +
                                                   std::uintptr_t(elements) * sizeof(T)),
                     0, 3);
#else
  (void)p, (void)elements;
#endif
}

}  // namespace bnff::simd
