// The training loop, evaluation, checkpoint resume and the fused-vs-unfused
// comparison, over any model that fills in the `model` interface.
#pragma once

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <bnff/tensor/tensor_view.hpp>

#include "checkpoint.hpp"
#include "data.hpp"
#include "distributed.hpp"
#include "layers.hpp"
#include "optimizer.hpp"
#include "parameters.hpp"
#include "progress.hpp"

namespace trainer {

// What the loop needs from a network. The batch size is fixed when the model is
// built (its buffers are allocated once); a last partial batch is padded.
class model {
 public:
  virtual ~model() = default;
  virtual std::string name() const = 0;
  virtual bnff::shape4 input_shape() const = 0;  // batch x channels x height x width
  virtual bnff::index_t classes() const = 0;
  // The packed NCHW batch the next forward reads; the trainer writes images here.
  virtual float* input() = 0;
  // Logits (batch x classes, row-major) of input(). training: batch statistics,
  // running-statistics update, and whatever backward needs is kept.
  virtual const float* forward(bool training) = 0;
  // After forward(true): every parameter's grad from d_logits (batch x classes).
  virtual void backward(const float* d_logits) = 0;
  virtual std::vector<parameter*> parameters() = 0;
  virtual std::vector<state_tensor*> state() = 0;
  // Peak bytes of activations kept between forward and backward.
  virtual std::uint64_t activation_bytes() const = 0;
};

// Parameters, momentum buffers and state, in a fixed order: what a checkpoint holds.
inline std::vector<tensor_ref> checkpoint_tensors(model& m) {
  std::vector<tensor_ref> refs;
  for (parameter* p : m.parameters()) {
    refs.push_back({p->name, p->value.data(), p->value.size()});
    refs.push_back({p->name + ".momentum", p->momentum.data(), p->momentum.size()});
  }
  for (state_tensor* s : m.state()) refs.push_back({s->name, s->value.data(), s->value.size()});
  return refs;
}

// Makes `to` start from the same weights, momentum and state as `from`.
inline void copy_model_state(model& from, model& to) {
  const auto a = checkpoint_tensors(from), b = checkpoint_tensors(to);
  if (a.size() != b.size()) throw std::invalid_argument("copy_model_state: the models hold different tensors");
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].name != b[i].name || a[i].size != b[i].size)
      throw std::invalid_argument("copy_model_state: tensor '" + a[i].name + "' does not match '" + b[i].name + "'");
    std::memcpy(b[i].data, a[i].data, a[i].size * sizeof(float));
  }
}

// Fraction of `d` the model classifies correctly (inference mode).
inline double evaluate(model& m, const dataset& d) {
  const bnff::shape4 in = m.input_shape();
  const bnff::index_t batch = in.n, elements = d.image_elements();
  if (elements != in.c * in.h * in.w) throw std::invalid_argument("evaluate: data images do not match the model input");
  bnff::index_t correct = 0;
  for (bnff::index_t first = 0; first < d.count; first += batch) {
    const bnff::index_t count = std::min(batch, d.count - first);
    float* x = m.input();
    std::memcpy(x, d.image(first), std::size_t(count * elements) * sizeof(float));
    std::memset(x + count * elements, 0, std::size_t((batch - count) * elements) * sizeof(float));  // padding
    const float* logits = m.forward(false);
    correct += softmax_cross_entropy<float>(count, m.classes(), logits, d.labels.data() + first, nullptr).correct;
  }
  return d.count ? double(correct) / double(d.count) : 0.0;
}

struct run_settings {
  int epochs = 1;
  std::uint64_t max_steps = 0;  // the run stops when its global step count reaches this; 0: after all epochs
  sgd_settings sgd;
  std::uint64_t seed = 1;
  std::string config;  // the run configuration text a checkpoint must match
  std::string save_path, resume_path;
  const volatile std::sig_atomic_t* stop = nullptr;  // set (e.g. by SIGINT): finish the step, save, return
  bool print_step_losses = false;                    // one "step N loss X" line per step
  // Data-parallel ranks (null or one rank: a single process). Each rank's model takes
  // its shard of every global batch of size() * (model batch) images; gradients and the
  // loss are averaged over the ranks; rank 0 evaluates, prints and saves.
  communicator* comm = nullptr;
};

struct run_result {
  run_summary summary;
  std::uint64_t first_step = 0;  // where this invocation started (> 0 after --resume)
  std::vector<double> losses;    // training loss of each step this invocation ran
  std::vector<double> step_seconds;
  bool interrupted = false;
};

class training_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline std::uint64_t steps_per_epoch(const dataset& train, bnff::index_t batch) {
  if (train.count < batch)
    throw training_error("the batch (" + std::to_string(batch) + " images) is larger than the training set (" +
                         std::to_string(train.count) + " images)");
  return std::uint64_t(train.count / batch);  // the last partial batch of an epoch is dropped
}

// One SGD step on images order[first .. first + batch): returns the loss. With an averager
// (data-parallel), the gradients are averaged over the ranks before the update.
inline double train_step(model& m, const dataset& train, const std::vector<bnff::index_t>& order, bnff::index_t first,
                         double lr, const sgd_settings& sgd, std::vector<std::int32_t>& labels,
                         std::vector<float>& d_logits, gradient_averager* averager = nullptr) {
  const bnff::index_t batch = m.input_shape().n;
  labels.resize(std::size_t(batch));
  d_logits.resize(std::size_t(batch * m.classes()));
  gather_batch(train, order, first, batch, m.input(), labels.data());
  const float* logits = m.forward(true);
  const loss_result r = softmax_cross_entropy<float>(batch, m.classes(), logits, labels.data(), d_logits.data());
  m.backward(d_logits.data());
  if (averager) averager->average();
  for (parameter* p : m.parameters()) sgd_step(*p, lr, sgd);
  return r.loss;
}

// Trains `m` from its current weights (or from settings.resume_path) until the
// planned epochs end or max_steps is reached. Deterministic: the same settings
// and thread count give the same losses, whether the run is interrupted and
// resumed or not.
inline run_result train(model& m, const dataset& train, const dataset& val, const run_settings& s,
                        progress_printer& progress) {
  using clock = std::chrono::steady_clock;
  const int ranks = s.comm ? s.comm->size() : 1, rank = s.comm ? s.comm->rank() : 0;
  const bool lead = rank == 0;  // evaluates and saves
  const bnff::index_t local = m.input_shape().n, batch = local * ranks;
  const std::uint64_t epoch_steps = steps_per_epoch(train, batch);
  const std::uint64_t planned = std::uint64_t(s.epochs) * epoch_steps;
  std::unique_ptr<gradient_averager> averager;
  if (ranks > 1) averager = std::make_unique<gradient_averager>(*s.comm, m.parameters());
  const std::uint64_t stop_at = s.max_steps ? std::min(s.max_steps, planned) : planned;
  const cosine_schedule schedule{s.sgd.lr, planned};

  run_result result;
  std::uint64_t step = 0;
  if (!s.resume_path.empty()) {
    const checkpoint c = read_checkpoint(s.resume_path);
    restore_checkpoint(c, s.resume_path, s.config, checkpoint_tensors(m));
    step = c.step;
    progress.message("resumed from '" + s.resume_path + "' at step " + std::to_string(step));
  }
  result.first_step = step;
  auto save = [&] {
    if (lead && !s.save_path.empty()) save_checkpoint(s.save_path, s.config, step, s.seed, checkpoint_tensors(m));
  };
  bool stop_all = false;  // data-parallel: every rank stops at the same step

  std::vector<bnff::index_t> order;
  std::uint64_t order_epoch = ~std::uint64_t(0);
  std::vector<std::int32_t> labels;
  std::vector<float> d_logits;
  double epoch_loss = 0, last_val = -1;
  std::uint64_t epoch_count = 0;
  const auto start = clock::now();
  while (step < stop_at) {
    if (ranks > 1 ? stop_all : (s.stop && *s.stop)) {
      result.interrupted = true;
      break;
    }
    const std::uint64_t epoch = step / epoch_steps, pos = step % epoch_steps;
    if (epoch != order_epoch) {
      order = epoch_order(train.count, s.seed, epoch);
      order_epoch = epoch;
      epoch_loss = 0, epoch_count = 0;
    }
    const auto t0 = clock::now();
    double loss = train_step(m, train, order, bnff::index_t(pos) * batch + rank * local, schedule.at(step), s.sgd,
                             labels, d_logits, averager.get());
    if (ranks > 1) {  // the global batch's mean loss, and whether any rank was asked to stop
      double v[2] = {loss, s.stop && *s.stop ? 1.0 : 0.0};
      s.comm->all_reduce_sum(v, 2);
      loss = v[0] / ranks;
      stop_all = v[1] > 0;
    }
    const double dt = std::chrono::duration<double>(clock::now() - t0).count();
    if (!std::isfinite(loss))
      throw training_error("the training loss is not finite at step " + std::to_string(step + 1) +
                           " (try a smaller --lr)");
    ++step;
    result.losses.push_back(loss);
    result.step_seconds.push_back(dt);
    epoch_loss += loss, ++epoch_count;

    const double elapsed = std::chrono::duration<double>(clock::now() - start).count();
    const double per_step = elapsed / double(result.losses.size());
    progress.step({epoch + 1, std::uint64_t(s.epochs), pos + 1, epoch_steps, step, stop_at,
                   epoch_loss / double(epoch_count), double(batch) / per_step, per_step * double(stop_at - step)});
    if (s.print_step_losses) {
      char line[64];
      std::snprintf(line, sizeof line, "step %llu loss %.9g", (unsigned long long)step, loss);
      progress.message(line);
    }
    if (step % epoch_steps == 0 || step == stop_at) {
      if (lead) last_val = evaluate(m, val);
      progress.epoch_end(last_val);
      save();
    }
  }
  if (result.interrupted) {
    save();
    progress.message("interrupted at step " + std::to_string(step) +
                     (s.save_path.empty() ? "" : "; saved '" + s.save_path + "'"));
  }
  result.summary.implementation = m.name();
  result.summary.val_accuracy = last_val >= 0 || !lead ? last_val : evaluate(m, val);
  result.summary.steps = step;
  result.summary.median_step_seconds = median(result.step_seconds);
  result.summary.total_seconds = std::chrono::duration<double>(clock::now() - start).count();
  result.summary.activation_bytes = m.activation_bytes();
  return result;
}

struct comparison {
  std::vector<double> loss_a, loss_b;
  double max_relative_difference = 0;  // over steps: |a - b| / max(|a|, |b|)
  // After the first step (same weights, same batch): the largest ||grad_a - grad_b|| / ||grad_b||
  // over parameter tensors. Later steps start from weights that have drifted apart.
  double first_step_gradient_difference = 0;
  double median_seconds_a = 0, median_seconds_b = 0;
  std::uint64_t activation_bytes_a = 0, activation_bytes_b = 0;
  double speedup() const { return median_seconds_a > 0 ? median_seconds_b / median_seconds_a : 0; }
};

// The largest ||grad_a - grad_b|| / ||grad_b|| over the parameter tensors of two models of one architecture.
inline double gradient_difference(model& a, model& b) {
  const auto pa = a.parameters(), pb = b.parameters();
  if (pa.size() != pb.size()) throw std::invalid_argument("gradient_difference: the models hold different parameters");
  double worst = 0;
  for (std::size_t i = 0; i < pa.size(); ++i) {
    double diff = 0, norm = 0;
    for (std::size_t j = 0; j < pa[i]->grad.size(); ++j) {
      const double d = double(pa[i]->grad[j]) - double(pb[i]->grad[j]);
      diff += d * d, norm += double(pb[i]->grad[j]) * double(pb[i]->grad[j]);
    }
    if (norm > 0) worst = std::max(worst, std::sqrt(diff / norm));
  }
  return worst;
}

// Trains `a` and `b` side by side for `steps` steps from a's weights, on the same
// batches and learning rates, printing both losses each step.
inline comparison compare(model& a, model& b, const dataset& train, const run_settings& s, std::uint64_t steps,
                          progress_printer& progress) {
  using clock = std::chrono::steady_clock;
  copy_model_state(a, b);
  const bnff::index_t batch = a.input_shape().n;
  if (b.input_shape() != a.input_shape()) throw std::invalid_argument("compare: the models take different inputs");
  const std::uint64_t epoch_steps = steps_per_epoch(train, batch);
  const cosine_schedule schedule{s.sgd.lr, std::uint64_t(s.epochs) * epoch_steps};
  comparison c;
  std::vector<double> ta, tb;
  std::vector<bnff::index_t> order;
  std::uint64_t order_epoch = ~std::uint64_t(0);
  std::vector<std::int32_t> labels;
  std::vector<float> d_logits;
  char line[160];
  std::snprintf(line, sizeof line, "%8s  %14s  %14s  %10s", "step", (a.name() + " loss").c_str(),
                (b.name() + " loss").c_str(), "rel. diff");
  progress.message(line);
  for (std::uint64_t step = 0; step < steps; ++step) {
    if (s.stop && *s.stop) break;
    const std::uint64_t epoch = step / epoch_steps, pos = step % epoch_steps;
    if (epoch != order_epoch) order = epoch_order(train.count, s.seed, epoch), order_epoch = epoch;
    const double lr = schedule.at(step);
    auto t0 = clock::now();
    const double la = train_step(a, train, order, bnff::index_t(pos) * batch, lr, s.sgd, labels, d_logits);
    auto t1 = clock::now();
    const double lb = train_step(b, train, order, bnff::index_t(pos) * batch, lr, s.sgd, labels, d_logits);
    auto t2 = clock::now();
    ta.push_back(std::chrono::duration<double>(t1 - t0).count());
    tb.push_back(std::chrono::duration<double>(t2 - t1).count());
    const double scale = std::max(std::abs(la), std::abs(lb));
    const double rel = scale > 0 ? std::abs(la - lb) / scale : 0.0;
    c.max_relative_difference = std::max(c.max_relative_difference, std::isfinite(rel) ? rel : HUGE_VAL);
    c.loss_a.push_back(la), c.loss_b.push_back(lb);
    if (step == 0) c.first_step_gradient_difference = gradient_difference(a, b);
    std::snprintf(line, sizeof line, "%8llu  %14.6f  %14.6f  %10.2e", (unsigned long long)(step + 1), la, lb, rel);
    progress.message(line);
  }
  c.median_seconds_a = median(ta), c.median_seconds_b = median(tb);
  c.activation_bytes_a = a.activation_bytes(), c.activation_bytes_b = b.activation_bytes();
  return c;
}

// The comparison's verdict: loss agreement, median time per step and the speedup,
// and the activation memory each implementation keeps for backward (scratch, which
// no step keeps, is shown apart).
inline std::string format_comparison(const comparison& c, std::uint64_t scratch_a, std::uint64_t scratch_b,
                                     const std::string& name_a = "fused", const std::string& name_b = "unfused") {
  char buf[1536];
  const double ratio = c.activation_bytes_b ? double(c.activation_bytes_a) / double(c.activation_bytes_b) : 0;
  // A slower run says so: "1.05x slower", never "0.95x faster".
  const double speedup = c.speedup();
  const bool faster = speedup >= 1 || speedup <= 0;
  const double factor = faster ? speedup : 1 / speedup;
  std::snprintf(buf, sizeof buf,
                "comparison over %zu steps\n"
                "  gradients after step 1             largest relative difference %.2e (same weights, same batch)\n"
                "  largest relative loss difference   %.2e\n"
                "  time per step (median)             %s %.2f ms, %s %.2f ms: %s %.2fx %s\n"
                "  peak activation memory             %s %s\n"
                "                                     %s %s: %s keeps %.2fx\n"
                "  scratch (not kept between steps)   %s %s, %s %s\n"
                "  (the unfused engine takes its statistics in the fused blocks and normalizes and reduces\n"
                "   in the fused kernels' forms and order: any difference would grow under SGD)\n",
                c.loss_a.size(), c.first_step_gradient_difference, c.max_relative_difference, name_a.c_str(),
                1e3 * c.median_seconds_a, name_b.c_str(), 1e3 * c.median_seconds_b, name_a.c_str(), factor, faster ? "faster" : "slower",
                name_a.c_str(), format_bytes(c.activation_bytes_a).c_str(), name_b.c_str(),
                format_bytes(c.activation_bytes_b).c_str(), name_a.c_str(), ratio, name_a.c_str(),
                format_bytes(scratch_a).c_str(), name_b.c_str(), format_bytes(scratch_b).c_str());
  return buf;
}

}  // namespace trainer
