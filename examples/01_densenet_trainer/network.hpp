// The DenseNet-BC network: its parameters, activation buffers and the ordered
// list of units a step runs, and the interface through which an implementation
// of the convolution and batch-normalization units plugs in.
//
// Each dense block has one concatenation buffer; the stem (or the previous
// transition's pooling) writes its first channels and every composite layer
// appends its `growth` channels as a channel slice, so no layer ever copies its
// input. Only the bottleneck outputs (conv1x1 results) and the concatenations
// are kept per layer; what else an implementation stores is its own workspace.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <bnff/conv/conv2d_problem.hpp>
#include <bnff/tensor/tensor_view.hpp>

#include "distributed.hpp"
#include "layers.hpp"
#include "model_config.hpp"
#include "parameters.hpp"
#include "trainer.hpp"

namespace trainer {

using bnff::shape4;
using bnff::vector_view;

// Channels [first, first + count) of activation buffer `buffer` (-1: none).
struct buffer_slice {
  index_t buffer = -1, first = 0, count = 0;
};

// What a unit computes. The engine runs conv, bn_relu_conv and bn_relu; the
// network itself runs the pooling units.
enum class unit_kind {
  conv,             // y = conv(x, W)                                  (the stem)
  bn_relu_conv,     // y = conv(max(0, bn(x)), W)                      (composite layer halves, transitions)
  bn_relu,          // y = max(0, bn(x))                               (before global pooling)
  avg_pool2x2,      // y = 2x2 average pooling of x, stride 2          (after a transition)
  global_avg_pool,  // y[n, c, 0, 0] = mean over h, w of x[n, c]      (before the classifier)
  max_pool3x3s2,    // y = 3x3 max pooling of x, stride 2, padding 1   (after an ImageNet stem)
  bn,               // y = bn(x)                                       (a ResNet projection shortcut)
  bn_add_relu,      // y = max(0, bn(x) + skip)                        (a ResNet bottleneck's end)
};

// How a unit's backward writes dx: overwrite, or add to what later units wrote.
// A concatenation channel feeds several units; the last of them in forward order
// (the transition or the final BN-ReLU) overwrites, earlier ones accumulate.
enum class grad_mode { overwrite, accumulate };

// One batch normalization: parameters, gradients and running statistics (PyTorch semantics).
struct bn_ref {
  vector_view<float> gamma, beta, d_gamma, d_beta, running_mean, running_var;
  float eps = 1e-5f, momentum = 0.1f;
};

// One convolution without bias: weights K x C x R x S and their gradient.
struct conv_ref {
  bnff::conv2d_problem problem;
  tensor_view<float> weight, d_weight;
};

struct unit {
  std::string name;
  unit_kind kind = unit_kind::conv;
  buffer_slice in, out;         // which buffer channels x and y are (engines key saved statistics by them)
  tensor_view<const float> x;   // forward input
  tensor_view<float> y;         // forward output (overwritten)
  tensor_view<const float> dy;  // gradient of the output, complete when backward runs
  tensor_view<float> dx;        // gradient of the input; empty for the images
  grad_mode dx_mode = grad_mode::overwrite;
  conv_ref conv;  // conv and bn_relu_conv
  bn_ref bn;      // bn_relu_conv, bn_relu, bn and bn_add_relu
  // bn_add_relu only: the residual input and its gradient (overwritten by backward).
  buffer_slice skip_in;
  tensor_view<const float> skip;
  tensor_view<float> d_skip;
};

class densenet;

// The convolution and batch-normalization computations of a step: the two
// implementations of the model (fused and unfused) are two of these. Contract:
// - prepare() is called once, before any other call, with the finished network;
//   all workspace is allocated there, none during a step.
// - forward(u, training) is called for every conv / bn_relu_conv / bn_relu unit
//   in the network's order. It overwrites u.y. training: normalize with batch
//   statistics (biased variance) and update bn.running_mean / running_var
//   (momentum, unbiased variance); otherwise normalize with the running statistics.
// - backward(u) is called after a training forward, for the same units in
//   reverse order. It overwrites u.conv.d_weight, u.bn.d_gamma and u.bn.d_beta,
//   and, when u.dx is not empty, writes or adds dL/dx into u.dx as u.dx_mode says.
//   It may use anything the engine kept during forward for this unit or earlier ones.
// - With a bn_synchronizer (data-parallel ranks, each with its shard of the global
//   batch), every training BN normalizes with the global batch's statistics and its
//   dx uses the global batch's backward sums; d_gamma and d_beta stay this rank's
//   share (averaged with the other gradients by the trainer).
class conv_bn_engine {
 public:
  // Synchronized BN across ranks (null, the default: this process's batch only). Set before prepare().
  void set_bn_synchronizer(bn_synchronizer* s) noexcept { sync_ = s; }
  bn_synchronizer* bn_sync() const noexcept { return sync_; }

  virtual ~conv_bn_engine() = default;
  virtual std::string name() const = 0;
  virtual void prepare(const densenet& net) = 0;
  // Bytes the engine keeps between forward and backward beyond the network's buffers.
  virtual std::uint64_t workspace_bytes() const = 0;
  // Bytes of scratch the engine's steps borrow and release (nothing in it survives a step).
  virtual std::uint64_t scratch_bytes() const { return 0; }
  virtual void forward(const unit& u, bool training) = 0;
  virtual void backward(const unit& u) = 0;

 protected:
  bn_synchronizer* sync_ = nullptr;
};

// A memory buffer of the network: an activation kept for (or passed to) backward, or a gradient.
struct network_buffer {
  std::string name;
  shape4 shape;
  bool gradient = false;
  std::vector<float> data;
  tensor_view<float> view() { return {data.data(), shape}; }
};

// The network, built once for a batch size: parameters (He-initialized from the
// seed), buffers, units in forward order and the classifier.
class densenet {
 public:
  densenet(const model_config& cfg, index_t batch, std::uint64_t seed) : cfg_(cfg), batch_(batch) {
    cfg.validate();
    if (batch < 2)
      throw usage_error("--batch must be >= 2 (batch statistics need two images), got " + std::to_string(batch));
    declare_parameters(seed);
    build_units();
  }
  densenet(const densenet&) = delete;  // units point into this object's vectors
  densenet& operator=(const densenet&) = delete;

  const model_config& config() const noexcept { return cfg_; }
  index_t batch() const noexcept { return batch_; }
  const std::vector<unit>& units() const noexcept { return units_; }
  const std::vector<network_buffer>& buffers() const noexcept { return buffers_; }
  std::vector<parameter>& parameters() noexcept { return params_; }
  std::vector<state_tensor>& state() noexcept { return state_; }

  network_buffer& input() { return buffers_[0]; }
  network_buffer& features() { return buffers_[std::size_t(features_)]; }
  network_buffer& features_grad() { return buffers_[std::size_t(features_grad_)]; }
  parameter& fc_weight() { return params_[std::size_t(fc_weight_)]; }
  parameter& fc_bias() { return params_[std::size_t(fc_weight_ + 1)]; }
  fc_shape classifier_shape() const { return {batch_, final_channels_, cfg_.classes}; }

  // Activation bytes every implementation holds: all forward buffers.
  std::uint64_t activation_bytes() const {
    std::uint64_t b = 0;
    for (const auto& buf : buffers_)
      if (!buf.gradient) b += buf.data.size() * sizeof(float);
    return b;
  }
  std::uint64_t gradient_bytes() const {
    std::uint64_t b = 0;
    for (const auto& buf : buffers_)
      if (buf.gradient) b += buf.data.size() * sizeof(float);
    return b;
  }
  std::uint64_t parameter_count() const {
    std::uint64_t n = 0;
    for (const auto& p : params_) n += p.value.size();
    return n;
  }

  // Human-readable architecture, one line per stage.
  std::string describe() const {
    std::string s;
    index_t c = cfg_.stem(), h = cfg_.block_extent();
    if (cfg_.imagenet_stem)
      s += "  stem      conv7x7/2 " + std::to_string(cfg_.in_channels) + " -> " + std::to_string(c) +
           ", BN-ReLU, max pool 3x3/2 -> " + extent(h) + "\n";
    else
      s += "  stem      conv3x3 " + std::to_string(cfg_.in_channels) + " -> " + std::to_string(c) + " at " + extent(h) +
           "\n";
    for (std::size_t b = 0; b < cfg_.blocks.size(); ++b) {
      const index_t out = c + cfg_.blocks[b] * cfg_.growth;
      s += "  block " + std::to_string(b + 1) + "   " + std::to_string(cfg_.blocks[b]) + " x (BN-ReLU-conv1x1 -> " +
           std::to_string(cfg_.bottleneck()) + ", BN-ReLU-conv3x3 -> " + std::to_string(cfg_.growth) + "), " +
           std::to_string(c) + " -> " + std::to_string(out) + " channels at " + extent(h) + "\n";
      c = out;
      if (b + 1 < cfg_.blocks.size()) {
        const index_t t = cfg_.transition_channels(c);
        s += "  transition BN-ReLU-conv1x1 " + std::to_string(c) + " -> " + std::to_string(t) + ", avg pool 2x2 -> " +
             extent(h / 2) + "\n";
        c = t, h /= 2;
      }
    }
    s += "  head      BN-ReLU, global average pool, FC " + std::to_string(c) + " -> " + std::to_string(cfg_.classes) +
         "\n";
    return s;
  }

 protected:
  // For networks of other shapes built from the same units (the derived class declares its
  // parameters and builds its units and buffers with the helpers below).
  struct custom_build {};
  densenet(const model_config& cfg, index_t batch, custom_build) : cfg_(cfg), batch_(batch) {}

  static std::string extent(index_t h) { return std::to_string(h) + "x" + std::to_string(h); }

  index_t add_parameter(const std::string& name, index_t size, bool decay) {
    params_.emplace_back(name, size, decay);
    return index_t(params_.size()) - 1;
  }

  index_t add_conv(const std::string& name, index_t k, index_t c, index_t r, std::uint64_t seed) {
    const index_t i = add_parameter(name + ".weight", k * c * r * r, true);
    he_normal(params_[std::size_t(i)], c * r * r, seed, name_tag(params_[std::size_t(i)].name));
    return i;
  }

  index_t add_bn(const std::string& name, index_t c) {
    const index_t i = add_parameter(name + ".gamma", c, false);
    fill(params_[std::size_t(i)].value, 1.0f);
    add_parameter(name + ".beta", c, false);
    state_.push_back({name + ".running_mean", std::vector<float>(std::size_t(c), 0.0f)});
    state_.push_back({name + ".running_var", std::vector<float>(std::size_t(c), 1.0f)});
    return i;
  }

  // Every parameter first, so the vectors never reallocate once units point into them.
  void declare_parameters(std::uint64_t seed) {
    index_t c = cfg_.stem();
    stem_ = add_conv("stem.conv", c, cfg_.in_channels, cfg_.imagenet_stem ? 7 : 3, seed);
    if (cfg_.imagenet_stem) stem_bn_ = add_bn("stem.bn", c);
    for (std::size_t b = 0; b < cfg_.blocks.size(); ++b) {
      const std::string block = "b" + std::to_string(b + 1);
      for (index_t l = 0; l < cfg_.blocks[b]; ++l) {
        const std::string layer = block + ".l" + std::to_string(l + 1);
        layer_params_.push_back({add_bn(layer + ".bn1", c), add_conv(layer + ".conv1", cfg_.bottleneck(), c, 1, seed),
                                 add_bn(layer + ".bn2", cfg_.bottleneck()),
                                 add_conv(layer + ".conv2", cfg_.growth, cfg_.bottleneck(), 3, seed)});
        c += cfg_.growth;
      }
      if (b + 1 < cfg_.blocks.size()) {
        const std::string t = "t" + std::to_string(b + 1);
        const index_t out = cfg_.transition_channels(c);
        transition_params_.push_back({add_bn(t + ".bn", c), add_conv(t + ".conv", out, c, 1, seed)});
        c = out;
      }
    }
    final_bn_ = add_bn("final.bn", c);
    final_channels_ = c;
    fc_weight_ = add_parameter("fc.weight", cfg_.classes * c, true);
    he_normal(params_[std::size_t(fc_weight_)], c, seed, name_tag("fc.weight"));
    add_parameter("fc.bias", cfg_.classes, false);
  }

  index_t add_buffer(const std::string& name, shape4 s, bool gradient) {
    buffers_.push_back({name, s, gradient, std::vector<float>(std::size_t(s.size()), 0.0f)});
    return index_t(buffers_.size()) - 1;
  }

  tensor_view<float> view(index_t buffer, index_t first, index_t count) {
    return buffers_[std::size_t(buffer)].view().channels(first, count);
  }

  bn_ref bn(index_t first_param, index_t state_index) {
    auto vec = [&](std::vector<float>& v) { return vector_view<float>(v.data(), index_t(v.size())); };
    parameter& g = params_[std::size_t(first_param)];
    parameter& b = params_[std::size_t(first_param + 1)];
    return {vec(g.value),
            vec(b.value),
            vec(g.grad),
            vec(b.grad),
            vec(state_[std::size_t(state_index)].value),
            vec(state_[std::size_t(state_index + 1)].value)};
  }

  // A BN's running statistics sit in state_ in declaration order: find them by name.
  index_t state_of(index_t first_param) const {
    const std::string& gamma = params_[std::size_t(first_param)].name;
    const std::string prefix = gamma.substr(0, gamma.size() - std::string(".gamma").size());
    for (std::size_t i = 0; i < state_.size(); ++i)
      if (state_[i].name == prefix + ".running_mean") return index_t(i);
    throw std::logic_error("densenet: no running statistics for " + prefix);
  }

  conv_ref conv(index_t param, const bnff::conv2d_problem& pb) {
    parameter& w = params_[std::size_t(param)];
    return {pb, tensor_view<float>(w.value.data(), pb.filter_shape()),
            tensor_view<float>(w.grad.data(), pb.filter_shape())};
  }

  void build_units() {
    const index_t n = batch_;
    index_t h = cfg_.image_size, c = cfg_.stem();
    add_buffer("input", {n, cfg_.in_channels, h, h}, false);  // buffer 0
    index_t stem_out = -1, stem_dout = -1;                    // ImageNet stem: what the max pooling reads
    if (cfg_.imagenet_stem) {
      const bnff::conv2d_problem pb{n, cfg_.in_channels, h, h, c, 7, 7, 3, 2};
      const index_t hc = pb.p();
      const index_t conv_out = add_buffer("stem.conv.out", {n, c, hc, hc}, false);
      const index_t conv_dout = add_buffer("stem.conv.out.grad", {n, c, hc, hc}, true);
      stem_out = add_buffer("stem.out", {n, c, hc, hc}, false);
      stem_dout = add_buffer("stem.out.grad", {n, c, hc, hc}, true);
      unit sc;
      sc.name = "stem.conv";
      sc.kind = unit_kind::conv;
      sc.in = {0, 0, cfg_.in_channels};
      sc.x = buffers_[0].view();
      sc.out = {conv_out, 0, c};
      sc.y = buffers_[std::size_t(conv_out)].view();
      sc.dy = buffers_[std::size_t(conv_dout)].view();
      sc.conv = conv(stem_, pb);
      units_.push_back(sc);
      unit sb;
      sb.name = "stem.bn";
      sb.kind = unit_kind::bn_relu;
      sb.in = sc.out;
      sb.x = sc.y;
      sb.dx = buffers_[std::size_t(conv_dout)].view();
      sb.out = {stem_out, 0, c};
      sb.y = buffers_[std::size_t(stem_out)].view();
      sb.dy = buffers_[std::size_t(stem_dout)].view();
      sb.bn = bn(stem_bn_, state_of(stem_bn_));
      units_.push_back(sb);
      h = cfg_.block_extent();
    }
    index_t prev_t = -1, prev_dt = -1;  // the previous transition's output and its gradient
    std::size_t layer = 0;
    for (std::size_t b = 0; b < cfg_.blocks.size(); ++b) {
      const std::string block = "b" + std::to_string(b + 1);
      const index_t total = c + cfg_.blocks[b] * cfg_.growth;
      const index_t concat = add_buffer(block + ".concat", {n, total, h, h}, false);
      const index_t d_concat = add_buffer(block + ".concat.grad", {n, total, h, h}, true);
      const index_t d_bottleneck = add_buffer(block + ".bottleneck.grad", {n, cfg_.bottleneck(), h, h}, true);

      unit first;
      if (b == 0 && cfg_.imagenet_stem) {
        first.name = "stem.pool";
        first.kind = unit_kind::max_pool3x3s2;
        first.in = {stem_out, 0, c};
        first.x = buffers_[std::size_t(stem_out)].view();
        first.dx = buffers_[std::size_t(stem_dout)].view();
      } else if (b == 0) {
        first.name = "stem.conv";
        first.kind = unit_kind::conv;
        first.in = {0, 0, cfg_.in_channels};
        first.x = buffers_[0].view();
        first.conv = conv(stem_, {n, cfg_.in_channels, h, h, c, 3, 3, 1, 1});
      } else {
        first.name = "t" + std::to_string(b) + ".pool";
        first.kind = unit_kind::avg_pool2x2;
        first.in = {prev_t, 0, c};
        first.x = buffers_[std::size_t(prev_t)].view();
        first.dx = buffers_[std::size_t(prev_dt)].view();
      }
      first.out = {concat, 0, c};
      first.y = view(concat, 0, c);
      first.dy = view(d_concat, 0, c);
      units_.push_back(first);

      for (index_t l = 0; l < cfg_.blocks[b]; ++l, ++layer) {
        const auto& lp = layer_params_[layer];
        const std::string name = block + ".l" + std::to_string(l + 1);
        const index_t y1 = add_buffer(name + ".bottleneck", {n, cfg_.bottleneck(), h, h}, false);
        unit u1;
        u1.name = name + ".conv1";
        u1.kind = unit_kind::bn_relu_conv;
        u1.in = {concat, 0, c};
        u1.out = {y1, 0, cfg_.bottleneck()};
        u1.x = view(concat, 0, c);
        u1.y = buffers_[std::size_t(y1)].view();
        u1.dx = view(d_concat, 0, c);
        u1.dx_mode = grad_mode::accumulate;
        u1.dy = buffers_[std::size_t(d_bottleneck)].view();
        u1.bn = bn(lp.bn1, state_of(lp.bn1));
        u1.conv = conv(lp.conv1, {n, c, h, h, cfg_.bottleneck(), 1, 1, 0, 1});
        units_.push_back(u1);

        unit u2;
        u2.name = name + ".conv2";
        u2.kind = unit_kind::bn_relu_conv;
        u2.in = {y1, 0, cfg_.bottleneck()};
        u2.out = {concat, c, cfg_.growth};
        u2.x = buffers_[std::size_t(y1)].view();
        u2.y = view(concat, c, cfg_.growth);
        u2.dx = buffers_[std::size_t(d_bottleneck)].view();
        u2.dx_mode = grad_mode::overwrite;
        u2.dy = view(d_concat, c, cfg_.growth);
        u2.bn = bn(lp.bn2, state_of(lp.bn2));
        u2.conv = conv(lp.conv2, {n, cfg_.bottleneck(), h, h, cfg_.growth, 3, 3, 1, 1});
        units_.push_back(u2);
        c += cfg_.growth;
      }

      unit last;
      last.in = {concat, 0, c};
      last.x = view(concat, 0, c);
      last.dx = view(d_concat, 0, c);
      last.dx_mode = grad_mode::overwrite;  // the last consumer of the whole concatenation
      if (b + 1 < cfg_.blocks.size()) {
        const auto& tp = transition_params_[b];
        const index_t out = cfg_.transition_channels(c);
        prev_t = add_buffer("t" + std::to_string(b + 1) + ".out", {n, out, h, h}, false);
        prev_dt = add_buffer("t" + std::to_string(b + 1) + ".out.grad", {n, out, h, h}, true);
        last.name = "t" + std::to_string(b + 1) + ".conv";
        last.kind = unit_kind::bn_relu_conv;
        last.out = {prev_t, 0, out};
        last.y = buffers_[std::size_t(prev_t)].view();
        last.dy = buffers_[std::size_t(prev_dt)].view();
        last.bn = bn(tp.bn, state_of(tp.bn));
        last.conv = conv(tp.conv, {n, c, h, h, out, 1, 1, 0, 1});
        units_.push_back(last);
        c = out, h /= 2;
      } else {
        const index_t a = add_buffer("final.out", {n, c, h, h}, false);
        const index_t da = add_buffer("final.out.grad", {n, c, h, h}, true);
        last.name = "final.bn";
        last.kind = unit_kind::bn_relu;
        last.out = {a, 0, c};
        last.y = buffers_[std::size_t(a)].view();
        last.dy = buffers_[std::size_t(da)].view();
        last.bn = bn(final_bn_, state_of(final_bn_));
        units_.push_back(last);

        features_ = add_buffer("features", {n, c, 1, 1}, false);
        features_grad_ = add_buffer("features.grad", {n, c, 1, 1}, true);
        unit pool;
        pool.name = "global_pool";
        pool.kind = unit_kind::global_avg_pool;
        pool.in = {a, 0, c};
        pool.out = {features_, 0, c};
        pool.x = buffers_[std::size_t(a)].view();
        pool.y = buffers_[std::size_t(features_)].view();
        pool.dx = buffers_[std::size_t(da)].view();
        pool.dy = buffers_[std::size_t(features_grad_)].view();
        units_.push_back(pool);
      }
    }
  }

  struct layer_params {
    index_t bn1, conv1, bn2, conv2;
  };
  struct transition_params {
    index_t bn, conv;
  };

  model_config cfg_;
  index_t batch_;
  std::vector<parameter> params_;
  std::vector<state_tensor> state_;
  std::vector<network_buffer> buffers_;
  std::vector<unit> units_;
  std::vector<layer_params> layer_params_;
  std::vector<transition_params> transition_params_;
  index_t stem_bn_ = -1;
  index_t stem_ = -1, final_bn_ = -1, fc_weight_ = -1, features_ = -1, features_grad_ = -1, final_channels_ = 0;
};

// A trainable DenseNet: the network with one implementation of its conv and BN
// units; pooling, the classifier and the loss are shared by every implementation.
class densenet_model : public model {
 public:
  densenet_model(const model_config& cfg, index_t batch, std::uint64_t seed, std::unique_ptr<conv_bn_engine> engine)
      : net_(cfg, batch, seed), engine_(std::move(engine)) {
    if (!engine_) throw std::invalid_argument("densenet_model: an engine is required");
    engine_->prepare(net_);
    logits_.assign(std::size_t(batch * cfg.classes), 0.0f);
  }

  densenet& network() noexcept { return net_; }
  std::string name() const override { return engine_->name(); }
  shape4 input_shape() const override { return net_.buffers()[0].shape; }
  index_t classes() const override { return net_.config().classes; }
  float* input() override { return net_.input().data.data(); }

  const float* forward(bool training) override {
    for (const unit& u : net_.units()) {
      switch (u.kind) {
        case unit_kind::avg_pool2x2:
          avg_pool2x2_forward(u.x, u.y);
          break;
        case unit_kind::max_pool3x3s2:
          max_pool3x3s2_forward(u.x, u.y);
          break;
        case unit_kind::global_avg_pool:
          global_avg_pool_forward(u.x, u.y.data());
          break;
        default:
          engine_->forward(u, training);
      }
    }
    fc_forward(net_.classifier_shape(), net_.features().data.data(), net_.fc_weight().value.data(),
               net_.fc_bias().value.data(), logits_.data());
    return logits_.data();
  }

  void backward(const float* d_logits) override {
    fc_backward(net_.classifier_shape(), net_.features().data.data(), net_.fc_weight().value.data(), d_logits,
                net_.features_grad().data.data(), net_.fc_weight().grad.data(), net_.fc_bias().grad.data());
    const auto& units = net_.units();
    for (auto it = units.rbegin(); it != units.rend(); ++it) {
      switch (it->kind) {
        case unit_kind::avg_pool2x2:
          avg_pool2x2_backward(it->dy, it->dx);
          break;
        case unit_kind::max_pool3x3s2:
          max_pool3x3s2_backward(it->x, tensor_view<const float>(it->y), it->dy, it->dx);
          break;
        case unit_kind::global_avg_pool:
          global_avg_pool_backward(it->dy.data(), it->dx);
          break;
        default:
          engine_->backward(*it);
      }
    }
  }

  std::vector<parameter*> parameters() override {
    std::vector<parameter*> out;
    for (auto& p : net_.parameters()) out.push_back(&p);
    return out;
  }
  std::vector<state_tensor*> state() override {
    std::vector<state_tensor*> out;
    for (auto& s : net_.state()) out.push_back(&s);
    return out;
  }
  std::uint64_t activation_bytes() const override { return net_.activation_bytes() + engine_->workspace_bytes(); }
  std::uint64_t scratch_bytes() const { return engine_->scratch_bytes(); }

 private:
  densenet net_;
  std::unique_ptr<conv_bn_engine> engine_;
  std::vector<float> logits_;
};

}  // namespace trainer
