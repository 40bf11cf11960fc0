// The unfused engine: the conventional sequence a framework runs, on bnff's
// baseline operations (each pass as SIMD and threaded as the fused ones, so the
// comparison measures fusion, not code quality).
//
// Forward, per unit:
//   conv           conv2d_forward.
//   bn_relu_conv   over the unit's whole input: a mean sweep and a variance sweep
//                  (unfused::batch_norm_block_shifts, batch_norm_block_moments), a
//                  normalize sweep x * scale + shift (batch_norm_apply_affine, the form
//                  PyTorch's CPU kernel and the fused prologue use) and a ReLU sweep (in
//                  place over the normalized tensor, as torchvision's DenseNet does), so
//                  every reader of a concatenation recomputes its statistics; the activated
//                  tensor A = max(0, BN(x)) is stored for backward; conv2d_forward(A).
//   bn_relu        the same four sweeps into the unit's output, normalizing as
//                  (x - mean) * scale + beta (batch_norm_apply, the fused BN-ReLU's form).
//   bn             mean, variance and normalize sweeps into the unit's output.
//   bn_add_relu    the same three sweeps, then the residual add and the ReLU (in place).
// The statistics sweeps cut each channel into the blocks its producer's fused epilogue
// uses, and batch_norm_finalize derives mean, invstd, scale and shift: with the
// normalize forms above, both engines compute bitwise the same activations and ReLU
// masks (a mask flipped by rounding, amplified by SGD, would otherwise part the runs).
// Backward: unfused::bn_relu_conv2d_backward (weight gradient from the stored A, data
// gradient, ReLU mask from A, BN reductions in the fused epilogue's block order, BN dx:
// one sweep each);
// relu_backward + batch_norm_backward_reduce + bn_backward_dx for bn_relu and bn_add_relu
// (whose ReLU gradient is the skip's gradient); the last two for bn.
// Kept from forward to backward besides the network's buffers: A for every
// BN-ReLU-conv (quadratic in a block's depth) and per-channel vectors.
// Synchronized BN (a bn_synchronizer, data-parallel ranks), as frameworks do it: the
// mean and variance passes (unfused::batch_norm_mean, batch_norm_variance) give this rank's moments, which are made global before the
// normalize sweep; in backward, the reduction sweep's sums are all-reduced before the
// dx sweep (bn_backward_dx_from_sums). Every BN unit synchronizes its own statistics.
#pragma once

#include <bnff/ops/batch_norm_apply.hpp>
#include <bnff/ops/batch_norm_finalize.hpp>
#include <bnff/ops/batch_norm_inference.hpp>
#include <bnff/ops/batch_norm_stats.hpp>
#include <bnff/ops/bn_add_relu.hpp>
#include <bnff/ops/conv2d_backward_data.hpp>
#include <bnff/ops/unfused/batch_norm_moments_passes.hpp>
#include <bnff/ops/unfused/batch_norm_unfused.hpp>
#include <bnff/ops/unfused/bn_relu_conv2d_backward_unfused.hpp>
#include <bnff/stats/running_stats.hpp>

#include <cmath>

#include "engine_support.hpp"

namespace trainer {

class unfused_engine : public conv_bn_engine {
 public:
  std::string name() const override { return "unfused"; }

  void prepare(const densenet& net) override {
    net_ = &net;
    scratch_.size_for(net);
    const auto& units = net.units();
    params_.assign(units.size(), {});
    var_.assign(units.size(), {});
    activations_.assign(units.size(), {});
    for (std::size_t i = 0; i < units.size(); ++i) {
      const unit& u = units[i];
      if (u.kind != unit_kind::bn_relu_conv && u.kind != unit_kind::bn_relu && u.kind != unit_kind::bn &&
          u.kind != unit_kind::bn_add_relu)
        continue;
      params_[i].resize(u.x.c());
      var_[i].assign(std::size_t(u.x.c()), 0.0f);
      if (u.kind == unit_kind::bn_relu_conv) activations_[i].assign(std::size_t(u.x.size()), 0.0f);
    }
    moments_.assign(std::size_t(scratch_.max_channels()), bnff::moments{});
    // The statistics block of every activation channel: its producing convolution's
    // (conv2d_stats_partition), the standalone default for channels no convolution wrote.
    block_.assign(net.buffers().size(), {});
    for (std::size_t b = 0; b < net.buffers().size(); ++b)
      block_[b].assign(std::size_t(net.buffers()[b].shape.c), bnff::default_stats_block);
    for (const unit& u : units)
      if (u.kind == unit_kind::conv || u.kind == unit_kind::bn_relu_conv)
        std::fill(block_[std::size_t(u.out.buffer)].begin() + u.out.first,
                  block_[std::size_t(u.out.buffer)].begin() + u.out.first + u.out.count,
                  bnff::conv2d_stats_partition<float>(u.conv.problem).block);
    index_t shifts = 0;  // the mean sweep's per-block shifts of the largest BN input
    for (const unit& u : units)
      if (has_bn(u.kind)) {
        index_t n = 0;
        for (index_t c = 0; c < u.in.count; ++c)
          n += u.x.n() * ((u.x.plane() + block_[std::size_t(u.in.buffer)][std::size_t(u.in.first + c)] - 1) /
                          block_[std::size_t(u.in.buffer)][std::size_t(u.in.first + c)]);
        shifts = std::max(shifts, n);
      }
    shifts_.assign(std::size_t(shifts), 0.0f);
    if (sync_)
      for (const unit& u : units)
        if (u.kind == unit_kind::bn || u.kind == unit_kind::bn_add_relu)
          throw std::logic_error("unfused engine: unit '" + u.name +
                                 "' (BN or BN-add-ReLU) does not support synchronized BN yet");
    if (sync_) sync_->reserve(scratch_.max_channels());
  }

  // The stored activations and each BN's mean, variance, invstd, scale (shift is the inference one).
  std::uint64_t workspace_bytes() const override {
    std::uint64_t b = 0;
    for (std::size_t i = 0; i < params_.size(); ++i) b += sizeof(float) * (activations_[i].size() + 4 * var_[i].size());
    return b;
  }
  std::uint64_t scratch_bytes() const override { return scratch_.bytes(); }

  void forward(const unit& u, bool training) override {
    const std::size_t i = unit_index(*net_, u, "unfused");
    scratch_.check_threads("unfused");
    const bnff::conv2d_problem& pb = u.conv.problem;
    switch (u.kind) {
      case unit_kind::conv:
        bnff::conv2d_forward<float>(pb, u.x, u.conv.weight, {}, u.y, scratch_.workspace());
        break;
      case unit_kind::bn_relu_conv: {
        const tensor_view<float> a = activation(i, u);
        bn_relu(i, u, a, training, true);
        bnff::conv2d_forward<float>(pb, a, u.conv.weight, {}, u.y, scratch_.workspace());
        break;
      }
      case unit_kind::bn_relu:
        bn_relu(i, u, u.y, training);
        break;
      case unit_kind::bn:
        bn_plain(i, u, training);
        break;
      case unit_kind::bn_add_relu:
        bn_plain(i, u, training);
        bnff::unfused::add(tensor_view<const float>(u.y), u.skip, u.y);
        bnff::unfused::relu(tensor_view<const float>(u.y), u.y);
        break;
      default:
        throw std::logic_error("unfused engine: unit '" + u.name + "' is not a conv or BN unit");
    }
  }

  void backward(const unit& u) override {
    const std::size_t i = unit_index(*net_, u, "unfused");
    scratch_.check_threads("unfused");
    const bnff::conv2d_problem& pb = u.conv.problem;
    const bool accumulate = u.dx_mode == grad_mode::accumulate;
    bn_vectors& p = params_[i];
    switch (u.kind) {
      case unit_kind::conv:
        bnff::conv2d_backward_weights<float>(pb, u.x, u.dy, u.conv.d_weight, {}, scratch_.workspace());
        if (!u.dx.empty())
          bnff::with_grad_mode(accumulate, [&](auto mode) {
            bnff::conv2d_backward_data<float>(pb, u.dy, u.conv.weight, u.dx, mode, scratch_.workspace());
          });
        break;
      case unit_kind::bn_relu_conv: {
        // The gradient at the activation: in dx itself when dx is overwritten, else in scratch.
        const bool in_place = !u.dx.empty() && !accumulate;
        const tensor_view<float> da = in_place ? u.dx : scratch_.gradient(u.x.shape());
        if (sync_) {
          // The same sweeps as unfused::bn_relu_conv2d_backward, the sums all-reduced before dx.
          const tensor_view<const float> a = activation(i, u);
          bnff::conv2d_backward_weights<float>(pb, a, u.dy, u.conv.d_weight, {}, scratch_.workspace());
          bnff::conv2d_backward_data<float>(pb, u.dy, u.conv.weight, da, bnff::grad_overwrite{}, scratch_.workspace());
          bnff::unfused::relu_backward(a, tensor_view<const float>(da), da);
          synced_dx(p, u, da, u.dx.empty() ? da : u.dx, accumulate);
          break;
        }
        bnff::with_grad_mode(accumulate, [&](auto mode) {
          bnff::unfused::bn_relu_conv2d_backward<float>(
              pb, u.x, activation(i, u), cvec(p.mean), cvec(p.invstd), cvec(p.scale), u.conv.weight, u.dy,
              u.conv.d_weight, da, u.bn.d_gamma, u.bn.d_beta, u.dx.empty() ? da : u.dx, mode, scratch_.workspace());
        });
        break;
      }
      case unit_kind::bn_relu: {
        if (u.dx.empty()) throw std::logic_error("unfused engine: BN-ReLU unit '" + u.name + "' has no input gradient");
        const tensor_view<float> dy = scratch_.gradient(u.x.shape());
        bnff::unfused::relu_backward(tensor_view<const float>(u.y), u.dy, dy);  // mask from the stored output
        if (sync_) {
          synced_dx(p, u, dy, u.dx, accumulate);
          break;
        }
        bnff::unfused::batch_norm_backward_reduce(u.x, tensor_view<const float>(dy), cvec(p.mean), cvec(p.invstd),
                                                  u.bn.d_beta, u.bn.d_gamma);  // sum(dy), sum(dy * xhat)
        bnff::with_grad_mode(accumulate, [&](auto mode) {
          bnff::bn_backward_dx<float>(u.x, dy, cvec(p.mean), cvec(p.invstd), cvec(p.scale), cvec(u.bn.d_gamma),
                                      cvec(u.bn.d_beta), u.dx, mode);
        });
        break;
      }
      case unit_kind::bn:
      case unit_kind::bn_add_relu: {
        if (u.dx.empty()) throw std::logic_error("unfused engine: BN unit '" + u.name + "' has no input gradient");
        tensor_view<const float> dy = u.dy;
        if (u.kind == unit_kind::bn_add_relu) {  // the ReLU's gradient is also the skip's
          bnff::unfused::relu_backward(tensor_view<const float>(u.y), u.dy, u.d_skip);
          dy = u.d_skip;
        }
        bnff::unfused::batch_norm_backward_reduce(u.x, dy, cvec(p.mean), cvec(p.invstd), u.bn.d_beta, u.bn.d_gamma);
        bnff::with_grad_mode(accumulate, [&](auto mode) {
          bnff::bn_backward_dx<float>(u.x, dy, cvec(p.mean), cvec(p.invstd), cvec(p.scale), cvec(u.bn.d_gamma),
                                      cvec(u.bn.d_beta), u.dx, mode);
        });
        break;
      }
      default:
        throw std::logic_error("unfused engine: unit '" + u.name + "' is not a conv or BN unit");
    }
  }

 private:
  // u.y = BN(u.x) in three sweeps (training: mean, variance, normalize; running statistics
  // updated; inference: one affine sweep from the running statistics).
  void bn_plain(std::size_t i, const unit& u, bool training) {
    bn_vectors& p = params_[i];
    if (!training) {
      bnff::batch_norm_inference_params<float>(cvec(u.bn.gamma), cvec(u.bn.beta), cvec(u.bn.running_mean),
                                               cvec(u.bn.running_var), u.bn.eps, vec(p.scale), vec(p.shift));
      bnff::batch_norm_apply_affine<bnff::bn_identity>(u.x, u.y, cvec(p.scale), cvec(p.shift));
      return;
    }
    batch_params(i, u);
    bnff::batch_norm_apply<bnff::bn_identity>(u.x, u.y, cvec(p.mean), cvec(p.scale), cvec(u.bn.beta));
  }

  static bool has_bn(unit_kind k) {
    return k == unit_kind::bn_relu_conv || k == unit_kind::bn_relu || k == unit_kind::bn || k == unit_kind::bn_add_relu;
  }

  // Training: the statistics of the unit's whole input in a mean sweep and a variance sweep,
  // each run of channels of one producer cut into that producer's blocks (so the statistics
  // are bitwise those the fused engine takes from the producer's epilogue); then mean, invstd,
  // scale, shift and the running statistics by batch_norm_finalize, as the fused engine does.
  void batch_params(std::size_t i, const unit& u) {
    bn_vectors& p = params_[i];
    const std::vector<index_t>& blocks = block_[std::size_t(u.in.buffer)];
    const vector_view<bnff::moments> stats(moments_.data(), u.x.c());
    // f(first channel, count, block) for every run of channels with one block size.
    const auto for_each_run = [&](auto&& f) {
      for (index_t c = 0; c < u.x.c();) {
        const index_t block = blocks[std::size_t(u.in.first + c)];
        index_t end = c + 1;
        while (end < u.x.c() && blocks[std::size_t(u.in.first + end)] == block) ++end;
        f(c, end - c, block);
        c = end;
      }
    };
    const auto shifts_of = [&](index_t count, index_t block, index_t& offset) {
      const vector_view<float> v(shifts_.data() + offset, u.x.n() * count * ((u.x.plane() + block - 1) / block));
      offset += v.size();
      return v;
    };
    index_t offset = 0;
    for_each_run([&](index_t c, index_t count, index_t block) {  // the mean sweep
      bnff::unfused::batch_norm_block_shifts(u.x.channels(c, count), block, shifts_of(count, block, offset));
    });
    offset = 0;
    for_each_run([&](index_t c, index_t count, index_t block) {  // the variance sweep
      const vector_view<float> sh = shifts_of(count, block, offset);
      bnff::unfused::batch_norm_block_moments<xsimd::default_arch, float>(u.x.channels(c, count), block, vector_view<const float>(sh),
                                              vector_view<bnff::moments>(moments_.data() + c, count));
    });
    bnff::batch_norm_finalize<float>(vector_view<const bnff::moments>(stats), cvec(u.bn.gamma), cvec(u.bn.beta),
                                     u.bn.eps, u.bn.momentum, u.bn.running_mean, u.bn.running_var, vec(p.mean),
                                     vec(p.invstd), vec(p.scale), vec(p.shift));
  }

  tensor_view<float> activation(std::size_t i, const unit& u) { return {activations_[i].data(), u.x.shape()}; }

  // out = max(0, BN(x)) in four sweeps (training: batch statistics, running statistics
  // updated; inference: one affine + ReLU sweep from the running statistics).
  // affine: normalize as x * scale + shift (the fused convolution prologue's form), else as
  // (x - mean) * scale + beta (batch_norm_apply's, the fused BN-ReLU's).
  void bn_relu(std::size_t i, const unit& u, tensor_view<float> out, bool training, bool affine = false) {
    bn_vectors& p = params_[i];
    if (!training) {
      bnff::batch_norm_inference_params<float>(cvec(u.bn.gamma), cvec(u.bn.beta), cvec(u.bn.running_mean),
                                               cvec(u.bn.running_var), u.bn.eps, vec(p.scale), vec(p.shift));
      bnff::batch_norm_apply_affine<bnff::bn_relu>(u.x, out, cvec(p.scale), cvec(p.shift));
      return;
    }
    double m = double(u.x.n()) * double(u.x.plane());
    if (sync_) {
      // This rank's mean and variance sweeps, the moments made global, then normalize and ReLU.
      const index_t channels = u.x.c();
      bnff::unfused::batch_norm_mean(u.x, vec(p.mean));
      bnff::unfused::batch_norm_variance(u.x, cvec(p.mean), vec(var_[i]));
      const vector_view<bnff::moments> stats(moments_.data(), channels);
      for (index_t c = 0; c < channels; ++c)
        stats[c] = {m, double(p.mean[std::size_t(c)]), double(var_[i][std::size_t(c)]) * m};
      sync_->merge_moments(stats);
      for (index_t c = 0; c < channels; ++c)
        p.mean[std::size_t(c)] = float(stats[c].mean), var_[i][std::size_t(c)] = float(stats[c].variance());
      m = stats[0].count;
      bnff::unfused::batch_norm_normalize(u.x, out, cvec(p.mean), cvec(var_[i]), cvec(u.bn.gamma), cvec(u.bn.beta),
                                          u.bn.eps);
      bnff::unfused::relu(tensor_view<const float>(out), out);
      for (index_t c = 0; c < channels; ++c)
        p.invstd[std::size_t(c)] = float(1.0 / std::sqrt(double(var_[i][std::size_t(c)]) + u.bn.eps));
    } else {
      batch_params(i, u);
      if (affine)
        bnff::batch_norm_apply_affine<bnff::bn_identity>(u.x, out, cvec(p.scale), cvec(p.shift));
      else
        bnff::batch_norm_apply<bnff::bn_identity>(u.x, out, cvec(p.mean), cvec(p.scale), cvec(u.bn.beta));
      bnff::unfused::relu(tensor_view<const float>(out), out);
      return;
    }
    for (index_t c = 0; c < u.x.c(); ++c) {
      p.scale[std::size_t(c)] = float(double(u.bn.gamma[c]) * double(p.invstd[std::size_t(c)]));
      const double mean = p.mean[std::size_t(c)], var = var_[i][std::size_t(c)];
      double rm = u.bn.running_mean[c], rv = u.bn.running_var[c];
      bnff::update_running_stats(bnff::moments{m, mean, var * m}, u.bn.momentum, rm, rv);
      u.bn.running_mean[c] = float(rm), u.bn.running_var[c] = float(rv);
    }
  }

  // Synchronized BN backward from dy: this rank's reduction sweep (d_gamma, d_beta: its share),
  // the sums all-reduced, then dx with the global sums (written or added as `accumulate` says).
  void synced_dx(const bn_vectors& p, const unit& u, tensor_view<float> dy, tensor_view<float> dx, bool accumulate) {
    const index_t channels = u.x.c();
    const tensor_view<const float> cdy = dy;
    bnff::unfused::batch_norm_backward_reduce(u.x, cdy, cvec(p.mean), cvec(p.invstd), u.bn.d_beta, u.bn.d_gamma);
    const vector_view<double> sums = scratch_.backward_sums(channels);
    for (index_t c = 0; c < channels; ++c) {  // sum(dy * xhat) back to sum(dy * (x - mean)), the buffer's layout
      sums[2 * c] = double(u.bn.d_beta[c]);
      sums[2 * c + 1] = double(u.bn.d_gamma[c]) / double(p.invstd[std::size_t(c)]);
    }
    sums[2 * channels] = double(u.x.n()) * double(u.x.plane());
    sync_->sum_backward(sums);
    bnff::with_grad_mode(accumulate, [&](auto mode) {
      bnff::bn_backward_dx_from_sums<float>(u.x, cdy, cvec(p.mean), cvec(p.invstd), cvec(p.scale), sums, dx, mode);
    });
  }

  const densenet* net_ = nullptr;
  engine_scratch scratch_;
  std::vector<bn_vectors> params_;               // per unit: mean, invstd, scale (training), shift (inference)
  std::vector<std::vector<float>> var_;          // per unit: the batch variance (biased)
  std::vector<std::vector<float>> activations_;  // per BN-ReLU-conv unit: A = max(0, BN(x)), stored for backward
  std::vector<bnff::moments> moments_;           // one BN's input statistics
  std::vector<std::vector<index_t>> block_;      // per buffer, per channel: the statistics block of its producer
  std::vector<float> shifts_;                    // the mean sweep's per-block shifts, read by the variance sweep
};

}  // namespace trainer
