// bnff: prefetch of the next B block while the current one computes.
#pragma once

#include <algorithm>
#include <cstdint>

#include "bnff/config.hpp"
#include "bnff/simd/prefetch.hpp"

namespace bnff::gemm {

// The cache lines the next packing of B will read (`rows` runs of `bytes` bytes,
// `ld` bytes apart), asked for one at a time from inside the microkernel's k loop,
// spread evenly over the current block's k steps. Packing a block straight from
// main memory otherwise stalls the FMAs for as long as the block takes to arrive
// (a quarter of a 1x1 convolution with 64 output channels, in a profile); spread
// out, the lines arrive under the FMAs, a few in flight at a time. The lines go to
// L2, and the packer copies them from there. A hint only: no effect on any result.
struct lookahead {
  static constexpr bool active = true;
  const char* base = nullptr;
  index_t ld = 0, bytes = 0, rows = 0;
  index_t row = 0, off = 0, every = 1, tick = 0;

  lookahead() = default;
  template <class T>
  lookahead(const T* first_row, index_t row_stride, index_t row_elements, index_t row_count) noexcept
      : base(reinterpret_cast<const char*>(first_row)),
        ld(row_stride * index_t(sizeof(T))),
        bytes(row_elements * index_t(sizeof(T))),
        rows(row_count) {}

  // At most this many lines are asked for: a run of `bytes` bytes touches at most
  // bytes / 64 + 2 lines, a partial one at each end.
  index_t lines() const noexcept { return rows * (bytes / simd::cache_line_bytes + 2); }

  // One line every `every` steps, so that the whole stream takes at most `steps` steps.
  void pace(index_t steps) noexcept {
    const index_t n = lines();
    every = n > 0 ? std::max<index_t>(1, steps / n) : 1;
    tick = 0;
  }

  // The line to prefetch at this step (its first byte), or nullptr: not at this step,
  // or the stream is done. Each line of each run, once, in order.
  BNFF_ALWAYS_INLINE const char* next_line() noexcept {
    if (++tick < every || row >= rows) return nullptr;
    tick = 0;
    return take_line();
  }

  // The stream's next line now (not paced); the stream must not be done.
  BNFF_ALWAYS_INLINE const char* take_line() noexcept {
    const std::uintptr_t run = reinterpret_cast<std::uintptr_t>(base + row * ld);
    const std::uintptr_t first = run - run % std::uintptr_t(simd::cache_line_bytes);
    const char* p = reinterpret_cast<const char*>(first + std::uintptr_t(off));
    off += simd::cache_line_bytes;
    if (first + std::uintptr_t(off) >= run + std::uintptr_t(bytes)) off = 0, ++row;
    return p;
  }

  BNFF_ALWAYS_INLINE void step() noexcept {
#if defined(__GNUC__) || defined(__clang__)
    if (const char* p = next_line()) __builtin_prefetch(p, 0, 2);
#endif
  }

  bool done() const noexcept { return row >= rows; }
};

// Two streams paced as one, every line of the first before any of the second: what an
// epilogue will read of the tile being computed (it must be in cache when the tile's
// first rows are final), then the first block the caller packs next. Made from a single
// lookahead, it is that stream alone (gemm_tile's blocks before the last).
struct lookahead_chain {
  static constexpr bool active = true;
  lookahead first, second;
  index_t every = 1, tick = 0;

  lookahead_chain() = default;
  lookahead_chain(const lookahead& only) noexcept : first(only) {}  // NOLINT: implicit on purpose
  lookahead_chain(const lookahead& a, const lookahead& b) noexcept : first(a), second(b) {}

  index_t lines() const noexcept { return first.lines() + second.lines(); }

  void pace(index_t steps) noexcept {
    const index_t n = lines();
    every = n > 0 ? std::max<index_t>(1, steps / n) : 1;
    tick = 0;
  }

  // As lookahead::next_line, over the first stream and then the second.
  BNFF_ALWAYS_INLINE const char* next_line() noexcept {
    if (++tick < every) return nullptr;
    tick = 0;
    return !first.done() ? first.take_line() : !second.done() ? second.take_line() : nullptr;
  }

  BNFF_ALWAYS_INLINE void step() noexcept {
#if defined(__GNUC__) || defined(__clang__)
    if (const char* p = next_line()) __builtin_prefetch(p, 0, 2);
#endif
  }

  bool done() const noexcept { return first.done() && second.done(); }
};

// No lookahead: the microkernel's k loop as it is.
struct no_lookahead {
  static constexpr bool active = false;
  BNFF_ALWAYS_INLINE void step() noexcept {}
};

}  // namespace bnff::gemm
