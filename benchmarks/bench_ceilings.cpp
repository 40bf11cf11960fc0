// Roofline ceilings measured in the same run as the kernels: DRAM read, copy
// and triad over buffers far larger than the last-level cache, so every report
// carries the bandwidth its memory-bound kernels are judged against.
//
// Each ceiling is the fastest loop found for its access pattern, not a typical
// one, so "% of ceiling" is a demanding figure:
// - read: two interleaved streams per task plus a software prefetch 2 KiB ahead
//   keep more cache-line misses in flight than the hardware prefetcher alone
//   (about 10-17% over a single plain stream on the reference machine);
// - copy and triad: non-temporal stores, which skip the read-for-ownership of
//   the destination (a plain store moves 3 bytes per 2 counted for copy, 4 per 3
//   for triad) and were 35-40% faster than plain stores there; two interleaved
//   streams per task, as for read (30-50% faster than one for copy).
// Bytes counted are the bytes the loop must move: read n, copy 2n, triad 3n.
#include <xsimd/xsimd.hpp>

#include <memory>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "bench_common.hpp"
#include "bnff/simd/fma.hpp"

namespace {

using bnff::index_t;
using batch = xsimd::batch<float>;
constexpr index_t kWidth = index_t(batch::size);

// 512 MiB per array: larger than the last-level cache the (virtual) CPU
// reports and four times the largest size that still ran at cache speed.
constexpr index_t kFloats = index_t(128) << 20;
// Work is cut into 16 KiB blocks so that every task range is 64-byte aligned.
constexpr index_t kBlock = 4096;
constexpr index_t kTasks = 64;

// Three arrays shared by the ceilings (triad's a, b, c), each made on first
// use and kept: a run of one ceiling allocates only what it needs.
float* pool(int array) {
  static std::unique_ptr<bnff::bench::buffer<float>> arrays[3];
  if (!arrays[array]) arrays[array] = std::make_unique<bnff::bench::buffer<float>>(std::size_t(kFloats), 1.0f);
  return arrays[array]->data();
}

bnff::index_range task_range(index_t t) {
  const auto blocks = bnff::split_range(kFloats / kBlock, kTasks, t);
  return {blocks.begin * kBlock, blocks.end * kBlock};
}

// Escape hatch: xsimd 8 has no streaming store. Falls back to a cached store
// where the instruction set is unknown. p must be aligned to the batch size.
BNFF_ALWAYS_INLINE void stream_store(float* p, const batch& v) {
#if defined(__AVX512F__)
  static_assert(sizeof(batch) == 64, "xsimd's default arch is AVX-512 when __AVX512F__ is set");
  _mm512_stream_ps(p, v);
#elif defined(__AVX__)
  static_assert(sizeof(batch) == 32, "xsimd's default arch is AVX when __AVX__ is set");
  _mm256_stream_ps(p, v);
#elif defined(__SSE2__)
  static_assert(sizeof(batch) == 16, "xsimd's default arch is SSE on x86-64");
  _mm_stream_ps(p, v);
#else
  v.store_aligned(p);
#endif
}

// Streaming stores are weakly ordered: fence before the results are consumed.
void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// Sum of [p, p + n), n a multiple of 4 * kWidth: the two halves are read as two
// interleaved streams, four accumulators hide the add latency.
float read_sum(const float* BNFF_RESTRICT p, index_t n) {
  const index_t half = n / 2;
  const float* q = p + half;
  constexpr index_t ahead = 512;  // floats (2 KiB) of software prefetch per stream
  batch a0(0.f), a1(0.f), b0(0.f), b1(0.f);
  for (index_t i = 0; i < half; i += 2 * kWidth) {
    __builtin_prefetch(p + i + ahead);
    __builtin_prefetch(q + i + ahead);
    a0 += batch::load_aligned(p + i);
    a1 += batch::load_aligned(p + i + kWidth);
    b0 += batch::load_aligned(q + i);
    b1 += batch::load_aligned(q + i + kWidth);
  }
  return xsimd::hadd((a0 + a1) + (b0 + b1));
}

// dst = src, n a multiple of 4 * kWidth: the two halves as two interleaved
// streams, like read_sum (one stream of non-temporal stores was 30-50% slower).
void copy_stream(float* BNFF_RESTRICT dst, const float* BNFF_RESTRICT src, index_t n) {
  const index_t half = n / 2;
  for (index_t i = 0; i < half; i += 2 * kWidth) {
    // All four loads before the four stores: the loads of both streams issue together.
    const batch x0 = batch::load_aligned(src + i), x1 = batch::load_aligned(src + i + kWidth);
    const batch y0 = batch::load_aligned(src + half + i), y1 = batch::load_aligned(src + half + i + kWidth);
    stream_store(dst + i, x0);
    stream_store(dst + i + kWidth, x1);
    stream_store(dst + half + i, y0);
    stream_store(dst + half + i + kWidth, y1);
  }
}

// a = b + s * c (STREAM's triad), n a multiple of 4 * kWidth, the two halves
// as two interleaved streams.
void triad_stream(float* BNFF_RESTRICT a, const float* BNFF_RESTRICT b, const float* BNFF_RESTRICT c, float s,
                  index_t n) {
  const batch vs(s);
  const index_t half = n / 2;
  for (index_t i = 0; i < half; i += 2 * kWidth) {
    const index_t j = half + i;
    const batch r0 = bnff::simd::fma(vs, batch::load_aligned(c + i), batch::load_aligned(b + i));
    const batch r1 = bnff::simd::fma(vs, batch::load_aligned(c + i + kWidth), batch::load_aligned(b + i + kWidth));
    const batch r2 = bnff::simd::fma(vs, batch::load_aligned(c + j), batch::load_aligned(b + j));
    const batch r3 = bnff::simd::fma(vs, batch::load_aligned(c + j + kWidth), batch::load_aligned(b + j + kWidth));
    stream_store(a + i, r0);
    stream_store(a + i + kWidth, r1);
    stream_store(a + j, r2);
    stream_store(a + j + kWidth, r3);
  }
}

void ceiling_read(benchmark::State& state) {
  bnff::bench::use_threads(state);
  const float* a = pool(0);
  for (auto _ : state) {
    float part[kTasks];
    bnff::parallel_for(kTasks, [&](index_t t) {
      const auto r = task_range(t);
      part[t] = read_sum(a + r.begin, r.size());
    });
    float sum = 0;
    for (float x : part) sum += x;
    benchmark::DoNotOptimize(sum);
  }
  bnff::bench::set_counters(state, double(kFloats) * sizeof(float));
}

void ceiling_copy(benchmark::State& state) {
  bnff::bench::use_threads(state);
  const float* a = pool(0);
  float* b = pool(1);
  for (auto _ : state) {
    bnff::parallel_for(kTasks, [&](index_t t) {
      const auto r = task_range(t);
      copy_stream(b + r.begin, a + r.begin, r.size());
      stream_fence();
    });
    benchmark::ClobberMemory();
  }
  bnff::bench::set_counters(state, 2.0 * double(kFloats) * sizeof(float));
}

void ceiling_triad(benchmark::State& state) {
  bnff::bench::use_threads(state);
  float* a = pool(2);
  const float *b = pool(0), *c = pool(1);
  for (auto _ : state) {
    bnff::parallel_for(kTasks, [&](index_t t) {
      const auto r = task_range(t);
      triad_stream(a + r.begin, b + r.begin, c + r.begin, 0.5f, r.size());
      stream_fence();
    });
    benchmark::ClobberMemory();
  }
  // Two flops per element (the fma), so the roofline can place it too.
  bnff::bench::set_counters(state, 3.0 * double(kFloats) * sizeof(float), 2.0 * double(kFloats));
}

// One iteration moves 0.5-1.5 GiB (30-100 ms): the run-wide minimum time (0.3 s,
// 0.1 s with --quick) gives each a few iterations.

const int registered = bnff::bench::register_family([](const bnff::bench::options&) {
  bnff::bench::add("ceiling_read", "ceiling", "512MiB", ceiling_read);
  bnff::bench::add("ceiling_copy", "ceiling", "512MiB", ceiling_copy);
  bnff::bench::add("ceiling_triad", "ceiling", "512MiB", ceiling_triad);
});

}  // namespace
