// Roofline ceilings measured in the same run as the kernels: DRAM read, copy
// and triad over buffers far larger than L3.
#include <numeric>

#include "bench_common.hpp"

namespace {

using bnff::index_t;
constexpr std::size_t kFloats = std::size_t(64) << 20;  // 256 MiB per buffer

void ceiling_read(benchmark::State& state) {
  bnff::bench::use_threads(state);
  static bnff::bench::buffer<float> a(kFloats, 1.0f);
  const index_t tasks = 64;
  for (auto _ : state) {
    float part[64];
    bnff::parallel_for(tasks, [&](index_t t) {
      const auto r = bnff::split_range(index_t(kFloats), tasks, t);
      float s0 = 0, s1 = 0, s2 = 0, s3 = 0;  // four chains hide the add latency
      const float* p = a.data();
      index_t i = r.begin;
      for (; i + 4 <= r.end; i += 4) s0 += p[i], s1 += p[i + 1], s2 += p[i + 2], s3 += p[i + 3];
      for (; i < r.end; ++i) s0 += p[i];
      part[t] = s0 + s1 + s2 + s3;
    });
    benchmark::DoNotOptimize(std::accumulate(part, part + tasks, 0.0f));
  }
  bnff::bench::set_counters(state, double(kFloats) * sizeof(float));
}

void ceiling_copy(benchmark::State& state) {
  bnff::bench::use_threads(state);
  static bnff::bench::buffer<float> a(kFloats, 1.0f), b(kFloats, 0.0f);
  for (auto _ : state) {
    bnff::parallel_for(64, [&](index_t t) {
      const auto r = bnff::split_range(index_t(kFloats), 64, t);
      std::memcpy(b.data() + r.begin, a.data() + r.begin, std::size_t(r.size()) * sizeof(float));
    });
    benchmark::ClobberMemory();
  }
  bnff::bench::set_counters(state, 2.0 * double(kFloats) * sizeof(float));
}

const int registered = bnff::bench::register_family([](const bnff::bench::options&) {
  bnff::bench::add("ceiling_read", "ceiling", "256MiB", ceiling_read);
  bnff::bench::add("ceiling_copy", "ceiling", "256MiB", ceiling_copy);
});

}  // namespace
