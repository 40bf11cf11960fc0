// The fused engine: BN Fission-n-Fusion on bnff's operations.
//
// Forward, per unit:
//   stem conv      conv2d_forward_stats: the batch statistics of its output come
//                  from the convolution's epilogue, while each output block is in cache.
//   bn_relu_conv   batch_norm_finalize turns the input channels' saved statistics into
//                  this unit's scale and shift (its own gamma and beta) and updates its
//                  running statistics; bn_relu_conv2d_forward_stats applies BN+ReLU in
//                  the convolution's prologue (never stored) and accumulates the output's
//                  statistics in its epilogue.
//   bn_relu        batch_norm_apply<bn_relu> with the saved statistics (one sweep).
// Statistics are kept per channel of each buffer: a concatenation channel's batch
// statistics are fixed once it is produced, so every later composite layer of the
// block and the transition reuse them (inter-composite-layer fusion: BN1 costs no
// sweep). Channels no engine unit produced (a transition's pooled output) get theirs
// from one batch_norm_stats sweep at their first reader.
//   bn             batch_norm_apply (a ResNet projection shortcut's BN).
//   bn_add_relu    bn_add_relu_forward: BN apply, residual add and ReLU in one sweep.
// With reuse_concat_stats off (the paper's per-layer BNFF, without inter-composite-layer
// fusion), a unit whose input is not exactly one engine unit's output (a BN reading a
// concatenation) computes its input's statistics with one batch_norm_stats sweep every time.
// Backward: bn_relu_conv2d_backward (activation recomputed in the weight gradient's
// prologue, ReLU mask and BN sums in the data gradient's epilogue, one dx sweep that
// overwrites or accumulates into the concatenation gradient); batch_norm_backward<bn_relu>.
// Kept from forward to backward besides the network's buffers: per-channel vectors only.
// Synchronized BN (a bn_synchronizer, data-parallel ranks): each channel's statistics are
// made global once, where they are produced (the convolution's epilogue or the sweep), so
// every later reader normalizes with the global batch's; each BN's backward sums are
// all-reduced between its reductions and its dx sweep (the sync hook of
// bn_relu_conv2d_backward and batch_norm_backward).
#pragma once

#include <bnff/ops/batch_norm_apply.hpp>
#include <bnff/ops/batch_norm_backward.hpp>
#include <bnff/ops/batch_norm_finalize.hpp>
#include <bnff/ops/batch_norm_inference.hpp>
#include <bnff/ops/batch_norm_stats.hpp>
#include <bnff/ops/bn_add_relu.hpp>
#include <bnff/ops/bn_relu_conv2d_backward.hpp>
#include <bnff/ops/bn_relu_conv2d_forward_stats.hpp>
#include <bnff/ops/conv2d_backward_data.hpp>

#include "engine_support.hpp"

namespace trainer {

class fused_engine : public conv_bn_engine {
 public:
  explicit fused_engine(bool reuse_concat_stats = true) : reuse_(reuse_concat_stats) {}
  std::string name() const override { return reuse_ ? "fused" : "fused-per-layer"; }

  void prepare(const densenet& net) override {
    net_ = &net;
    scratch_.size_for(net);
    const auto& units = net.units();
    train_.assign(units.size(), {});
    infer_.assign(units.size(), {});
    exact_input_.assign(units.size(), false);
    for (std::size_t i = 0; i < units.size(); ++i) {
      if (has_bn(units[i].kind)) {
        train_[i].resize(units[i].x.c());
        infer_[i].resize(units[i].x.c());
      }
      for (std::size_t j = 0; j < i; ++j)
        if ((units[j].kind == unit_kind::conv || units[j].kind == unit_kind::bn_relu_conv) &&
            units[j].out.buffer == units[i].in.buffer && units[j].out.first == units[i].in.first &&
            units[j].out.count == units[i].in.count)
          exact_input_[i] = true;
    }
    stats_.assign(net.buffers().size(), {});
    stamp_.assign(net.buffers().size(), {});
    for (std::size_t b = 0; b < net.buffers().size(); ++b)
      if (!net.buffers()[b].gradient) {
        stats_[b].assign(std::size_t(net.buffers()[b].shape.c), bnff::moments{});
        stamp_[b].assign(std::size_t(net.buffers()[b].shape.c), 0);
      }
    first_unit_ = units.size();
    for (std::size_t i = 0; i < units.size() && first_unit_ == units.size(); ++i)
      if (units[i].kind == unit_kind::conv || has_bn(units[i].kind)) first_unit_ = i;
    if (sync_)
      for (const unit& u : units)
        if (u.kind == unit_kind::bn || u.kind == unit_kind::bn_add_relu)
          throw std::logic_error("fused engine: unit '" + u.name +
                                 "' (BN or BN-add-ReLU) does not support synchronized BN yet");
    if (sync_) sync_->reserve(scratch_.max_channels());
  }

  // Per-channel statistics of every activation channel, and each BN's mean, invstd, scale, shift.
  std::uint64_t workspace_bytes() const override {
    std::uint64_t b = 0;
    for (const auto& s : stats_) b += s.size() * sizeof(bnff::moments);
    for (const auto& v : train_) b += v.bytes();
    return b;
  }
  std::uint64_t scratch_bytes() const override { return scratch_.bytes(); }

  void forward(const unit& u, bool training) override {
    const std::size_t i = unit_index(*net_, u, "fused");
    scratch_.check_threads("fused");
    if (training && i == first_unit_) ++generation_;  // a new batch: every saved statistic is stale
    const bnff::conv2d_problem& pb = u.conv.problem;
    switch (u.kind) {
      case unit_kind::conv:
        if (training) {
          bnff::conv2d_forward_stats<float>(pb, u.x, u.conv.weight, u.y, scratch_.forward_partials(),
                                            scratch_.workspace());
          keep_output_stats(u);
        } else {
          bnff::conv2d_forward<float>(pb, u.x, u.conv.weight, {}, u.y, scratch_.workspace());
        }
        break;
      case unit_kind::bn_relu_conv: {
        const bn_vectors& p = training ? batch_params(i, u) : inference_params(i, u);
        bnff::bn_relu_conv2d_forward_stats<float>(pb, u.x, cvec(p.scale), cvec(p.shift), u.conv.weight, u.y,
                                                  scratch_.forward_partials(), scratch_.workspace());
        if (training) keep_output_stats(u);
        break;
      }
      case unit_kind::bn_relu:
        if (training) {
          const bn_vectors& p = batch_params(i, u);
          bnff::batch_norm_apply<bnff::bn_relu>(u.x, u.y, cvec(p.mean), cvec(p.scale), cvec(u.bn.beta));
        } else {
          const bn_vectors& p = inference_params(i, u);
          bnff::batch_norm_apply_affine<bnff::bn_relu>(u.x, u.y, cvec(p.scale), cvec(p.shift));
        }
        break;
      case unit_kind::bn:
        if (training) {
          const bn_vectors& p = batch_params(i, u);
          bnff::batch_norm_apply<bnff::bn_identity>(u.x, u.y, cvec(p.mean), cvec(p.scale), cvec(u.bn.beta));
        } else {
          const bn_vectors& p = inference_params(i, u);
          bnff::batch_norm_apply_affine<bnff::bn_identity>(u.x, u.y, cvec(p.scale), cvec(p.shift));
        }
        break;
      case unit_kind::bn_add_relu:
        if (training) {
          const bn_vectors& p = batch_params(i, u);
          bnff::bn_add_relu_forward(u.x, u.skip, u.y, cvec(p.mean), cvec(p.scale), cvec(u.bn.beta));
        } else {
          const bn_vectors& p = inference_params(i, u);  // its mean stays 0: y = max(0, x * scale + shift + skip)
          bnff::bn_add_relu_forward(u.x, u.skip, u.y, cvec(p.mean), cvec(p.scale), cvec(p.shift));
        }
        break;
      default:
        throw std::logic_error("fused engine: unit '" + u.name + "' is not a conv or BN unit");
    }
  }

  void backward(const unit& u) override {
    const std::size_t i = unit_index(*net_, u, "fused");
    scratch_.check_threads("fused");
    const bnff::conv2d_problem& pb = u.conv.problem;
    const bool accumulate = u.dx_mode == grad_mode::accumulate;
    switch (u.kind) {
      case unit_kind::conv:
        bnff::conv2d_backward_weights<float>(pb, u.x, u.dy, u.conv.d_weight, {}, scratch_.workspace());
        if (!u.dx.empty())
          bnff::with_grad_mode(accumulate, [&](auto mode) {
            bnff::conv2d_backward_data<float>(pb, u.dy, u.conv.weight, u.dx, mode, scratch_.workspace());
          });
        break;
      case unit_kind::bn_relu_conv: {
        const bn_vectors& p = train_[i];
        // The gradient at the BN output: in dx itself when dx is overwritten, else in scratch.
        const bool in_place = !u.dx.empty() && !accumulate;
        const tensor_view<float> dy = in_place ? u.dx : scratch_.gradient(u.x.shape());
        bnff::with_grad_mode(accumulate, [&](auto mode) {
          if (sync_)
            bnff::bn_relu_conv2d_backward<float>(pb, u.x, cvec(p.mean), cvec(p.invstd), cvec(p.scale), cvec(p.shift),
                                                 u.conv.weight, u.dy, u.conv.d_weight, dy, scratch_.backward_partials(),
                                                 u.bn.d_gamma, u.bn.d_beta, u.dx.empty() ? dy : u.dx, mode,
                                                 scratch_.workspace(), scratch_.backward_sums(u.x.c()),
                                                 [this](vector_view<double> sums) { sync_->sum_backward(sums); });
          else
            bnff::bn_relu_conv2d_backward<float>(pb, u.x, cvec(p.mean), cvec(p.invstd), cvec(p.scale), cvec(p.shift),
                                                 u.conv.weight, u.dy, u.conv.d_weight, dy, scratch_.backward_partials(),
                                                 u.bn.d_gamma, u.bn.d_beta, u.dx.empty() ? dy : u.dx, mode,
                                                 scratch_.workspace());
        });
        break;
      }
      case unit_kind::bn_relu: {
        const bn_vectors& p = train_[i];
        if (u.dx.empty()) throw std::logic_error("fused engine: BN-ReLU unit '" + u.name + "' has no input gradient");
        bnff::with_grad_mode(accumulate, [&](auto mode) {
          using mode_t = decltype(mode);
          if (sync_)
            bnff::batch_norm_backward<bnff::bn_relu, mode_t>(
                u.x, u.dy, cvec(p.mean), cvec(p.invstd), cvec(p.scale), cvec(u.bn.beta), u.dx, u.bn.d_gamma,
                u.bn.d_beta, scratch_.backward_sums(u.x.c()),
                [this](vector_view<double> sums) { sync_->sum_backward(sums); });
          else
            bnff::batch_norm_backward<bnff::bn_relu, mode_t>(u.x, u.dy, cvec(p.mean), cvec(p.invstd), cvec(p.scale),
                                                             cvec(u.bn.beta), u.dx, u.bn.d_gamma, u.bn.d_beta);
        });
        break;
      }
      case unit_kind::bn: {
        const bn_vectors& p = train_[i];
        if (u.dx.empty()) throw std::logic_error("fused engine: BN unit '" + u.name + "' has no input gradient");
        if (accumulate)
          bnff::batch_norm_backward<bnff::bn_identity, bnff::grad_accumulate>(
              u.x, u.dy, cvec(p.mean), cvec(p.invstd), cvec(p.scale), cvec(u.bn.beta), u.dx, u.bn.d_gamma, u.bn.d_beta);
        else
          bnff::batch_norm_backward<bnff::bn_identity, bnff::grad_overwrite>(
              u.x, u.dy, cvec(p.mean), cvec(p.invstd), cvec(p.scale), cvec(u.bn.beta), u.dx, u.bn.d_gamma, u.bn.d_beta);
        break;
      }
      case unit_kind::bn_add_relu: {
        const bn_vectors& p = train_[i];
        if (u.dx.empty() || u.d_skip.empty())
          throw std::logic_error("fused engine: BN-add-ReLU unit '" + u.name + "' needs dx and d_skip");
        bnff::with_grad_mode(accumulate, [&](auto mode) {
          bnff::bn_add_relu_backward(u.x, tensor_view<const float>(u.y), u.dy, cvec(p.mean), cvec(p.invstd),
                                     cvec(p.scale), u.d_skip, u.dx, u.bn.d_gamma, u.bn.d_beta, mode);
        });
        break;
      }
      default:
        throw std::logic_error("fused engine: unit '" + u.name + "' is not a conv or BN unit");
    }
  }

 private:
  static bool has_bn(unit_kind k) {
    return k == unit_kind::bn_relu_conv || k == unit_kind::bn_relu || k == unit_kind::bn || k == unit_kind::bn_add_relu;
  }

  vector_view<bnff::moments> channel_stats(const buffer_slice& s) {
    return {stats_[std::size_t(s.buffer)].data() + s.first, s.count};
  }

  // The output's statistics from the convolution's partials, saved for every later reader.
  void keep_output_stats(const unit& u) {
    const bnff::stats_partition part = bnff::conv2d_stats_partition<float>(u.conv.problem);
    bnff::merge_stats_partials(part, vector_view<const bnff::moments>(scratch_.forward_partials().data(), part.size()),
                               channel_stats(u.out));
    if (sync_) sync_->merge_moments(channel_stats(u.out));
    auto& stamp = stamp_[std::size_t(u.out.buffer)];
    std::fill(stamp.begin() + u.out.first, stamp.begin() + u.out.first + u.out.count, generation_);
  }

  // Statistics of the unit's input channels: saved by their producer, or (for channels no engine
  // unit produced) computed now, once per batch, by one sweep over each run of such channels.
  vector_view<const bnff::moments> input_stats(std::size_t i, const unit& u) {
    auto& stamp = stamp_[std::size_t(u.in.buffer)];
    const buffer_slice& in = u.in;
    if (!reuse_ && !exact_input_[i]) {  // per-layer BNFF: this BN's own statistics sweep
      bnff::batch_norm_stats(u.x, channel_stats(in));
      if (sync_) sync_->merge_moments(channel_stats(in));
      std::fill(stamp.begin() + in.first, stamp.begin() + in.first + in.count, generation_);
      return channel_stats(in);
    }
    for (index_t c = 0; c < in.count;) {
      if (stamp[std::size_t(in.first + c)] == generation_) {
        ++c;
        continue;
      }
      index_t end = c + 1;
      while (end < in.count && stamp[std::size_t(in.first + end)] != generation_) ++end;
      bnff::batch_norm_stats(u.x.channels(c, end - c), channel_stats({in.buffer, in.first + c, end - c}));
      if (sync_) sync_->merge_moments(channel_stats({in.buffer, in.first + c, end - c}));
      std::fill(stamp.begin() + in.first + c, stamp.begin() + in.first + end, generation_);
      c = end;
    }
    return channel_stats(in);
  }

  // Training: mean, invstd, scale, shift from the batch statistics; running statistics updated.
  const bn_vectors& batch_params(std::size_t i, const unit& u) {
    bn_vectors& p = train_[i];
    bnff::batch_norm_finalize<float>(input_stats(i, u), cvec(u.bn.gamma), cvec(u.bn.beta), u.bn.eps, u.bn.momentum,
                                     u.bn.running_mean, u.bn.running_var, vec(p.mean), vec(p.invstd), vec(p.scale),
                                     vec(p.shift));
    return p;
  }

  // Inference: scale and shift from the running statistics (kept apart from the training vectors).
  const bn_vectors& inference_params(std::size_t i, const unit& u) {
    bn_vectors& p = infer_[i];
    bnff::batch_norm_inference_params<float>(cvec(u.bn.gamma), cvec(u.bn.beta), cvec(u.bn.running_mean),
                                             cvec(u.bn.running_var), u.bn.eps, vec(p.scale), vec(p.shift));
    return p;
  }

  const densenet* net_ = nullptr;
  engine_scratch scratch_;
  std::vector<bn_vectors> train_, infer_;          // per unit (BN units only)
  std::vector<std::vector<bnff::moments>> stats_;  // per buffer, per channel
  std::vector<std::vector<std::uint64_t>> stamp_;  // the batch each channel's statistics belong to
  std::uint64_t generation_ = 0;
  std::size_t first_unit_ = 0;
  bool reuse_ = true;              // statistics of a concatenation channel computed once, reused by every reader
  std::vector<bool> exact_input_;  // per unit: its input is exactly an earlier conv unit's output
};

}  // namespace trainer
