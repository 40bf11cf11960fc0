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
// four accumulators each float lane adds at most 16 values: a relative error
// of ~1e-6 in the worst case, and the flush keeps it from growing with len.
constexpr index_t moments_flush_batches = 64;

// Independent accumulators of the sweep, enough to keep two vector units busy
// through the add/FMA latency: three operations per batch (2 x 4 registers).
constexpr int moments_unroll_dev = 4;

template <class T, class Arch>
BNFF_ALWAYS_INLINE xsimd::batch<T, Arch> tree_sum(const xsimd::batch<T, Arch> (&a)[4]) noexcept {
  return (a[0] + a[1]) + (a[2] + a[3]);  // a fixed pairwise tree
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

// Blocks longer than this take the sweep below; shorter ones stay in registers.
template <class T, class Arch>
constexpr index_t moments_register_len = moments_register_batches* index_t(xsimd::batch<T, Arch>::size);

// The first shift of a block longer than moments_register_len: the mean of its
// first moments_register_batches batches (64 floats on AVX-512, 16 on SSE),
// each batch summed in double (exact for a constant block, no overflow).
template <class T, class Arch>
BNFF_ALWAYS_INLINE T first_batches_shift(const T* x) noexcept {
  using batch = xsimd::batch<T, Arch>;
  constexpr index_t w = index_t(batch::size);
  static_assert(moments_register_batches == 4, "the sum below takes four batches");
  const double s =
      (simd::reduce_add_double(batch::load_unaligned(x)) + simd::reduce_add_double(batch::load_unaligned(x + w))) +
      (simd::reduce_add_double(batch::load_unaligned(x + 2 * w)) +
       simd::reduce_add_double(batch::load_unaligned(x + 3 * w)));
  return T(s * (1.0 / double(4 * w)));
}

// Whether moments taken about `shift` must be taken again about their mean:
// when the shift lies more than one standard deviation from the mean,
// (mean - shift)^2 > M2 / n. Then sum(d^2) is more than twice M2 and the
// rounding of the float sums, relative to sum(d^2), would grow by more than 2
// relative to M2. False for NaN (it stays NaN) and for a constant block.
inline bool off_centre(const moments& m, double shift) noexcept {
  const double off = m.mean - shift;
  return off * off * m.count > m.m2;
}

// Deviations from `shift`, accumulated in T per chunk, flushed into double, and
// the moments. Ahead > 0 asks for the cache line Ahead elements past each load
// (a sweep over main memory); the bits do not depend on it.
template <class T, class Arch, index_t Ahead = 0>
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
      if constexpr (Ahead > 0) simd::prefetch_ahead(p, lanes.offset + Ahead);
      const batch d = lanes.load(p, shift) - vshift;
      a[s] += d;
      q[s] = simd::fma(d, d, q[s]);
    });
    sum_d += simd::reduce_add_double(tree_sum(a));
    sum_d2 += simd::reduce_add_double(tree_sum(q));
  }
  return shifted_moments(len, shift, sum_d, sum_d2);
}

// The moments block_moments settles on, given m taken about `shift`: m, or,
// where that was off centre, the block swept again (from cache) about its mean.
template <class T, class Arch>
BNFF_ALWAYS_INLINE moments settled_moments(const T* x, index_t len, T shift, const moments& m) noexcept {
  return off_centre(m, double(shift)) ? block_moments_shifted<T, Arch>(x, len, T(m.mean)) : m;
}

// The shift block_moments settles on for len > moments_register_len: the
// first batches' mean, or the block's mean where that is off centre. A sweep
// that takes the moments later (the unfused variance pass) gets block_moments'
// bits from block_moments_shifted about this shift.
template <class T, class Arch>
T block_shift(const T* x, index_t len) noexcept {
  const T s = first_batches_shift<T, Arch>(x);
  const moments m = block_moments_shifted<T, Arch>(x, len, s);
  return off_centre(m, double(s)) ? T(m.mean) : s;
}

// block_moments for len > moments_register_len: one sweep about the first
// batches' mean, and a second one, from cache, about the block's mean only
// where the first was off centre (the first batches' mean would have to sit a
// standard deviation away from the block's; for independent values, 8 of their
// standard errors on AVX-512 and 4 on SSE).
template <class T, class Arch, index_t Ahead = 0>
moments block_moments_swept(const T* x, index_t len) noexcept {
  const T s = first_batches_shift<T, Arch>(x);
  return settled_moments<T, Arch>(x, len, s, block_moments_shifted<T, Arch, Ahead>(x, len, s));
}

// Elements ahead of each load that a sweep over main memory prefetches: 2 KiB
// keeps more cache-line misses in flight than the hardware prefetcher alone.
template <class T>
constexpr index_t sweep_prefetch_ahead = index_t(2048 / sizeof(T));

// Two blocks of the same length at once, x and y: block_moments_swept of each,
// the first sweeps of both in one loop, each with exactly the chunks, slots
// and order of the single-block function, so the bits equal two separate
// calls. Two independent streams from main memory keep more cache-line misses
// in flight than one (a sweep over 16x256x56x56 float on one core was about 15%
// faster this way), and both prefetch sweep_prefetch_ahead past their loads.
// Prefetches are hints: past the end of the data they do nothing.
template <class T, class Arch>
void block_moments_pair(const T* x, const T* y, index_t len, moments& out_x, moments& out_y) noexcept {
  using batch = xsimd::batch<T, Arch>;
  constexpr index_t chunk = moments_flush_batches * index_t(batch::size), ahead = sweep_prefetch_ahead<T>;
  const T shift_x = first_batches_shift<T, Arch>(x), shift_y = first_batches_shift<T, Arch>(y);
  const batch vx(shift_x), vy(shift_y);
  double sx = 0, sx2 = 0, sy = 0, sy2 = 0;
  for (index_t c0 = 0; c0 < len; c0 += chunk) {
    const T *p = x + c0, *q = y + c0;
    batch a[moments_unroll_dev], aq[moments_unroll_dev], b[moments_unroll_dev], bq[moments_unroll_dev];
    for (int i = 0; i < moments_unroll_dev; ++i) a[i] = aq[i] = b[i] = bq[i] = batch(T(0));
    simd::for_each_lanes<T, Arch, moments_unroll_dev>(len - c0 < chunk ? len - c0 : chunk, [&](auto lanes, auto s) {
      simd::prefetch_ahead(p, lanes.offset + ahead);
      simd::prefetch_ahead(q, lanes.offset + ahead);
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
  out_x = settled_moments<T, Arch>(x, len, shift_x, shifted_moments(len, shift_x, sx, sx2));
  out_y = settled_moments<T, Arch>(y, len, shift_y, shifted_moments(len, shift_y, sy, sy2));
}

}  // namespace detail

// (count, mean, M2) of x[0, len), in one sweep over the block:
//   shift = the mean of the first four SIMD batches (in double);
//   d = x - shift, sum(d) and sum(d^2) in T per chunk, flushed into double;
//   mean = shift + sum(d)/len,  M2 = sum(d^2) - sum(d)^2/len;
// and, only if the shift was more than a standard deviation from that mean, a
// second sweep (from cache) with shift = mean. A sweep over main memory thus
// reads each block once and computes as it reads, where a mean pass before the
// deviation pass would leave memory idle during one of them. Either way the
// shift ends within a standard deviation of the mean, so sum(d^2) < 2 M2 and
// the float rounding stays relative to the variance, however large |mean| /
// std is (d is exact in T by Sterbenz where x is near the shift), and a
// constant block gives M2 exactly 0. Blocks of up to four batches are loaded
// once and kept in registers (two passes there: the exact mean of the block
// first). NaN anywhere gives a NaN M2 and mean; infinity a NaN M2 and a
// non-finite mean. Deterministic: the bits depend on the values, len and Arch
// only (not on the address or alignment), which is what lets a convolution
// epilogue reproduce the standalone kernel.
template <class T, class Arch = xsimd::default_arch>
moments block_moments(const T* x, index_t len) noexcept {
  if (len <= 0) return {};
  if (len <= detail::moments_register_len<T, Arch>) return detail::block_moments_in_registers<T, Arch>(x, len);
  return detail::block_moments_swept<T, Arch>(x, len);
}

}  // namespace bnff
