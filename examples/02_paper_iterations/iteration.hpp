// One training iteration of a network built from the trainer's units (forward, loss,
// backward, SGD step) with every unit call timed and accumulated by layer type, the
// same convolutions timed alone, and a model of the bytes each variant moves through
// main memory.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <sys/resource.h>

#include <bnff/ops/conv2d_backward_data.hpp>
#include <bnff/ops/conv2d_backward_weights.hpp>
#include <bnff/ops/conv2d_forward.hpp>

#include "fused_engine.hpp"
#include "layers.hpp"
#include "network.hpp"
#include "optimizer.hpp"
#include "unfused_engine.hpp"

namespace paper {

using bnff::index_t;
using trainer::densenet;
using trainer::tensor_view;
using trainer::unit;
using trainer::unit_kind;

// The three implementations the paper compares.
enum class variant { unfused, bnff, bnff_icf };
inline const char* variant_name(variant v) {
  return v == variant::unfused ? "unfused" : v == variant::bnff ? "bnff" : "bnff-icf";
}
inline std::unique_ptr<trainer::conv_bn_engine> make_engine(variant v) {
  if (v == variant::unfused) return std::make_unique<trainer::unfused_engine>();
  return std::make_unique<trainer::fused_engine>(v == variant::bnff_icf);
}

// The layer type a unit's time is charged to.
inline std::string layer_type(const unit& u) {
  switch (u.kind) {
    case unit_kind::conv:
      return "conv";
    case unit_kind::bn_relu_conv:
      return u.conv.problem.r == 1 ? "BN-ReLU-conv1x1" : "BN-ReLU-conv3x3";
    case unit_kind::bn_relu:
      return "BN-ReLU";
    case unit_kind::bn:
      return "BN";
    case unit_kind::bn_add_relu:
      return "BN-add-ReLU";
    default:
      return "pooling";
  }
}

using clock_type = std::chrono::steady_clock;
inline double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// CPU seconds of the whole process (all threads, user + system): unlike wall time, it
// does not grow while other processes hold the cores (it still includes cache and
// memory-bandwidth interference, and any time OpenMP workers spin at a barrier).
inline double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

struct iteration_times {
  double forward = 0, backward = 0, sgd = 0;  // forward includes the classifier and loss
  double cpu_forward = 0, cpu_backward = 0, cpu_sgd = 0;
  std::map<std::string, double> fwd_by_type, bwd_by_type;
};

// Runs iterations of one network with one engine on one synthetic batch.
class iteration_runner {
 public:
  iteration_runner(densenet& net, std::unique_ptr<trainer::conv_bn_engine> engine, std::uint64_t seed)
      : net_(net), engine_(std::move(engine)) {
    engine_->prepare(net_);
    const auto fc = net_.classifier_shape();
    logits_.assign(std::size_t(fc.n * fc.out), 0.0f);
    d_logits_ = logits_;
    labels_.resize(std::size_t(fc.n));
    for (index_t i = 0; i < fc.n; ++i) labels_[std::size_t(i)] = std::int32_t((i * 7919) % fc.out);
    std::mt19937_64 gen(trainer::mix_seed(seed, 12345));
    for (auto& v : net_.input().data) v = float(trainer::standard_normal(gen));
  }

  // One iteration; returns the loss of the forward pass (before the SGD step).
  double step(iteration_times& t) {
    const auto& units = net_.units();
    auto t_fwd = clock_type::now();
    const double c0 = cpu_seconds();
    for (const unit& u : units) {
      const auto t0 = clock_type::now();
      switch (u.kind) {
        case unit_kind::avg_pool2x2:
          trainer::avg_pool2x2_forward(u.x, u.y);
          break;
        case unit_kind::max_pool3x3s2:
          trainer::max_pool3x3s2_forward(u.x, u.y);
          break;
        case unit_kind::global_avg_pool:
          trainer::global_avg_pool_forward(u.x, u.y.data());
          break;
        default:
          engine_->forward(u, true);
      }
      t.fwd_by_type[layer_type(u)] += seconds_since(t0);
    }
    const auto t_head = clock_type::now();
    const auto fc = net_.classifier_shape();
    trainer::fc_forward(fc, net_.features().data.data(), net_.fc_weight().value.data(), net_.fc_bias().value.data(),
                        logits_.data());
    const auto loss = trainer::softmax_cross_entropy(fc.n, fc.out, logits_.data(), labels_.data(), d_logits_.data());
    t.fwd_by_type["classifier"] += seconds_since(t_head);
    t.forward = seconds_since(t_fwd);
    const double c1 = cpu_seconds();
    t.cpu_forward = c1 - c0;

    const auto t_bwd = clock_type::now();
    trainer::fc_backward(fc, net_.features().data.data(), net_.fc_weight().value.data(), d_logits_.data(),
                         net_.features_grad().data.data(), net_.fc_weight().grad.data(), net_.fc_bias().grad.data());
    t.bwd_by_type["classifier"] += seconds_since(t_bwd);
    for (auto it = units.rbegin(); it != units.rend(); ++it) {
      const auto t0 = clock_type::now();
      switch (it->kind) {
        case unit_kind::avg_pool2x2:
          trainer::avg_pool2x2_backward(it->dy, it->dx);
          break;
        case unit_kind::max_pool3x3s2:
          trainer::max_pool3x3s2_backward(it->x, tensor_view<const float>(it->y), it->dy, it->dx);
          break;
        case unit_kind::global_avg_pool:
          trainer::global_avg_pool_backward(it->dy.data(), it->dx);
          break;
        default:
          engine_->backward(*it);
      }
      t.bwd_by_type[layer_type(*it)] += seconds_since(t0);
    }
    t.backward = seconds_since(t_bwd);
    const double c2 = cpu_seconds();
    t.cpu_backward = c2 - c1;

    grad_norm_ = 0;
    for (auto& p : net_.parameters())
      for (float g : p.grad) grad_norm_ += double(g) * double(g);
    grad_norm_ = std::sqrt(grad_norm_);

    const auto t_sgd = clock_type::now();
    const trainer::sgd_settings sgd{0.001, 0.9, 1e-4};  // small: the synthetic batch repeats
    for (auto& p : net_.parameters()) trainer::sgd_step(p, sgd.lr, sgd);
    t.sgd = seconds_since(t_sgd);
    t.cpu_sgd = cpu_seconds() - c2;
    return loss.loss;
  }

  double last_grad_norm() const { return grad_norm_; }

 private:
  densenet& net_;
  std::unique_ptr<trainer::conv_bn_engine> engine_;
  std::vector<float> logits_, d_logits_;
  std::vector<std::int32_t> labels_;
  double grad_norm_ = 0;
};

// The network's convolutions run alone (plain forward, data gradient where the unit has
// one, weight gradient) on scratch tensors: the convolution part of an iteration.
class conv_alone {
 public:
  explicit conv_alone(const densenet& net) {
    const int threads = std::max(1, bnff::max_threads());
    index_t ws = 0, xs = 0, ys = 0, wsz = 0;
    for (const unit& u : net.units()) {
      if (u.kind != unit_kind::conv && u.kind != unit_kind::bn_relu_conv) continue;
      const auto& pb = u.conv.problem;
      problems_.push_back({pb, !u.dx.empty()});
      ws = std::max({ws, bnff::conv2d_forward_workspace_size<float>(pb, threads),
                     bnff::conv2d_backward_data_workspace_size<float>(pb, threads),
                     bnff::bn_relu_conv2d_backward_workspace_size<float>(pb, threads)});
      xs = std::max(xs, pb.input_shape().size());
      ys = std::max(ys, pb.output_shape().size());
      wsz = std::max(wsz, pb.filter_shape().size());
    }
    ws_.assign(std::size_t(ws), 0.0f);
    x_.assign(std::size_t(xs), 0.5f);
    dx_.assign(std::size_t(xs), 0.0f);
    y_.assign(std::size_t(ys), 0.25f);
    w_.assign(std::size_t(wsz), 0.01f);
    dw_.assign(std::size_t(wsz), 0.0f);
  }

  // Seconds of forward and of backward for all the network's convolutions.
  std::pair<double, double> run() {
    const bnff::vector_view<float> ws(ws_.data(), index_t(ws_.size()));
    double fwd = 0, bwd = 0;
    for (const auto& [pb, has_dx] : problems_) {
      const tensor_view<const float> x(x_.data(), pb.input_shape()), w(w_.data(), pb.filter_shape());
      auto t0 = clock_type::now();
      bnff::conv2d_forward<float>(pb, x, w, {}, tensor_view<float>(y_.data(), pb.output_shape()), ws);
      fwd += seconds_since(t0);
      const tensor_view<const float> dy(y_.data(), pb.output_shape());
      t0 = clock_type::now();
      bnff::conv2d_backward_weights<float>(pb, x, dy, tensor_view<float>(dw_.data(), pb.filter_shape()), {}, ws);
      if (has_dx)
        bnff::conv2d_backward_data<float>(pb, dy, w, tensor_view<float>(dx_.data(), pb.input_shape()),
                                          bnff::grad_overwrite{}, ws);
      bwd += seconds_since(t0);
    }
    return {fwd, bwd};
  }

 private:
  std::vector<std::pair<bnff::conv2d_problem, bool>> problems_;
  std::vector<float> ws_, x_, dx_, y_, w_, dw_;
};

// Compulsory main-memory traffic of one iteration: every pass reads each tensor it
// reads once and writes each tensor it writes once (a pass that accumulates into a
// tensor reads and writes it). Passes fused into one sweep count once. Weights are
// read by the forward and data-gradient passes, their gradients written once.
struct traffic {
  double forward = 0, backward = 0;
  std::map<std::string, double> fwd_by_type, bwd_by_type;
};

inline void k_mark(std::vector<std::vector<bool>>& known, const unit& u) {
  for (index_t c = u.out.first; c < u.out.first + u.out.count; ++c)
    known[std::size_t(u.out.buffer)][std::size_t(c)] = true;
}

inline traffic memory_model(const densenet& net, variant v) {
  traffic t;
  const double f = sizeof(float);
  // Channels whose statistics the ICF engine already has (per buffer), as its rule says:
  // produced by a conv unit's epilogue, or swept once at their first reader.
  std::vector<std::vector<bool>> known(net.buffers().size());
  for (std::size_t b = 0; b < known.size(); ++b) known[b].assign(std::size_t(net.buffers()[b].shape.c), false);
  const auto& units = net.units();
  auto exact_input = [&](std::size_t i) {
    for (std::size_t j = 0; j < i; ++j)
      if ((units[j].kind == unit_kind::conv || units[j].kind == unit_kind::bn_relu_conv) &&
          units[j].out.buffer == units[i].in.buffer && units[j].out.first == units[i].in.first &&
          units[j].out.count == units[i].in.count)
        return true;
    return false;
  };
  // Bytes of the statistics sweep a fused BN unit needs before it can normalize.
  auto stats_sweep = [&](std::size_t i) -> double {
    const unit& u = units[i];
    const double per_channel = double(u.x.size() / u.x.c()) * f;
    if (v == variant::bnff) return exact_input(i) ? 0.0 : double(u.x.size()) * f;
    double swept = 0;
    auto& k = known[std::size_t(u.in.buffer)];
    for (index_t c = u.in.first; c < u.in.first + u.in.count; ++c)
      if (!k[std::size_t(c)]) swept += per_channel, k[std::size_t(c)] = true;
    return swept;
  };
  for (std::size_t i = 0; i < units.size(); ++i) {
    const unit& u = units[i];
    const double X = double(u.x.size()) * f, Y = double(u.y.size()) * f;
    const double W = u.kind == unit_kind::conv || u.kind == unit_kind::bn_relu_conv
                         ? double(u.conv.problem.filter_shape().size()) * f
                         : 0.0;
    const bool acc = u.dx_mode == trainer::grad_mode::accumulate;
    const double dX = u.dx.empty() ? 0.0 : (acc ? 2 * X : X);  // writing dx (accumulating reads it too)
    double fw = 0, bw = 0;
    const bool fused = v != variant::unfused;
    switch (u.kind) {
      case unit_kind::conv:
        fw = X + W + Y;
        if (fused) k_mark(known, u);
        bw = (X + Y) + (u.dx.empty() ? 0 : Y + W + dX) + W;  // weight gradient; data gradient
        break;
      case unit_kind::bn_relu_conv:
        if (fused) {
          fw = stats_sweep(i) + X + W + Y;  // BN-ReLU in the prologue, output statistics in the epilogue
          k_mark(known, u);
          // weight gradient (activation recomputed from x), data gradient with the mask and
          // sums in its epilogue (reads x, writes the BN-output gradient g), dx from x and g
          bw = (X + Y + W) + (Y + W + X + X) + (X + X + dX);
        } else {
          // mean, variance, normalize (x -> a), ReLU in place (a -> a), conv (a -> y)
          fw = X + X + (X + X) + (X + X) + (X + W + Y);
          // weight gradient from a, data gradient (-> g), ReLU backward (a, g -> g),
          // reductions (x, g), dx (x, g -> dx)
          bw = (X + Y + W) + (Y + W + X) + (X + X + X) + (X + X) + (X + X + dX);
        }
        break;
      case unit_kind::bn_relu:
        if (fused) {
          fw = stats_sweep(i) + X + Y;
          bw = X + Y + dX;  // reductions and dx, channel by channel (the second sweep hits cache)
        } else {
          fw = X + X + (X + Y) + (Y + Y);
          bw = (Y + Y + X) + (X + X) + (X + X + dX);
        }
        break;
      case unit_kind::bn:
        if (fused) {
          fw = stats_sweep(i) + X + Y;
          bw = X + Y + dX;
        } else {
          fw = X + X + (X + Y);
          bw = (X + Y) + (X + Y + dX);
        }
        break;
      case unit_kind::bn_add_relu:
        if (fused) {
          fw = stats_sweep(i) + X + X + Y;      // x, skip -> y
          bw = (X + Y + Y + X) + (X + X + dX);  // x, y, dy -> g (= d_skip) with sums; x, g -> dx
        } else {
          fw = X + X + (X + Y) + (Y + X + Y) + (Y + Y);  // mean, var, normalize, add, ReLU
          bw = (Y + Y + X) + (X + X) + (X + X + dX);     // ReLU backward (-> d_skip), reductions, dx
        }
        break;
      case unit_kind::max_pool3x3s2:
        fw = X + Y;
        bw = X + Y + Y + X;  // x, y, dy -> dx
        break;
      default:  // average pooling
        fw = X + Y;
        bw = Y + X;
    }
    t.forward += fw, t.backward += bw;
    t.fwd_by_type[layer_type(u)] += fw;
    t.bwd_by_type[layer_type(u)] += bw;
  }
  return t;
}

}  // namespace paper
