// Shared pieces of bnff_bench: buffers, counters and the naming scheme
// <family>/<variant>/<shape>/threads:<t>.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "bnff/conv/layer_catalog.hpp"
#include "bnff/conv/winograd.hpp"
#include "bnff/parallel/parallel.hpp"

namespace bnff::bench {

// Run-wide settings, parsed by bench_main.cpp before any benchmark is registered.
struct options {
  bool quick = false;       // --quick: a few representative shapes per family
  bool all_shapes = false;  // --all-shapes: every catalog shape (long)
};

// Batch size of every catalog shape in the benchmarks (the paper's and the N).
inline constexpr index_t batch = 16;

namespace detail {
template <class T>
std::vector<T> pick(const std::vector<T>& all, const std::vector<std::string>& names) {
  std::vector<T> out;
  for (const auto& name : names)
    for (const auto& x : all)
      if (x.name == name) out.push_back(x);
  return out;
}
}  // namespace detail

// DenseNet-121 composite layers to run: --quick one (b1.l6, C=224 at 56x56: the
// widest layer at the largest extent), default the first and last layer of each
// dense block, --all-shapes all 58.
inline std::vector<catalog::composite_layer> composite_layers(const options& o) {
  const auto all = catalog::densenet121_composite_layers(batch);
  if (o.all_shapes) return all;
  if (o.quick) return detail::pick(all, {"densenet121.b1.l6"});
  return detail::pick(all, {"densenet121.b1.l1", "densenet121.b1.l6", "densenet121.b2.l1", "densenet121.b2.l12",
                            "densenet121.b3.l1", "densenet121.b3.l24", "densenet121.b4.l1", "densenet121.b4.l16"});
}

// DenseNet-121 transition layers: --quick the first, otherwise all three.
inline std::vector<catalog::transition_layer> transitions(const options& o) {
  const auto all = catalog::densenet121_transitions(batch);
  if (o.quick && !o.all_shapes) return detail::pick(all, {"densenet121.t1"});
  return all;
}

// ResNet-50 bottlenecks: --quick conv2_x, otherwise one per stage.
inline std::vector<catalog::bottleneck_block> bottlenecks(const options& o) {
  const auto all = catalog::resnet50_bottlenecks(batch);
  if (o.quick && !o.all_shapes) return detail::pick(all, {"resnet50.conv2_x"});
  return all;
}

// Shape names: a family over one BN-sized tensor (stats, bn_apply_relu,
// bn_backward) or over a whole layer (cpl_*, bottleneck_step) uses the layer's
// catalog name, with the tensor being the layer's input (N x c_in x H x W);
// a family over one convolution (conv_*, bn_relu_conv_fwd) uses
// "<layer>.conv1" / ".conv2" / ".conv3" (a composite layer's 1x1 and 3x3, a
// bottleneck's three) or "<transition>.conv".
inline std::string conv_name(const catalog::composite_layer& l, int which) {
  return l.name + ".conv" + std::to_string(which);
}

struct named_tensor {
  std::string name;
  shape4 shape;
};
struct named_conv {
  std::string name;
  conv2d_problem problem;
};

// Tensors for the BN families: the inputs of the selected transitions and
// composite layers (--quick: densenet121.t1, 16x256x56x56, and b1.l6).
inline std::vector<named_tensor> bn_tensors(const options& o) {
  std::vector<named_tensor> out;
  for (const auto& t : transitions(o)) out.push_back({t.name, t.conv().input_shape()});
  for (const auto& l : composite_layers(o)) out.push_back({l.name, l.conv1().input_shape()});
  return out;
}

// Convolutions for the single-conv families: both of every selected composite
// layer, every selected transition's, every selected bottleneck's three.
inline std::vector<named_conv> conv_problems(const options& o) {
  std::vector<named_conv> out;
  for (const auto& t : transitions(o)) out.push_back({t.name + ".conv", t.conv()});
  for (const auto& l : composite_layers(o)) {
    out.push_back({conv_name(l, 1), l.conv1()});
    out.push_back({conv_name(l, 2), l.conv2()});
  }
  for (const auto& b : bottlenecks(o)) {
    out.push_back({b.name + ".conv1", b.conv1()});
    out.push_back({b.name + ".conv2", b.conv2()});
    out.push_back({b.name + ".conv3", b.conv3()});
  }
  return out;
}

// Bytes and flops every variant of a family reports, so that GB/s and GFLOP/s
// compare like with like. Bytes are the compulsory traffic of the problem, the
// same for fused, unfused and library variants: every input read once, every
// output written once (float). Flops count a multiply-add as two.
namespace model {
inline double bytes(const shape4& s) { return double(s.size()) * sizeof(float); }
inline double bytes(index_t n) { return double(n) * sizeof(float); }

// stats: read x.  bn_apply_relu: read x, write y.  bn_backward: read x and dz, write dx.
inline double stats_bytes(const shape4& x) { return bytes(x); }
inline double bn_apply_relu_bytes(const shape4& x) { return 2 * bytes(x); }
inline double bn_backward_bytes(const shape4& x) { return 3 * bytes(x); }

// One convolution, forward or either gradient: read two operands, write one.
inline double conv_bytes(const conv2d_problem& p) {
  return bytes(p.input_shape()) + bytes(p.filter_shape()) + bytes(p.output_shape());
}
inline double conv_flops(const conv2d_problem& p) { return p.flops(); }

// Composite layer forward: read x, W1, W2; write y1 (kept for backward) and y2.
inline double cpl_fwd_bytes(const catalog::composite_layer& l) {
  return bytes(l.conv1().input_shape()) + bytes(l.conv1().filter_shape()) + bytes(l.conv2().filter_shape()) +
         bytes(l.conv1().output_shape()) + bytes(l.conv2().output_shape());
}
inline double cpl_fwd_flops(const catalog::composite_layer& l) { return l.conv1().flops() + l.conv2().flops(); }
// Backward: read dy2, y1, x, W1, W2; write dx, dW1, dW2. Data and weight gradients of both convs.
inline double cpl_bwd_bytes(const catalog::composite_layer& l) {
  return bytes(l.conv2().output_shape()) + bytes(l.conv1().output_shape()) + 2 * bytes(l.conv1().input_shape()) +
         2 * (bytes(l.conv1().filter_shape()) + bytes(l.conv2().filter_shape()));
}
inline double cpl_bwd_flops(const catalog::composite_layer& l) { return 2 * cpl_fwd_flops(l); }
// Step (forward then backward): read x, dy2, W1, W2; write y2, dx, dW1, dW2 (y1 is internal).
inline double cpl_step_bytes(const catalog::composite_layer& l) {
  return 2 * bytes(l.conv1().input_shape()) + 2 * bytes(l.conv2().output_shape()) +
         2 * (bytes(l.conv1().filter_shape()) + bytes(l.conv2().filter_shape()));
}
inline double cpl_step_flops(const catalog::composite_layer& l) { return 3 * cpl_fwd_flops(l); }

// Bottleneck step: read x, dout, W1..3; write out, dx, dW1..3.
inline double bottleneck_step_bytes(const catalog::bottleneck_block& b) {
  const shape4 x{b.n, b.c, b.h, b.w};
  return 4 * bytes(x) +
         2 * (bytes(b.conv1().filter_shape()) + bytes(b.conv2().filter_shape()) + bytes(b.conv3().filter_shape()));
}
inline double bottleneck_step_flops(const catalog::bottleneck_block& b) {
  return 3 * (b.conv1().flops() + b.conv2().flops() + b.conv3().flops());
}

// The multiply-adds (as flops) of bnff's GEMMs for one pass of a convolution, the
// floor of its time at the GEMM ceiling (the report's headroom): the problem's flops,
// except where all three passes run Winograd F(4x4, 3x3) (3x3, stride 1, planes over
// 256 positions), which multiplies 36 pairs per 4x4 output tile and channel pair
// instead of 144 (transforms not counted).
inline double conv_gemm_flops(const conv2d_problem& p) {
  if (!bnff::detail::winograd_eligible(p)) return p.flops();
  const double tiles = double((p.p() + 3) / 4) * double((p.q() + 3) / 4);
  return 2.0 * double(p.n) * double(p.k) * double(p.c) * tiles * 36.0;
}
inline double cpl_pass_gemm_flops(const catalog::composite_layer& l) {
  return conv_gemm_flops(l.conv1()) + conv_gemm_flops(l.conv2());
}
inline double bottleneck_pass_gemm_flops(const catalog::bottleneck_block& b) {
  return conv_gemm_flops(b.conv1()) + conv_gemm_flops(b.conv2()) + conv_gemm_flops(b.conv3());
}
}  // namespace model

// Each family file registers a function that adds its benchmarks for the options:
//   const int registered = bnff::bench::register_family([](const bench::options& o) { ... });
using family_fn = void (*)(const options&);
inline std::vector<family_fn>& families() {
  static std::vector<family_fn> f;
  return f;
}
inline int register_family(family_fn f) {
  families().push_back(f);
  return 0;
}

// A 64-byte-aligned buffer, touched on creation so page faults stay out of timings.
// Buffers of 2 MiB or more ask Linux for transparent huge pages (what an
// allocator gets with THP "always" or its own madvise), for bnff, its baselines
// and the ceilings alike: with 4 KiB pages the hardware prefetchers stop at
// every page boundary and one core streamed up to 20% slower on the reference
// machine, which would blur the ceilings.
template <class T>
struct buffer {
  struct free_deleter {
    void operator()(T* p) const noexcept { std::free(p); }
  };
  std::unique_ptr<T, free_deleter> ptr;
  std::size_t size = 0;
  explicit buffer(std::size_t n, T value = T(0)) : size(n) {
    constexpr std::size_t huge = std::size_t(2) << 20;
    const std::size_t align = n * sizeof(T) >= huge ? huge : 64;
    const std::size_t bytes = ((n * sizeof(T) + align - 1) / align) * align;
    ptr.reset(static_cast<T*>(std::aligned_alloc(align, bytes > 0 ? bytes : align)));
    if (!ptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (align == huge) madvise(ptr.get(), bytes, MADV_HUGEPAGE);  // a hint: failure only costs speed
#endif
    for (std::size_t i = 0; i < n; ++i) ptr.get()[i] = value;
  }
  T* data() const noexcept { return ptr.get(); }
  void fill_random(std::uint64_t seed, T lo = T(-1), T hi = T(1)) {
    std::mt19937_64 gen(seed);
    std::uniform_real_distribution<double> d{double(lo), double(hi)};
    for (std::size_t i = 0; i < size; ++i) ptr.get()[i] = T(d(gen));
  }
};

// Threads for this run: the benchmark's "threads" argument (range 0).
inline int use_threads(benchmark::State& state) {
  const int t = int(state.range(0));
  bnff::set_num_threads(t);
  return t;
}

// bytes_per_second from the bytes a kernel must move at minimum, and a flops rate;
// gemm_flops (when given) as a rate too: the multiply-adds its GEMMs must do (model::conv_gemm_flops).
inline void set_counters(benchmark::State& state, double bytes, double flops = 0.0, double gemm_flops = 0.0) {
  state.SetBytesProcessed(int64_t(bytes) * int64_t(state.iterations()));
  if (flops > 0)
    state.counters["flops"] = benchmark::Counter(flops * double(state.iterations()), benchmark::Counter::kIsRate);
  if (gemm_flops > 0)
    state.counters["gemm_flops"] =
        benchmark::Counter(gemm_flops * double(state.iterations()), benchmark::Counter::kIsRate);
}

// Register fn as <family>/<variant>/<shape> for 1 and 2 threads, real time.
template <class F>
benchmark::internal::Benchmark* add(const std::string& family, const std::string& variant, const std::string& shape,
                                    F&& fn) {
  return benchmark::RegisterBenchmark((family + "/" + variant + "/" + shape).c_str(), std::forward<F>(fn))
      ->ArgName("threads")
      ->Arg(1)
      ->Arg(2)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

}  // namespace bnff::bench
