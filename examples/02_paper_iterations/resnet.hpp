// ResNet-50 (He et al. 2016; stride on the 3x3 convolution, as torchvision's v1.5) as
// a unit list the trainer's engines run: the same units, buffers and parameters as the
// trainer's DenseNet, built by a derived class.
//
// A bottleneck, in units:
//   [proj      conv1x1 stride s  x -> p          (first block of a stage)]
//   [proj.bn   bn                p -> pn                                  ]
//   conv1      conv1x1           x -> y1         (x is the previous block's output: already activated)
//   conv2      bn_relu_conv3x3   y1 -> y2        (stride s)
//   conv3      bn_relu_conv1x1   y2 -> y3
//   out        bn_add_relu       max(0, bn(y3) + (pn or x)) -> the block's output
// The first BN of each convolution's output is applied by the next unit (fused engines:
// statistics from the convolution's epilogue, BN-ReLU in the next convolution's prologue,
// BN + add + ReLU in one sweep at the block's end).
#pragma once

#include <string>
#include <vector>

#include "network.hpp"

namespace paper {

using trainer::index_t;

struct resnet_config {
  index_t image_size = 224;
  index_t classes = 1000;
  index_t in_channels = 3;
  std::vector<index_t> stages{3, 4, 6, 3};  // bottlenecks per stage
  index_t base_width = 64;                  // stage s has bottleneck width base * 2^s, output 4x that

  void validate() const {
    if (stages.empty() || stages.size() > 4) throw trainer::usage_error("--stages needs 1..4 stages");
    for (auto s : stages)
      if (s < 1 || s > 64) throw trainer::usage_error("--stages: each stage needs 1..64 blocks");
    if (image_size < 32) throw trainer::usage_error("ResNet needs --image-size >= 32");
    if (classes < 2) throw trainer::usage_error("--classes must be >= 2");
  }
};

class resnet : public trainer::densenet {
 public:
  resnet(const resnet_config& rc, index_t batch, std::uint64_t seed)
      : densenet(base_config(rc), batch, custom_build{}), rc_(rc) {
    rc.validate();
    if (batch < 2) throw trainer::usage_error("--batch must be >= 2 (batch statistics need two images)");
    declare(seed);
    build();
  }

  std::string describe_resnet() const {
    std::string s = "  stem      conv7x7/2 3 -> " + std::to_string(rc_.base_width) + ", BN-ReLU, max pool 3x3/2\n";
    index_t h = stem_extent();
    for (std::size_t st = 0; st < rc_.stages.size(); ++st) {
      const index_t mid = rc_.base_width << st, stride = st == 0 ? 1 : 2;
      h = (h - 1) / stride + 1;
      s += "  stage " + std::to_string(st + 1) + "   " + std::to_string(rc_.stages[st]) + " x bottleneck (" +
           std::to_string(mid) + ", " + std::to_string(mid) + ", " + std::to_string(4 * mid) + ") at " + extent(h) +
           "\n";
    }
    s += "  head      global average pool, FC " + std::to_string(final_channels_) + " -> " +
         std::to_string(rc_.classes) + "\n";
    return s;
  }

 private:
  static trainer::model_config base_config(const resnet_config& rc) {
    trainer::model_config c;
    c.image_size = rc.image_size;
    c.classes = rc.classes;
    c.in_channels = rc.in_channels;
    return c;
  }

  index_t stem_extent() const {
    const index_t conv = (rc_.image_size + 2 * 3 - 7) / 2 + 1;
    return (conv + 2 - 3) / 2 + 1;
  }

  struct block_params {
    index_t conv1, bn1, conv2, bn2, conv3, bn3, proj = -1, proj_bn = -1;
  };

  void declare(std::uint64_t seed) {
    stem_ = add_conv("stem.conv", rc_.base_width, rc_.in_channels, 7, seed);
    stem_bn_ = add_bn("stem.bn", rc_.base_width);
    index_t c = rc_.base_width;
    for (std::size_t st = 0; st < rc_.stages.size(); ++st) {
      const index_t mid = rc_.base_width << st, out = 4 * mid;
      for (index_t b = 0; b < rc_.stages[st]; ++b) {
        const std::string name = "s" + std::to_string(st + 1) + ".b" + std::to_string(b + 1);
        block_params p;
        p.conv1 = add_conv(name + ".conv1", mid, c, 1, seed);
        p.bn1 = add_bn(name + ".bn1", mid);
        p.conv2 = add_conv(name + ".conv2", mid, mid, 3, seed);
        p.bn2 = add_bn(name + ".bn2", mid);
        p.conv3 = add_conv(name + ".conv3", out, mid, 1, seed);
        p.bn3 = add_bn(name + ".bn3", out);
        if (b == 0) {
          p.proj = add_conv(name + ".proj", out, c, 1, seed);
          p.proj_bn = add_bn(name + ".proj.bn", out);
        }
        blocks_.push_back(p);
        c = out;
      }
    }
    final_channels_ = c;
    fc_weight_ = add_parameter("fc.weight", rc_.classes * c, true);
    trainer::he_normal(params_[std::size_t(fc_weight_)], c, seed, trainer::name_tag("fc.weight"));
    add_parameter("fc.bias", rc_.classes, false);
  }

  // An activation buffer and its gradient; returns the activation's index (the gradient is next).
  index_t add_pair(const std::string& name, trainer::shape4 s) {
    const index_t a = add_buffer(name, s, false);
    add_buffer(name + ".grad", s, true);
    return a;
  }
  trainer::tensor_view<float> full(index_t buffer) { return buffers_[std::size_t(buffer)].view(); }

  void build() {
    using trainer::grad_mode;
    using trainer::unit;
    using trainer::unit_kind;
    const index_t n = batch_;
    index_t h = rc_.image_size, c = rc_.base_width;
    add_buffer("input", {n, rc_.in_channels, h, h}, false);  // buffer 0

    const bnff::conv2d_problem stem_pb{n, rc_.in_channels, h, h, c, 7, 7, 3, 2};
    const index_t hc = stem_pb.p();
    const index_t s_conv = add_pair("stem.conv.out", {n, c, hc, hc});
    const index_t s_act = add_pair("stem.out", {n, c, hc, hc});
    h = stem_extent();
    index_t x = add_pair("stem.pool.out", {n, c, h, h});
    {
      unit u;
      u.name = "stem.conv";
      u.kind = unit_kind::conv;
      u.in = {0, 0, rc_.in_channels};
      u.x = full(0);
      u.out = {s_conv, 0, c};
      u.y = full(s_conv);
      u.dy = full(s_conv + 1);
      u.conv = conv(stem_, stem_pb);
      units_.push_back(u);
      unit b;
      b.name = "stem.bn";
      b.kind = unit_kind::bn_relu;
      b.in = u.out;
      b.x = u.y;
      b.dx = full(s_conv + 1);
      b.out = {s_act, 0, c};
      b.y = full(s_act);
      b.dy = full(s_act + 1);
      b.bn = bn(stem_bn_, state_of(stem_bn_));
      units_.push_back(b);
      unit p;
      p.name = "stem.pool";
      p.kind = unit_kind::max_pool3x3s2;
      p.in = b.out;
      p.x = full(s_act);
      p.dx = full(s_act + 1);
      p.out = {x, 0, c};
      p.y = full(x);
      p.dy = full(x + 1);
      units_.push_back(p);
    }

    std::size_t k = 0;
    for (std::size_t st = 0; st < rc_.stages.size(); ++st) {
      const index_t mid = rc_.base_width << st, out = 4 * mid;
      for (index_t b = 0; b < rc_.stages[st]; ++b, ++k) {
        const block_params& p = blocks_[k];
        const std::string name = "s" + std::to_string(st + 1) + ".b" + std::to_string(b + 1);
        const index_t stride = (b == 0 && st > 0) ? 2 : 1;
        const index_t ho = (h - 1) / stride + 1;
        index_t skip = x;
        if (p.proj >= 0) {
          const index_t pr = add_pair(name + ".proj.out", {n, out, ho, ho});
          const index_t pn = add_pair(name + ".proj.bn.out", {n, out, ho, ho});
          unit u;
          u.name = name + ".proj";
          u.kind = unit_kind::conv;
          u.in = {x, 0, c};
          u.x = full(x);
          u.dx = full(x + 1);
          u.dx_mode = grad_mode::accumulate;  // conv1, later in forward order, overwrites
          u.out = {pr, 0, out};
          u.y = full(pr);
          u.dy = full(pr + 1);
          u.conv = conv(p.proj, {n, c, h, h, out, 1, 1, 0, stride});
          units_.push_back(u);
          unit v;
          v.name = name + ".proj.bn";
          v.kind = unit_kind::bn;
          v.in = u.out;
          v.x = u.y;
          v.dx = full(pr + 1);
          v.out = {pn, 0, out};
          v.y = full(pn);
          v.dy = full(pn + 1);
          v.bn = bn(p.proj_bn, state_of(p.proj_bn));
          units_.push_back(v);
          skip = pn;
        }
        const index_t y1 = add_pair(name + ".conv1.out", {n, mid, h, h});
        const index_t y2 = add_pair(name + ".conv2.out", {n, mid, ho, ho});
        const index_t y3 = add_pair(name + ".conv3.out", {n, out, ho, ho});
        const index_t o = add_pair(name + ".out", {n, out, ho, ho});
        unit u1;
        u1.name = name + ".conv1";
        u1.kind = unit_kind::conv;
        u1.in = {x, 0, c};
        u1.x = full(x);
        u1.dx = full(x + 1);
        // The block's input feeds conv1 and the shortcut: the last of them in forward order
        // (the identity's add, or conv1 after a projection) overwrites its gradient.
        u1.dx_mode = p.proj >= 0 ? grad_mode::overwrite : grad_mode::accumulate;
        u1.out = {y1, 0, mid};
        u1.y = full(y1);
        u1.dy = full(y1 + 1);
        u1.conv = conv(p.conv1, {n, c, h, h, mid, 1, 1, 0, 1});
        units_.push_back(u1);
        unit u2;
        u2.name = name + ".conv2";
        u2.kind = unit_kind::bn_relu_conv;
        u2.in = u1.out;
        u2.x = full(y1);
        u2.dx = full(y1 + 1);
        u2.out = {y2, 0, mid};
        u2.y = full(y2);
        u2.dy = full(y2 + 1);
        u2.bn = bn(p.bn1, state_of(p.bn1));
        u2.conv = conv(p.conv2, {n, mid, h, h, mid, 3, 3, 1, stride});
        units_.push_back(u2);
        unit u3;
        u3.name = name + ".conv3";
        u3.kind = unit_kind::bn_relu_conv;
        u3.in = u2.out;
        u3.x = full(y2);
        u3.dx = full(y2 + 1);
        u3.out = {y3, 0, out};
        u3.y = full(y3);
        u3.dy = full(y3 + 1);
        u3.bn = bn(p.bn2, state_of(p.bn2));
        u3.conv = conv(p.conv3, {n, mid, ho, ho, out, 1, 1, 0, 1});
        units_.push_back(u3);
        unit e;
        e.name = name + ".out";
        e.kind = unit_kind::bn_add_relu;
        e.in = u3.out;
        e.x = full(y3);
        e.dx = full(y3 + 1);
        e.skip_in = {skip, 0, out};
        e.skip = full(skip);
        e.d_skip = full(skip + 1);
        e.out = {o, 0, out};
        e.y = full(o);
        e.dy = full(o + 1);
        e.bn = bn(p.bn3, state_of(p.bn3));
        units_.push_back(e);
        x = o, c = out, h = ho;
      }
    }
    features_ = add_buffer("features", {n, c, 1, 1}, false);
    features_grad_ = add_buffer("features.grad", {n, c, 1, 1}, true);
    unit pool;
    pool.name = "global_pool";
    pool.kind = unit_kind::global_avg_pool;
    pool.in = {x, 0, c};
    pool.out = {features_, 0, c};
    pool.x = full(x);
    pool.y = full(features_);
    pool.dx = full(x + 1);
    pool.dy = full(features_grad_);
    units_.push_back(pool);
  }

  resnet_config rc_;
  std::vector<block_params> blocks_;
};

}  // namespace paper
