// bnff: moments of one contiguous block, computed while it is in cache.
#pragma once

#include <xsimd/xsimd.hpp>

#include "bnff/config.hpp"
#include "bnff/simd/fma.hpp"
#include "bnff/simd/for_each_lanes.hpp"
#include "bnff/simd/prefetch.hpp"
#include "bnff/simd/reduce_add.hpp"
#include "bnff/stats/moments.hpp"

namespace bnff {

namespace detail {

// Batches summed in T before the partial sums are flushed into double. With
// four accumulators each float lane of pass 2 adds at most 16 values: a relative
// error of ~1e-6 in the worst case, and the flush keeps it from growing with len.
constexpr index_t moments_flush_batches = 64;

// Independent accumulators per pass, enough to keep two vector units busy
// through the add/FMA latency: pass 1 issues one add per batch and needs 8,
// pass 2 issues three operations per batch and needs 4 (2 x 4 registers).
constexpr int moments_unroll_sum = 8;
constexpr int moments_unroll_dev = 4;

template <class T, class Arch, std::size_t U>
BNFF_ALWAYS_INLINE xsimd::batch<T, Arch> tree_sum(const xsimd::batch<T, Arch> (&a)[U]) noexcept {
  static_assert(U == 4 || U == 8, "a fixed pairwise tree for 4 or 8 accumulators");
  if constexpr (U == 8)
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
  else
    return (a[0] + a[1]) + (a[2] + a[3]);
}

// The moments from the shift and the sums of d = x - shift: shared by every
// path, so they all end in the same bits.
inline moments shifted_moments(index_t len, double shift, double sum_d, double sum_d2) noexcept {
  const double n = double(len);
  double m2 = sum_d2 - rounded(sum_d * (sum_d / n));  // never contracted: same bits everywhere
  if (m2 < 0) m2 = 0;                                 // rounding only; a NaN fails the test and stays NaN
  return {n, shift + sum_d / n, m2};
}

// Blocks of at most this many batches (a 7 x 7 plane in float on AVX-512)
// take a path that keeps them in registers between the two passes: small
// blocks are bound by the latency of the reductions, not by the adds.
constexpr index_t moments_register_batches = 4;

// block_moments for 0 < len <= moments_register_batches * W: the same two
// passes and final formula, the loads done once, no loops, shorter trees.
template <class T, class Arch>
moments block_moments_in_registers(const T* x, index_t len) noexcept {
  using batch = xsimd::batch<T, Arch>;
  constexpr index_t w = index_t(batch::size), k = moments_register_batches;
  batch v[k], d[k];
  for (index_t i = 0; i < k; ++i) {
    const index_t left = len - i * w;
    v[i] = left >= w ? batch::load_unaligned(x + i * w)
                     : (left > 0 ? simd::load_partial<Arch>(x + i * w, left, T(0)) : batch(T(0)));
  }
  const double n = double(len);
  const T shift = T(double(simd::reduce_add((v[0] + v[1]) + (v[2] + v[3]))) * (1.0 / n));
  const batch vshift(shift);
  for (index_t i = 0; i < k; ++i) {
    const index_t left = len - i * w;
    // Padded lanes of the tail reload as `shift`: their d is 0.
    d[i] = left >= w ? v[i] - vshift
                     : (left > 0 ? simd::load_partial<Arch>(x + i * w, left, shift) - vshift : batch(T(0)));
  }
  const double sum_d = simd::reduce_add_double((d[0] + d[1]) + (d[2] + d[3]));
  const double sum_d2 =
      simd::reduce_add_double(simd::fma(d[0], d[0], d[1] * d[1]) + simd::fma(d[2], d[2], d[3] * d[3]));
  return shifted_moments(len, double(shift), sum_d, sum_d2);
}

// Blocks longer than this take the two-pass path below; shorter ones stay in registers.
template <class T, class Arch>
constexpr index_t moments_register_len = moments_register_batches* index_t(xsimd::batch<T, Arch>::size);

// Pass 1 of block_moments for len > moments_register_len: the shift. Each
// chunk's sum is reduced in T (it only has to land near the mean) and the
// chunks are added in double, so length does not matter.
template <class T, class Arch>
T block_shift(const T* x, index_t len) noexcept {
  using batch = xsimd::batch<T, Arch>;
  constexpr index_t chunk = moments_flush_batches * index_t(batch::size);
  double sum = 0;
  for (index_t c0 = 0; c0 < len; c0 += chunk) {
    const T* p = x + c0;
    batch a[moments_unroll_sum];
    for (auto& v : a) v = batch(T(0));
    simd::for_each_lanes<T, Arch, moments_unroll_sum>(len - c0 < chunk ? len - c0 : chunk,
                                                      [&](auto lanes, auto s) { a[s] += lanes.load(p, T(0)); });
    sum += double(simd::reduce_add(tree_sum(a)));
  }
  return T(sum * (1.0 / double(len)));  // near the mean is enough: no division on the critical path
}

// Pass 2 of block_moments for len > moments_register_len: deviations from the
// shift, accumulated in T per chunk, flushed into double, and the moments.
// Separate from pass 1 so a sweep can run pass 1 on the next blocks (streaming
// them in) before pass 2 of the previous ones (from cache): the same bits.
template <class T, class Arch>
moments block_moments_shifted(const T* x, index_t len, T shift) noexcept {
  using batch = xsimd::batch<T, Arch>;
  constexpr index_t chunk = moments_flush_batches * index_t(batch::size);
  const batch vshift(shift);
  double sum_d = 0, sum_d2 = 0;
  for (index_t c0 = 0; c0 < len; c0 += chunk) {
    const T* p = x + c0;
    batch a[moments_unroll_dev], q[moments_unroll_dev];
    for (int i = 0; i < moments_unroll_dev; ++i) a[i] = q[i] = batch(T(0));
    // Padded lanes load `shift`, so their d is 0 and they add nothing.
    simd::for_each_lanes<T, Arch, moments_unroll_dev>(len - c0 < chunk ? len - c0 : chunk, [&](auto lanes, auto s) {
      const batch d = lanes.load(p, shift) - vshift;
      a[s] += d;
      q[s] = simd::fma(d, d, q[s]);
    });
    sum_d += simd::reduce_add_double(tree_sum(a));
    sum_d2 += simd::reduce_add_double(tree_sum(q));
  }
  return shifted_moments(len, shift, sum_d, sum_d2);
}

// Two blocks of the same length at once: pass 1 and pass 2 above, run on x
// and y in one loop, each with exactly the chunks, slots and order of the
// single-block functions, so the bits equal two separate calls. Two
// independent streams keep more cache-line misses in flight than one: a
// sweep over main memory on one core was about 15% faster this way.
//
// Made for a sweep that reads on past the block (batch_norm_stats reads the
// next plane of each stream next), both passes prefetch ahead of their loads:
// pass 1 2 KiB ahead, which keeps more misses in flight than the hardware
// prefetcher alone; pass 2, which rereads the block from cache, 8 KiB ahead,
// so memory keeps streaming the next plane meanwhile instead of idling.
// Measured on 16x256x56x56 float, one thread: 12.2 GB/s without either,
// 13.3 GB/s with pass 1's, 14.4 GB/s with both (read ceiling 16.7-17 GB/s).
// Prefetches are hints: past the end of the data they do nothing.
template <class T>
constexpr index_t pair_pass1_ahead = index_t(2048 / sizeof(T));
template <class T>
constexpr index_t pair_pass2_ahead = index_t(8192 / sizeof(T));
template <class T, class Arch>
void block_shift_pair(const T* x, const T* y, index_t len, T& shift_x, T& shift_y) noexcept {
  using batch = xsimd::batch<T, Arch>;
  constexpr index_t chunk = moments_flush_batches * index_t(batch::size);
  double sum_x = 0, sum_y = 0;
  for (index_t c0 = 0; c0 < len; c0 += chunk) {
    const T *p = x + c0, *q = y + c0;
    batch a[moments_unroll_sum], b[moments_unroll_sum];
    for (int i = 0; i < moments_unroll_sum; ++i) a[i] = b[i] = batch(T(0));
    simd::for_each_lanes<T, Arch, moments_unroll_sum>(len - c0 < chunk ? len - c0 : chunk, [&](auto lanes, auto s) {
      simd::prefetch_ahead(p, lanes.offset + pair_pass1_ahead<T>);
      simd::prefetch_ahead(q, lanes.offset + pair_pass1_ahead<T>);
      a[s] += lanes.load(p, T(0));
      b[s] += lanes.load(q, T(0));
    });
    sum_x += double(simd::reduce_add(tree_sum(a)));
    sum_y += double(simd::reduce_add(tree_sum(b)));
  }
  shift_x = T(sum_x * (1.0 / double(len)));
  shift_y = T(sum_y * (1.0 / double(len)));
}

template <class T, class Arch>
void block_moments_shifted_pair(const T* x, const T* y, index_t len, T shift_x, T shift_y, moments& out_x,
                                moments& out_y) noexcept {
  using batch = xsimd::batch<T, Arch>;
  constexpr index_t chunk = moments_flush_batches * index_t(batch::size);
  const batch vx(shift_x), vy(shift_y);
  double sx = 0, sx2 = 0, sy = 0, sy2 = 0;
  for (index_t c0 = 0; c0 < len; c0 += chunk) {
    const T *p = x + c0, *q = y + c0;
    batch a[moments_unroll_dev], aq[moments_unroll_dev], b[moments_unroll_dev], bq[moments_unroll_dev];
    for (int i = 0; i < moments_unroll_dev; ++i) a[i] = aq[i] = b[i] = bq[i] = batch(T(0));
    simd::for_each_lanes<T, Arch, moments_unroll_dev>(len - c0 < chunk ? len - c0 : chunk, [&](auto lanes, auto s) {
      simd::prefetch_ahead(p, lanes.offset + pair_pass2_ahead<T>);
      simd::prefetch_ahead(q, lanes.offset + pair_pass2_ahead<T>);
      const batch d = lanes.load(p, shift_x) - vx;
      const batch e = lanes.load(q, shift_y) - vy;
      a[s] += d;
      aq[s] = simd::fma(d, d, aq[s]);
      b[s] += e;
      bq[s] = simd::fma(e, e, bq[s]);
    });
    sx += simd::reduce_add_double(tree_sum(a));
    sx2 += simd::reduce_add_double(tree_sum(aq));
    sy += simd::reduce_add_double(tree_sum(b));
    sy2 += simd::reduce_add_double(tree_sum(bq));
  }
  out_x = shifted_moments(len, shift_x, sx, sx2);
  out_y = shifted_moments(len, shift_y, sy, sy2);
}

}  // namespace detail

// (count, mean, M2) of x[0, len). Two passes over the block, both from cache:
//   pass 1: shift = mean estimate (SIMD sum per chunk, chunks added in double);
//   pass 2: d = x - shift, sum(d) and sum(d^2), flushed into double;
//   mean = shift + sum(d)/len,  M2 = sum(d^2) - sum(d)^2/len.
// Blocks of up to four batches are loaded once and kept in registers.
// d is exact in T (Sterbenz) where x is near the mean, so no digits cancel
// however large |mean| / std is, and a constant block gives M2 exactly 0.
// NaN or infinity anywhere gives a NaN mean and M2. Deterministic: the bits
// depend on the values, len and Arch only (not on the address or alignment),
// which is what lets a convolution epilogue reproduce the standalone kernel.
template <class T, class Arch = xsimd::default_arch>
moments block_moments(const T* x, index_t len) noexcept {
  if (len <= 0) return {};
  if (len <= detail::moments_register_len<T, Arch>) return detail::block_moments_in_registers<T, Arch>(x, len);
  return detail::block_moments_shifted<T, Arch>(x, len, detail::block_shift<T, Arch>(x, len));
}

}  // namespace bnff
