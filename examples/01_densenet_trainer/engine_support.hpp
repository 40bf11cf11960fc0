// What the fused and unfused engines share: the scratch every convolution and
// backward step borrows (sized once, from the network's shapes) and small helpers.
// Scratch is not activation memory: nothing in it survives from forward to backward.
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <bnff/ops/bn_backward_sums.hpp>
#include <bnff/ops/bn_relu_conv2d_backward.hpp>
#include <bnff/ops/conv2d_backward_weights.hpp>
#include <bnff/ops/conv2d_forward_stats.hpp>
#include <bnff/parallel/parallel.hpp>

#include "network.hpp"

namespace trainer {

// Per-channel float vectors of one BN: what its backward needs from its forward.
struct bn_vectors {
  std::vector<float> mean, invstd, scale, shift;
  void resize(index_t c) {
    for (auto* v : {&mean, &invstd, &scale, &shift}) v->assign(std::size_t(c), 0.0f);
  }
  std::uint64_t bytes() const { return 4 * sizeof(float) * mean.size(); }
};

inline vector_view<float> vec(std::vector<float>& v) { return {v.data(), index_t(v.size())}; }
inline vector_view<const float> cvec(const std::vector<float>& v) { return {v.data(), index_t(v.size())}; }
inline vector_view<const float> cvec(vector_view<float> v) { return v; }

// Scratch for every engine unit of one network, sized for the largest unit:
// the convolution workspace (forward, data and weight gradients, for the
// thread count at prepare time), the statistics and backward partials, and a
// gradient tensor shaped like the largest BN input (dy before it is added into
// a concatenation gradient).
class engine_scratch {
 public:
  void size_for(const densenet& net) {
    threads_ = std::max(1, bnff::max_threads());
    index_t ws = 0, fwd = 0, bwd = 0, dy = 0, channels = 1;
    for (const unit& u : net.units()) {
      if (u.kind == unit_kind::conv || u.kind == unit_kind::bn_relu_conv) {
        const bnff::conv2d_problem& pb = u.conv.problem;
        ws = std::max({ws, bnff::conv2d_forward_workspace_size<float>(pb, threads_),
                       bnff::bn_relu_conv2d_backward_workspace_size<float>(pb, threads_)});
        fwd = std::max(fwd, bnff::conv2d_stats_partition<float>(pb).size());
        bwd = std::max(bwd, bnff::bn_relu_conv2d_backward_partition<float>(pb).size());
      }
      if (u.kind == unit_kind::bn_relu_conv || u.kind == unit_kind::bn_relu) dy = std::max(dy, u.x.size());
    }
    for (const network_buffer& b : net.buffers()) channels = std::max(channels, b.shape.c);
    workspace_.assign(std::size_t(ws), 0.0f);
    forward_partials_.assign(std::size_t(fwd), bnff::moments{});
    backward_partials_.assign(std::size_t(bwd), bnff::bn_backward_partial{});
    gradient_.assign(std::size_t(dy), 0.0f);
    sums_.assign(std::size_t(bnff::bn_backward_sums_size(channels)), 0.0);
    channels_ = channels;
  }

  // The most channels of any buffer: what a bn_synchronizer must reserve.
  index_t max_channels() const noexcept { return channels_; }

  // Refuses a step with more threads than the workspace was sized for (the kernels would throw anyway).
  void check_threads(const char* engine) const {
    if (bnff::max_threads() > threads_)
      throw std::logic_error(std::string(engine) + " engine: prepared for " + std::to_string(threads_) +
                             " thread(s), running with " + std::to_string(bnff::max_threads()) +
                             " (set the thread count before building the model)");
  }

  vector_view<float> workspace() { return vec(workspace_); }
  vector_view<bnff::moments> forward_partials() {
    return {forward_partials_.data(), index_t(forward_partials_.size())};
  }
  vector_view<bnff::bn_backward_partial> backward_partials() {
    return {backward_partials_.data(), index_t(backward_partials_.size())};
  }
  // A BN's backward sums buffer for synchronized BN (bnff/stats/partials_buffer.hpp layout).
  vector_view<double> backward_sums(index_t channels) { return {sums_.data(), bnff::bn_backward_sums_size(channels)}; }
  // A packed gradient tensor of the given shape over the scratch.
  tensor_view<float> gradient(bnff::shape4 s) { return {gradient_.data(), s}; }

  std::uint64_t bytes() const {
    return sizeof(float) * (workspace_.size() + gradient_.size()) + sizeof(double) * sums_.size() +
           sizeof(bnff::moments) * forward_partials_.size() +
           sizeof(bnff::bn_backward_partial) * backward_partials_.size();
  }

 private:
  int threads_ = 1;
  index_t channels_ = 1;
  std::vector<float> workspace_, gradient_;
  std::vector<double> sums_;
  std::vector<bnff::moments> forward_partials_;
  std::vector<bnff::bn_backward_partial> backward_partials_;
};

// The position of `u` in the network's unit list (engines keep per-unit state by it).
inline std::size_t unit_index(const densenet& net, const unit& u, const char* engine) {
  const auto& units = net.units();
  if (units.empty() || &u < units.data() || &u >= units.data() + units.size())
    throw std::logic_error(std::string(engine) + " engine: unit '" + u.name + "' is not one of the prepared network's");
  return std::size_t(&u - units.data());
}

}  // namespace trainer
