// The layers bnff is compared against, built from oneDNN 2.x primitives the
// way a framework's oneDNN backend builds them: batch normalization (training,
// ReLU fused through fuse_norm_relu and its workspace), convolution forward,
// backward data and backward weights, and binary/eltwise for ResNet's residual.
// Used by bench_onednn.cpp (timing) and check_onednn.cpp (against the double
// reference), so what is timed is what is checked.
//
// Two layouts:
// - blocked: every convolution picks its layouts (format_tag::any, nChw16c and
//   OIhw16i16o-like on AVX-512); batch norm runs on the layout of the
//   convolution next to it, so no reorder happens inside a layer. Inputs and
//   weights are converted once, outside any timing.
// - nchw: plain nchw activations and oihw weights throughout, as a framework
//   keeping PyTorch's default layout would call oneDNN.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "bench_common.hpp"
#include "bnff/conv/layer_catalog.hpp"

namespace bnff::bench::onednn {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

enum class layout { blocked, nchw };
inline const char* variant_name(layout l) { return l == layout::blocked ? "onednn_blocked" : "onednn_nchw"; }

// One CPU engine and stream for the process.
struct context {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
};
inline context& ctx() {
  static context c;
  return c;
}

inline memory::dims dims_of(const shape4& s) { return {s.n, s.c, s.h, s.w}; }
inline memory::desc data_md(const shape4& s, layout l) {
  return {dims_of(s), dt::f32, l == layout::blocked ? tag::any : tag::nchw};
}
inline memory::desc weights_md(const shape4& s, layout l) {
  return {dims_of(s), dt::f32, l == layout::blocked ? tag::any : tag::oihw};
}

// A oneDNN memory over a bench::buffer (huge pages, touched), so oneDNN's
// tensors live in the same kind of memory as bnff's.
struct tensor {
  std::unique_ptr<buffer<float>> buf;
  memory mem;
  tensor() = default;
  explicit tensor(const memory::desc& md)
      : buf(std::make_unique<buffer<float>>(md.get_size() / sizeof(float) + 1)), mem(md, ctx().eng, buf->data()) {}
  memory::desc desc() const { return mem.get_desc(); }
};

// Uniform floats in [lo, hi) from a splitmix64 stream: cheap enough to fill the
// hundreds of MB a bottleneck setup needs without slowing the run down.
inline std::vector<float> random_floats(std::size_t n, std::uint64_t seed, float lo, float hi) {
  std::vector<float> v(n);
  std::uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& x : v) {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    x = lo + (hi - lo) * float(z >> 40) * (1.0f / 16777216.0f);  // 24 random bits
  }
  return v;
}

// Plain (nchw / oihw / x) data into a tensor of any layout, and back: reorders,
// done outside timings.
inline tag plain_tag(int ndims) { return ndims == 4 ? tag::abcd : ndims == 2 ? tag::ab : tag::a; }
inline void write_plain(const tensor& t, const std::vector<float>& v) {
  const auto md = t.desc();
  memory src({md.dims(), dt::f32, plain_tag(int(md.dims().size()))}, ctx().eng, const_cast<float*>(v.data()));
  memory dst = t.mem;  // a handle copy: reorder takes non-const handles
  dnnl::reorder(src, dst).execute(ctx().strm, src, dst);
  ctx().strm.wait();
}
inline std::vector<float> read_plain(const tensor& t) {
  const auto md = t.desc();
  std::size_t n = 1;
  for (auto d : md.dims()) n *= std::size_t(d);
  std::vector<float> v(n);
  memory dst({md.dims(), dt::f32, plain_tag(int(md.dims().size()))}, ctx().eng, v.data());
  memory src = t.mem;
  dnnl::reorder(src, dst).execute(ctx().strm, src, dst);
  ctx().strm.wait();
  return v;
}
inline tensor random_tensor(const memory::desc& md, std::uint64_t seed, float lo = -1, float hi = 1) {
  tensor t(md);
  std::size_t n = 1;
  for (auto d : md.dims()) n *= std::size_t(d);
  write_plain(t, random_floats(n, seed, lo, hi));
  return t;
}

// One convolution (no bias) with its forward and, optionally, both gradients.
// src and dst may be fixed layouts (a neighbour's) or format_tag::any.
struct convolution {
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_forward fwd;
  dnnl::convolution_backward_data bwd_data;
  dnnl::convolution_backward_weights bwd_weights;
  dnnl::reorder weights_to_bwd;  // empty when the data gradient takes the forward's weight layout
  tensor bwd_w;                  // the weights in the data gradient's layout
  memory::desc diff_weights_md;
  std::vector<std::string> impls;  // oneDNN's implementation names, forward first

  convolution(const conv2d_problem& p, layout l, const memory::desc& src, const memory::desc& dst, bool backward) {
    const memory::dims strides{p.stride, p.stride}, pad{p.pad, p.pad};
    const auto wmd = weights_md(p.filter_shape(), l);
    fwd_pd = {
        {dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src, wmd, dst, strides, pad, pad},
        ctx().eng};
    fwd = dnnl::convolution_forward(fwd_pd);
    impls.push_back(fwd_pd.impl_info_str());
    if (!backward) return;
    // Activation gradients in the forward's layouts, so they meet the forward
    // tensors without reorders. The data gradient wants the weights blocked
    // the transposed way (fixing the forward's layout would select oneDNN's
    // reference kernel): a framework reorders them every step, since they
    // change every step, and so does this layer, inside the timing.
    dnnl::convolution_backward_data::primitive_desc bd_pd(
        {dnnl::algorithm::convolution_direct, fwd_pd.src_desc(), wmd, fwd_pd.dst_desc(), strides, pad, pad}, ctx().eng,
        fwd_pd);
    bwd_data = dnnl::convolution_backward_data(bd_pd);
    impls.push_back(bd_pd.impl_info_str());
    if (bd_pd.weights_desc() != fwd_pd.weights_desc()) {
      bwd_w = tensor(bd_pd.weights_desc());
      weights_to_bwd = dnnl::reorder({ctx().eng, fwd_pd.weights_desc(), ctx().eng, bd_pd.weights_desc()});
    }
    dnnl::convolution_backward_weights::primitive_desc bw_pd(
        {dnnl::algorithm::convolution_direct, fwd_pd.src_desc(), wmd, fwd_pd.dst_desc(), strides, pad, pad}, ctx().eng,
        fwd_pd);
    bwd_weights = dnnl::convolution_backward_weights(bw_pd);
    impls.push_back(bw_pd.impl_info_str());
    diff_weights_md = bw_pd.diff_weights_desc();
  }
  memory::desc src_md() const { return fwd_pd.src_desc(); }
  memory::desc wei_md() const { return fwd_pd.weights_desc(); }
  memory::desc dst_md() const { return fwd_pd.dst_desc(); }

  void forward(const tensor& src, const tensor& w, const tensor& dst) const {
    fwd.execute(ctx().strm, {{DNNL_ARG_SRC, src.mem}, {DNNL_ARG_WEIGHTS, w.mem}, {DNNL_ARG_DST, dst.mem}});
  }
  void backward_data(const tensor& diff_dst, const tensor& w, const tensor& diff_src) const {
    memory wb = w.mem;
    if (bwd_w.buf) {
      wb = bwd_w.mem;
      weights_to_bwd.execute(ctx().strm, {{DNNL_ARG_FROM, w.mem}, {DNNL_ARG_TO, wb}});
    }
    bwd_data.execute(ctx().strm,
                     {{DNNL_ARG_DIFF_DST, diff_dst.mem}, {DNNL_ARG_WEIGHTS, wb}, {DNNL_ARG_DIFF_SRC, diff_src.mem}});
  }
  void backward_weights(const tensor& src, const tensor& diff_dst, const tensor& diff_w) const {
    bwd_weights.execute(
        ctx().strm, {{DNNL_ARG_SRC, src.mem}, {DNNL_ARG_DIFF_DST, diff_dst.mem}, {DNNL_ARG_DIFF_WEIGHTS, diff_w.mem}});
  }
};

// The distinct implementation names of some convolutions, joined by '|'
// (reported as the benchmark's label, so a reference-kernel fallback shows).
inline std::string impl_label(std::initializer_list<const convolution*> convs) {
  std::vector<std::string> names;
  for (const auto* c : convs)
    for (const auto& n : c->impls)
      if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : "|") + n;
  return out;
}

// Training batch normalization over one tensor layout, with learned scale and
// shift, optionally followed by a fused ReLU (its mask kept in a workspace, one
// bit per element, for the backward).
struct batch_norm {
  static constexpr float eps = 1e-5f;
  dnnl::batch_normalization_forward fwd;
  dnnl::batch_normalization_backward bwd;
  tensor gamma, beta, mean, var, workspace, dgamma, dbeta;
  std::string impl;

  batch_norm(const memory::desc& md, bool relu, bool backward, std::uint64_t seed) {
    auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
    if (relu) flags = flags | dnnl::normalization_flags::fuse_norm_relu;
    dnnl::batch_normalization_forward::primitive_desc f_pd({dnnl::prop_kind::forward_training, md, eps, flags},
                                                           ctx().eng);
    fwd = dnnl::batch_normalization_forward(f_pd);
    impl = f_pd.impl_info_str();
    const memory::desc c_md({md.dims()[1]}, dt::f32, tag::a);
    gamma = random_tensor(c_md, seed, 0.5f, 1.5f);
    beta = random_tensor(c_md, seed + 1, -0.5f, 0.5f);
    mean = tensor(f_pd.mean_desc());
    var = tensor(f_pd.variance_desc());
    if (relu) workspace = tensor(f_pd.workspace_desc());
    if (!backward) return;
    dnnl::batch_normalization_backward::primitive_desc b_pd({dnnl::prop_kind::backward, md, md, eps, flags}, ctx().eng,
                                                            f_pd);
    bwd = dnnl::batch_normalization_backward(b_pd);
    dgamma = tensor(c_md);
    dbeta = tensor(c_md);
  }
  // dst = [max(0,)] (src - mean) * invstd * gamma + beta, with mean and var of this batch.
  void forward(const tensor& src, const tensor& dst) const {
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src.mem},     {DNNL_ARG_DST, dst.mem},
                                         {DNNL_ARG_SCALE, gamma.mem}, {DNNL_ARG_SHIFT, beta.mem},
                                         {DNNL_ARG_MEAN, mean.mem},   {DNNL_ARG_VARIANCE, var.mem}};
    if (workspace.buf) args.insert({DNNL_ARG_WORKSPACE, workspace.mem});
    fwd.execute(ctx().strm, args);
  }
  // diff_src, dgamma, dbeta from src and diff_dst (through the ReLU mask when fused).
  void backward(const tensor& src, const tensor& diff_dst, const tensor& diff_src) const {
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, src.mem},      {DNNL_ARG_DIFF_DST, diff_dst.mem}, {DNNL_ARG_DIFF_SRC, diff_src.mem},
        {DNNL_ARG_SCALE, gamma.mem},  {DNNL_ARG_SHIFT, beta.mem},        {DNNL_ARG_MEAN, mean.mem},
        {DNNL_ARG_VARIANCE, var.mem}, {DNNL_ARG_DIFF_SCALE, dgamma.mem}, {DNNL_ARG_DIFF_SHIFT, dbeta.mem}};
    if (workspace.buf) args.insert({DNNL_ARG_WORKSPACE, workspace.mem});
    bwd.execute(ctx().strm, args);
  }
};

// BN apply + ReLU with given statistics (inference-style batch norm): the
// library's equivalent of bnff's apply kernel.
struct bn_apply_relu {
  dnnl::batch_normalization_forward fwd;
  tensor x, y, gamma, beta, mean, var;
  std::string impl;
  std::string label() const { return impl; }
  explicit bn_apply_relu(const memory::desc& md) {
    const auto flags = dnnl::normalization_flags::use_global_stats | dnnl::normalization_flags::use_scale |
                       dnnl::normalization_flags::use_shift | dnnl::normalization_flags::fuse_norm_relu;
    const dnnl::batch_normalization_forward::primitive_desc pd(
        {dnnl::prop_kind::forward_inference, md, batch_norm::eps, flags}, ctx().eng);
    fwd = dnnl::batch_normalization_forward(pd);
    impl = pd.impl_info_str();
    x = random_tensor(md, 11);
    y = tensor(md);
    const memory::desc c_md({md.dims()[1]}, dt::f32, tag::a);
    gamma = random_tensor(c_md, 12, 0.5f, 1.5f);
    beta = random_tensor(c_md, 13, -0.5f, 0.5f);
    mean = random_tensor(c_md, 14, -0.1f, 0.1f);
    var = random_tensor(c_md, 15, 0.2f, 0.4f);
  }
  void run() const {
    fwd.execute(ctx().strm, {{DNNL_ARG_SRC, x.mem},
                             {DNNL_ARG_DST, y.mem},
                             {DNNL_ARG_SCALE, gamma.mem},
                             {DNNL_ARG_SHIFT, beta.mem},
                             {DNNL_ARG_MEAN, mean.mem},
                             {DNNL_ARG_VARIANCE, var.mem}});
    ctx().strm.wait();
  }
};

// BN backward through a fused ReLU, given the forward's saved statistics and mask.
struct bn_backward {
  batch_norm bn;
  tensor x, y, dz, dx;
  std::string label() const { return bn.impl; }
  explicit bn_backward(const memory::desc& md) : bn(md, true, true, 21) {
    x = random_tensor(md, 22);
    y = tensor(md);
    dz = random_tensor(md, 23);
    dx = tensor(md);
    bn.forward(x, y);  // statistics and ReLU mask, as the training step would have left them
    ctx().strm.wait();
  }
  void run() const {
    bn.backward(x, dz, dx);
    ctx().strm.wait();
  }
};

// One convolution forward on random data.
struct conv_forward {
  convolution conv;
  tensor x, w, y;
  std::string label() const { return impl_label({&conv}); }
  conv_forward(const conv2d_problem& p, layout l)
      : conv(p, l, data_md(p.input_shape(), l), data_md(p.output_shape(), l), false) {
    x = random_tensor(conv.src_md(), 31);
    w = random_tensor(conv.wei_md(), 32, -0.1f, 0.1f);
    y = tensor(conv.dst_md());
  }
  void run() const {
    conv.forward(x, w, y);
    ctx().strm.wait();
  }
};

// One convolution's data gradient on random data, with the weight reorder a
// framework pays every step when the data gradient wants another layout.
struct conv_backward_data {
  convolution conv;
  tensor w, dy, dx;
  std::string label() const { return conv.impls.size() > 1 ? conv.impls[1] : impl_label({&conv}); }
  conv_backward_data(const conv2d_problem& p, layout l)
      : conv(p, l, data_md(p.input_shape(), l), data_md(p.output_shape(), l), true) {
    w = random_tensor(conv.wei_md(), 41, -0.1f, 0.1f);
    dy = random_tensor(conv.dst_md(), 42);
    dx = tensor(conv.src_md());
  }
  void run() const {
    conv.backward_data(dy, w, dx);
    ctx().strm.wait();
  }
};

// One convolution's weight gradient on random data.
struct conv_backward_weights {
  convolution conv;
  tensor x, dy, dw;
  std::string label() const { return conv.impls.size() > 2 ? conv.impls[2] : impl_label({&conv}); }
  conv_backward_weights(const conv2d_problem& p, layout l)
      : conv(p, l, data_md(p.input_shape(), l), data_md(p.output_shape(), l), true) {
    x = random_tensor(conv.src_md(), 43);
    dy = random_tensor(conv.dst_md(), 44);
    dw = tensor(conv.diff_weights_md);
  }
  void run() const {
    conv.backward_weights(x, dy, dw);
    ctx().strm.wait();
  }
};

// BN apply + ReLU with given statistics, then the convolution: oneDNN's
// primitives for bnff's bn_relu_conv_fwd. The activation is stored between
// them, as a framework does; oneDNN has no epilogue for the output's
// statistics, so this variant computes less than bnff's fused one.
struct bn_relu_conv_forward {
  convolution conv;
  bn_apply_relu bn;
  tensor w, y;
  std::string label() const { return bn.impl + "|" + impl_label({&conv}) + "|no output statistics"; }
  bn_relu_conv_forward(const conv2d_problem& p, layout l)
      : conv(p, l, data_md(p.input_shape(), l), data_md(p.output_shape(), l), false), bn(conv.src_md()) {
    w = random_tensor(conv.wei_md(), 45, -0.1f, 0.1f);
    y = tensor(conv.dst_md());
  }
  void run() const {
    bn.run();
    conv.forward(bn.y, w, y);
    ctx().strm.wait();
  }
};

// DenseNet-BC composite layer: BN1-ReLU-conv1x1 -> BN2-ReLU-conv3x3, with every
// activation a framework keeps for backward (a1, y1, a2) stored.
struct composite_layer {
  convolution conv1, conv2;
  batch_norm bn1, bn2;
  tensor x, a1, w1, y1, a2, w2, y2;         // forward
  tensor dy2, da2, dw2, dy1, da1, dw1, dx;  // backward
  std::string label() const { return impl_label({&conv1, &conv2}); }

  composite_layer(const catalog::composite_layer& s, layout l)
      : conv1(s.conv1(), l, data_md(s.conv1().input_shape(), l), data_md(s.conv1().output_shape(), l), true),
        conv2(s.conv2(), l, conv1.dst_md(), data_md(s.conv2().output_shape(), l), true),
        bn1(conv1.src_md(), true, true, 41),
        bn2(conv1.dst_md(), true, true, 43) {
    x = random_tensor(conv1.src_md(), 45);
    // He-like scale keeps activations O(1) through the layer.
    w1 = random_tensor(conv1.wei_md(), 46, -1.7f / std::sqrt(float(s.c_in)), 1.7f / std::sqrt(float(s.c_in)));
    w2 = random_tensor(conv2.wei_md(), 47, -1.7f / std::sqrt(float(9 * s.bottleneck)),
                       1.7f / std::sqrt(float(9 * s.bottleneck)));
    a1 = tensor(conv1.src_md());
    y1 = tensor(conv1.dst_md());
    a2 = tensor(conv2.src_md());
    y2 = tensor(conv2.dst_md());
    dy2 = random_tensor(conv2.dst_md(), 48);
    da2 = tensor(conv2.src_md());
    dw2 = tensor(conv2.diff_weights_md);
    dy1 = tensor(conv1.dst_md());
    da1 = tensor(conv1.src_md());
    dw1 = tensor(conv1.diff_weights_md);
    dx = tensor(conv1.src_md());
  }
  void forward() const {
    bn1.forward(x, a1);
    conv1.forward(a1, w1, y1);
    bn2.forward(y1, a2);
    conv2.forward(a2, w2, y2);
    ctx().strm.wait();
  }
  void backward() const {
    conv2.backward_data(dy2, w2, da2);
    conv2.backward_weights(a2, dy2, dw2);
    bn2.backward(y1, da2, dy1);
    conv1.backward_data(dy1, w1, da1);
    conv1.backward_weights(a1, dy1, dw1);
    bn1.backward(x, da1, dx);
    ctx().strm.wait();
  }
};

// ResNet-50 bottleneck with identity shortcut:
//   out = relu(BN3(conv3(relu(BN2(conv2(relu(BN1(conv1(x)))))))) + x)
// The residual add runs as a binary add with a ReLU post-op; its backward as
// a ReLU backward from the output, and a final add of the two paths' dx.
struct bottleneck {
  convolution conv1, conv2, conv3;
  batch_norm bn1, bn2, bn3;
  dnnl::binary add_relu, add;
  dnnl::eltwise_backward relu_bwd;
  tensor x, w1, y1, a1, w2, y2, a2, w3, y3, z3, out;
  tensor dout, ds, dy3, da2, dw3, dy2, da1, dw2, dy1, dx_main, dw1, dx;
  std::string label() const { return impl_label({&conv1, &conv2, &conv3}); }

  bottleneck(const catalog::bottleneck_block& b, layout l)
      : conv1(b.conv1(), l, data_md(b.conv1().input_shape(), l), data_md(b.conv1().output_shape(), l), true),
        conv2(b.conv2(), l, conv1.dst_md(), data_md(b.conv2().output_shape(), l), true),
        conv3(b.conv3(), l, conv2.dst_md(), conv1.src_md(), true),  // shortcut and main path share a layout
        bn1(conv1.dst_md(), true, true, 51),
        bn2(conv2.dst_md(), true, true, 52),
        bn3(conv3.dst_md(), false, true, 53) {
    const auto md = conv1.src_md();
    dnnl::post_ops relu;
    relu.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    dnnl::primitive_attr attr;
    attr.set_post_ops(relu);
    add_relu = dnnl::binary({{dnnl::algorithm::binary_add, md, md, md}, attr, ctx().eng});
    add = dnnl::binary({{dnnl::algorithm::binary_add, md, md, md}, ctx().eng});
    const dnnl::eltwise_forward::primitive_desc relu_hint(
        {dnnl::prop_kind::forward_training, dnnl::algorithm::eltwise_relu_use_dst_for_bwd, md, 0.f, 0.f}, ctx().eng);
    relu_bwd = dnnl::eltwise_backward(
        {{dnnl::algorithm::eltwise_relu_use_dst_for_bwd, md, md, 0.f, 0.f}, ctx().eng, relu_hint});
    const auto he = [](index_t fan_in) { return 1.7f / std::sqrt(float(fan_in)); };
    x = random_tensor(md, 54);
    w1 = random_tensor(conv1.wei_md(), 55, -he(b.c), he(b.c));
    w2 = random_tensor(conv2.wei_md(), 56, -he(9 * b.mid), he(9 * b.mid));
    w3 = random_tensor(conv3.wei_md(), 57, -he(b.mid), he(b.mid));
    y1 = tensor(conv1.dst_md());
    a1 = tensor(conv1.dst_md());
    y2 = tensor(conv2.dst_md());
    a2 = tensor(conv2.dst_md());
    y3 = tensor(conv3.dst_md());
    z3 = tensor(md);
    out = tensor(md);
    dout = random_tensor(md, 58);
    ds = tensor(md);
    dy3 = tensor(md);
    da2 = tensor(conv2.dst_md());
    dw3 = tensor(conv3.diff_weights_md);
    dy2 = tensor(conv2.dst_md());
    da1 = tensor(conv1.dst_md());
    dw2 = tensor(conv2.diff_weights_md);
    dy1 = tensor(conv1.dst_md());
    dx_main = tensor(md);
    dw1 = tensor(conv1.diff_weights_md);
    dx = tensor(md);
  }
  void forward() const {
    conv1.forward(x, w1, y1);
    bn1.forward(y1, a1);
    conv2.forward(a1, w2, y2);
    bn2.forward(y2, a2);
    conv3.forward(a2, w3, y3);
    bn3.forward(y3, z3);
    add_relu.execute(ctx().strm, {{DNNL_ARG_SRC_0, z3.mem}, {DNNL_ARG_SRC_1, x.mem}, {DNNL_ARG_DST, out.mem}});
    ctx().strm.wait();
  }
  void backward() const {
    relu_bwd.execute(ctx().strm, {{DNNL_ARG_DST, out.mem}, {DNNL_ARG_DIFF_DST, dout.mem}, {DNNL_ARG_DIFF_SRC, ds.mem}});
    bn3.backward(y3, ds, dy3);
    conv3.backward_data(dy3, w3, da2);
    conv3.backward_weights(a2, dy3, dw3);
    bn2.backward(y2, da2, dy2);
    conv2.backward_data(dy2, w2, da1);
    conv2.backward_weights(a1, dy2, dw2);
    bn1.backward(y1, da1, dy1);
    conv1.backward_data(dy1, w1, dx_main);
    conv1.backward_weights(x, dy1, dw1);
    add.execute(ctx().strm, {{DNNL_ARG_SRC_0, dx_main.mem}, {DNNL_ARG_SRC_1, ds.mem}, {DNNL_ARG_DST, dx.mem}});
    ctx().strm.wait();
  }
};

}  // namespace bnff::bench::onednn
