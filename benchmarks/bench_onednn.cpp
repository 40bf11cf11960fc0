// The strongest CPU library on the same layers: oneDNN's variants of each family
// (onednn_blocked in its preferred layouts, onednn_nchw in plain layouts), built
// in onednn_layers.hpp and checked against the double reference by
// bnff_onednn_check. Compiled only when CMake found oneDNN.
//
// Families: bn_apply_relu (inference-style BN with given statistics + fused
// ReLU), bn_backward (BN backward through the fused ReLU, mask from the
// forward's workspace), conv_fwd, conv_bwd_data and conv_bwd_weights (every
// convolution of the selected layers), bn_relu_conv_fwd (BN-ReLU with given
// statistics, then the convolution; no output statistics),
// cpl_fwd, cpl_bwd, cpl_step (a DenseNet composite layer) and bottleneck_step
// (a ResNet-50 bottleneck). oneDNN has no statistics-only primitive (its
// training BN always normalizes too), so `stats` and `conv_fwd_stats` have no
// oneDNN variant.
//
// Threads: Debian's oneDNN runs on OpenMP (libgomp, the same runtime bnff
// uses), so bnff::set_num_threads sets its threads too. oneDNN sizes its
// kernels for the thread count when a primitive is created, so every
// primitive is created after the count is set (the cache key includes it).
#if defined(BNFF_BENCH_ONEDNN)

#include <exception>
#include <memory>
#include <string>

#include "bench_common.hpp"
#include "onednn_layers.hpp"

namespace {

namespace bench = bnff::bench;
namespace od = bnff::bench::onednn;

// Google Benchmark calls a benchmark function several times while it settles
// the iteration count, and runs threads:1 and threads:2 of a benchmark in turn;
// the layer families (cpl_fwd, cpl_bwd, cpl_step) share a setup. So setups
// (hundreds of MB, JIT-compiled primitives) are built once per key and thread
// count, and only the two latest are kept, so memory stays bounded.
template <class T, class Make>
T& cached(const std::string& key, int threads, Make&& make) {
  struct slot {
    std::string key;
    std::shared_ptr<void> setup;
  };
  static slot slots[2];  // [0] most recent
  const std::string k = key + "/threads:" + std::to_string(threads);
  if (slots[1].key == k) std::swap(slots[0], slots[1]);
  if (slots[0].key != k || !slots[0].setup) {
    slots[1] = {};  // free the oldest before building
    std::swap(slots[0], slots[1]);
    slots[0] = {k, std::make_shared<T>(make())};
  }
  return *static_cast<T*>(slots[0].setup.get());
}

// The layout oneDNN's standalone BN runs on: the one its 1x1 convolution
// (to 128 channels, as in both DenseNet layers) picks for the tensor
// (blocked), or nchw.
dnnl::memory::desc bn_layout(const bnff::shape4& x, od::layout lay) {
  if (lay == od::layout::nchw) return {od::dims_of(x), od::dt::f32, od::tag::nchw};
  const bnff::conv2d_problem p{x.n, x.c, x.h, x.w, 128, 1, 1, 0, 1};
  return od::convolution(p, lay, od::data_md(p.input_shape(), lay), od::data_md(p.output_shape(), lay), false).src_md();
}

// Time `run` on a cached setup, one warm-up call first (first-touch of outputs, scratchpads).
template <class T, class Make, class Run>
void time_it(benchmark::State& state, const std::string& key, Make&& make, Run&& run, double bytes, double flops) {
  const int threads = bench::use_threads(state);
  T* setup = nullptr;
  try {
    setup = &cached<T>(key, threads, std::forward<Make>(make));
    run(*setup);
  } catch (const std::exception& e) {  // an unsupported case is reported, not fatal to the run
    state.SkipWithError(e.what());
    return;
  }
  state.SetLabel(setup->label());
  for (auto _ : state) run(*setup);
  bench::set_counters(state, bytes, flops);
}

void register_bn(const bench::named_tensor& t, od::layout lay) {
  const std::string v = od::variant_name(lay);
  const bnff::shape4 x = t.shape;
  bench::add("bn_apply_relu", v, t.name, [=](benchmark::State& s) {
    time_it<od::bn_apply_relu>(
        s, "bn_apply_relu/" + v + "/" + t.name, [&] { return od::bn_apply_relu(bn_layout(x, lay)); },
        [](const od::bn_apply_relu& k) { k.run(); }, bench::model::bn_apply_relu_bytes(x), 0.0);
  });
  bench::add("bn_backward", v, t.name, [=](benchmark::State& s) {
    time_it<od::bn_backward>(
        s, "bn_backward/" + v + "/" + t.name, [&] { return od::bn_backward(bn_layout(x, lay)); },
        [](const od::bn_backward& k) { k.run(); }, bench::model::bn_backward_bytes(x), 0.0);
  });
}

void register_conv(const bench::named_conv& c, od::layout lay) {
  const std::string v = od::variant_name(lay);
  const bnff::conv2d_problem p = c.problem;
  bench::add("conv_fwd", v, c.name, [=](benchmark::State& s) {
    time_it<od::conv_forward>(
        s, "conv_fwd/" + v + "/" + c.name, [&] { return od::conv_forward(p, lay); },
        [](const od::conv_forward& k) { k.run(); }, bench::model::conv_bytes(p), bench::model::conv_flops(p));
  });
  bench::add("bn_relu_conv_fwd", v, c.name, [=](benchmark::State& s) {
    time_it<od::bn_relu_conv_forward>(
        s, "bn_relu_conv_fwd/" + v + "/" + c.name, [&] { return od::bn_relu_conv_forward(p, lay); },
        [](const od::bn_relu_conv_forward& k) { k.run(); }, bench::model::conv_bytes(p),
        bench::model::conv_flops(p));
  });
  bench::add("conv_bwd_data", v, c.name, [=](benchmark::State& s) {
    time_it<od::conv_backward_data>(
        s, "conv_bwd_data/" + v + "/" + c.name, [&] { return od::conv_backward_data(p, lay); },
        [](const od::conv_backward_data& k) { k.run(); }, bench::model::conv_bytes(p),
        bench::model::conv_flops(p));
  });
  bench::add("conv_bwd_weights", v, c.name, [=](benchmark::State& s) {
    time_it<od::conv_backward_weights>(
        s, "conv_bwd_weights/" + v + "/" + c.name, [&] { return od::conv_backward_weights(p, lay); },
        [](const od::conv_backward_weights& k) { k.run(); }, bench::model::conv_bytes(p),
        bench::model::conv_flops(p));
  });
}

void register_layer(const bnff::catalog::composite_layer& l, od::layout lay) {
  const std::string v = od::variant_name(lay);
  // The three layer families share one setup (same key), built once per thread count.
  const std::string layer_key = "cpl/" + v + "/" + l.name;
  const auto make = [=] { return od::composite_layer(l, lay); };
  bench::add("cpl_fwd", v, l.name, [=](benchmark::State& s) {
    time_it<od::composite_layer>(
        s, layer_key, make, [](const od::composite_layer& k) { k.forward(); }, bench::model::cpl_fwd_bytes(l),
        bench::model::cpl_fwd_flops(l));
  });
  bench::add("cpl_bwd", v, l.name, [=](benchmark::State& s) {
    time_it<od::composite_layer>(
        s, layer_key, make, [](const od::composite_layer& k) { k.backward(); }, bench::model::cpl_bwd_bytes(l),
        bench::model::cpl_bwd_flops(l));
  });
  bench::add("cpl_step", v, l.name, [=](benchmark::State& s) {
    time_it<od::composite_layer>(
        s, layer_key, make,
        [](const od::composite_layer& k) {
          k.forward();
          k.backward();
        },
        bench::model::cpl_step_bytes(l), bench::model::cpl_step_flops(l));
  });
}

void register_bottleneck(const bnff::catalog::bottleneck_block& b, od::layout lay) {
  const std::string v = od::variant_name(lay);
  bench::add("bottleneck_step", v, b.name, [=](benchmark::State& s) {
    time_it<od::bottleneck>(
        s, "bottleneck/" + v + "/" + b.name, [&] { return od::bottleneck(b, lay); },
        [](const od::bottleneck& k) {
          k.forward();
          k.backward();
        },
        bench::model::bottleneck_step_bytes(b), bench::model::bottleneck_step_flops(b));
  });
}

const int registered = bench::register_family([](const bench::options& o) {
  benchmark::AddCustomContext("onednn_version", std::to_string(dnnl::version()->major) + "." +
                                                    std::to_string(dnnl::version()->minor) + "." +
                                                    std::to_string(dnnl::version()->patch));
  for (auto lay : {od::layout::blocked, od::layout::nchw}) {
    for (const auto& t : bench::bn_tensors(o)) register_bn(t, lay);
    for (const auto& c : bench::conv_problems(o)) register_conv(c, lay);
    for (const auto& l : bench::composite_layers(o)) register_layer(l, lay);
    for (const auto& b : bench::bottlenecks(o)) register_bottleneck(b, lay);
  }
});

}  // namespace

#endif  // BNFF_BENCH_ONEDNN
