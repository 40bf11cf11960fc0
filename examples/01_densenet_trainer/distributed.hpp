// Data-parallel training over any communicator: what the trainer needs from one
// (mpi_communicator.hpp is the MPI one), synchronized batch norm on bnff's
// partials buffers, and the gradient average that makes every rank take the
// same SGD step. Nothing here depends on MPI; a single process uses none of it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <bnff/stats/partials_buffer.hpp>
#include <bnff/tensor/tensor_view.hpp>

#include "parameters.hpp"

namespace trainer {

// The collectives data-parallel training uses. Every rank calls the same ones in
// the same order with the same sizes (the trainer's steps guarantee that).
class communicator {
 public:
  virtual ~communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // out[r * n .. (r + 1) * n) = rank r's in[0 .. n), on every rank.
  virtual void all_gather(const double* in, std::size_t n, double* out) = 0;
  virtual void all_gather(const std::uint64_t* in, std::size_t n, std::uint64_t* out) = 0;
  // data[i] = sum over ranks of data[i], on every rank.
  virtual void all_reduce_sum(double* data, std::size_t n) = 0;
  virtual void all_reduce_sum(float* data, std::size_t n) = 0;
};

// How an engine synchronizes its batch norms across ranks; engines without one
// (a single process) normalize with their own batch.
class bn_synchronizer {
 public:
  virtual ~bn_synchronizer() = default;
  // Buffers for up to `channels` channels per call (called once, before any step).
  virtual void reserve(bnff::index_t channels) = 0;
  // stats: this rank's moments of some channels in, the global batch's out.
  virtual void merge_moments(bnff::vector_view<bnff::moments> stats) = 0;
  // sums: this rank's BN backward sums buffer (bnff::bn_backward_sums_size doubles) in, the global batch's out.
  virtual void sum_backward(bnff::vector_view<double> sums) = 0;
};

// Synchronized BN on a communicator: statistics by an all-gather of every rank's
// moments buffer merged in rank order (exact, the same bits on every rank);
// backward sums by a SUM all-reduce (exact once the statistics are global).
class communicator_bn_sync : public bn_synchronizer {
 public:
  explicit communicator_bn_sync(communicator& comm) : comm_(comm) {}

  void reserve(bnff::index_t channels) override {
    local_.assign(std::size_t(bnff::moments_buffer_size(channels)), 0.0);
    gathered_.assign(local_.size() * std::size_t(comm_.size()), 0.0);
  }

  void merge_moments(bnff::vector_view<bnff::moments> stats) override {
    const bnff::index_t n = bnff::moments_buffer_size(stats.size());
    if (std::size_t(n) > local_.size())
      throw std::logic_error("communicator_bn_sync: " + std::to_string(stats.size()) + " channels, more than reserved");
    bnff::export_moments(stats, {local_.data(), n});
    comm_.all_gather(local_.data(), std::size_t(n), gathered_.data());
    bnff::merge_moments_buffers({gathered_.data(), n * comm_.size()}, comm_.size(), stats);
  }

  void sum_backward(bnff::vector_view<double> sums) override {
    comm_.all_reduce_sum(sums.data(), std::size_t(sums.size()));
  }

 private:
  communicator& comm_;
  std::vector<double> local_, gathered_;
};

// Averages the parameter gradients over the ranks in one all-reduce of one flat
// buffer (one bucket: the models here are small enough that a single message is
// cheapest). Each rank's gradient is of its own shard's mean loss, so the average
// is the gradient of the global batch's mean loss for equal shards.
class gradient_averager {
 public:
  gradient_averager(communicator& comm, const std::vector<parameter*>& params) : comm_(comm), params_(params) {
    std::size_t n = 0;
    for (const parameter* p : params_) n += p->grad.size();
    flat_.assign(n, 0.0f);
  }

  void average() {
    std::size_t at = 0;
    for (const parameter* p : params_) {
      std::copy(p->grad.begin(), p->grad.end(), flat_.begin() + std::ptrdiff_t(at));
      at += p->grad.size();
    }
    comm_.all_reduce_sum(flat_.data(), flat_.size());
    const float inv = 1.0f / float(comm_.size());
    at = 0;
    for (parameter* p : params_)
      for (float& g : p->grad) g = flat_[at++] * inv;
  }

 private:
  communicator& comm_;
  std::vector<parameter*> params_;
  std::vector<float> flat_;
};

// FNV-1a 64 of a text: ranks compare the hash of their configuration at start.
inline std::uint64_t text_hash(const std::string& text) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : text) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}

// Throws unless every rank's `config` is the same text (compared by hash), naming the ranks that differ from rank 0.
inline void check_same_config(communicator& comm, const std::string& config) {
  const std::uint64_t mine = text_hash(config);
  std::vector<std::uint64_t> all(std::size_t(comm.size()));
  comm.all_gather(&mine, 1, all.data());
  std::string differ;
  for (int r = 1; r < comm.size(); ++r)
    if (all[std::size_t(r)] != all[0]) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  if (!differ.empty())
    throw std::runtime_error(
        "the ranks were started with different configurations (rank(s) " + differ +
        " differ from rank 0); every rank needs the same options except --threads. This rank's: " + config);
}

}  // namespace trainer
