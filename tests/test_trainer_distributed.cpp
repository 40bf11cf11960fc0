// The trainer's data parallelism without MPI: ranks are threads of this process
// meeting at a barrier for every collective (thread_communicator), so the same
// code paths as under mpirun run in every build: 2 ranks with synchronized BN
// take the steps of one process with the whole batch, per-rank BN does not,
// and mismatched configurations are named.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../examples/01_densenet_trainer/data.hpp"
#include "../examples/01_densenet_trainer/distributed.hpp"
#include "../examples/01_densenet_trainer/engines.hpp"
#include "../examples/01_densenet_trainer/trainer.hpp"

using namespace trainer;
using bnff::index_t;

namespace {

// What the ranks of one group share: a reusable barrier and one slot per rank.
struct thread_group {
  explicit thread_group(int n) : size(n), doubles(std::size_t(n)), floats(std::size_t(n)), words(std::size_t(n)) {}
  void barrier() {
    std::unique_lock<std::mutex> lock(mutex);
    const std::uint64_t gen = generation;
    if (++arrived == size) {
      arrived = 0;
      ++generation;
      done.notify_all();
    } else {
      done.wait(lock, [&] { return gen != generation; });
    }
  }
  int size;
  std::mutex mutex;
  std::condition_variable done;
  int arrived = 0;
  std::uint64_t generation = 0;
  std::vector<std::vector<double>> doubles;
  std::vector<std::vector<float>> floats;
  std::vector<std::vector<std::uint64_t>> words;
};

// A rank of a thread_group: collectives write this rank's slot, meet, read every slot in rank order, meet again.
class thread_communicator : public communicator {
 public:
  thread_communicator(thread_group& g, int rank) : g_(g), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return g_.size; }
  void all_gather(const double* in, std::size_t n, double* out) override { gather(g_.doubles, in, n, out); }
  void all_gather(const std::uint64_t* in, std::size_t n, std::uint64_t* out) override { gather(g_.words, in, n, out); }
  void all_reduce_sum(double* data, std::size_t n) override { reduce(g_.doubles, data, n); }
  void all_reduce_sum(float* data, std::size_t n) override { reduce(g_.floats, data, n); }

 private:
  template <class T>
  void gather(std::vector<std::vector<T>>& slots, const T* in, std::size_t n, T* out) {
    slots[std::size_t(rank_)].assign(in, in + n);
    g_.barrier();
    for (int r = 0; r < g_.size; ++r)
      std::copy(slots[std::size_t(r)].begin(), slots[std::size_t(r)].end(), out + r * n);
    g_.barrier();
  }
  template <class T>
  void reduce(std::vector<std::vector<T>>& slots, T* data, std::size_t n) {
    slots[std::size_t(rank_)].assign(data, data + n);
    g_.barrier();
    for (std::size_t i = 0; i < n; ++i) {
      T acc = slots[0][i];
      for (int r = 1; r < g_.size; ++r) acc += slots[std::size_t(r)][i];
      data[i] = acc;
    }
    g_.barrier();
  }
  thread_group& g_;
  int rank_;
};

// Runs f(comm) on `ranks` threads, one thread_communicator each; rethrows the first exception.
template <class F>
void run_ranks(int ranks, F f) {
  thread_group group(ranks);
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(ranks));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      try {
        bnff::set_num_threads(1);  // a new thread's own OpenMP setting
        thread_communicator comm(group, r);
        f(comm);
      } catch (...) {
        errors[std::size_t(r)] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

model_config tiny_config() {
  model_config c;
  c.image_size = 8;
  c.blocks = {2, 3};
  c.growth = 4;
  return c;
}

struct small_data {
  dataset train = synthetic::make(64, 8, 3, 0), val = synthetic::make(16, 8, 3, 1);
  small_data() {
    const auto norm = channel_normalization::of(train);
    norm.apply(train);
    norm.apply(val);
  }
};

run_settings few_steps() {
  run_settings s;
  s.epochs = 1;
  s.max_steps = 3;
  s.sgd = {0.05, 0.9, 1e-4};
  s.seed = 3;
  s.config = "tiny densenet";
  return s;
}

double max_relative_difference(const std::vector<double>& a, const std::vector<double>& b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(a[i] - b[i]) / std::max({std::abs(a[i]), std::abs(b[i]), 1e-30}));
  return worst;
}

// The losses of `steps` steps on 2 ranks with batch 8 each, every rank's (which must agree).
std::vector<double> two_rank_losses(impl_kind k, bool sync_bn, const small_data& d) {
  std::vector<std::vector<double>> losses(2);
  run_ranks(2, [&](communicator& comm) {
    std::unique_ptr<communicator_bn_sync> sync;
    if (sync_bn) sync = std::make_unique<communicator_bn_sync>(comm);
    auto engine = make_engine(k);
    engine->set_bn_synchronizer(sync.get());
    densenet_model m(tiny_config(), 8, 3, std::move(engine));
    run_settings s = few_steps();
    s.comm = &comm;
    progress_printer quiet(nullptr);
    losses[std::size_t(comm.rank())] = train(m, d.train, d.val, s, quiet).losses;
  });
  REQUIRE(losses[0] == losses[1]);  // every rank prints the same averaged loss
  return losses[0];
}

}  // namespace

TEST_CASE("data-parallel: 2 ranks with synchronized BN take the steps of one process with the whole batch",
          "[trainer][distributed]") {
  const small_data d;
  for (impl_kind k : {impl_kind::fused, impl_kind::unfused}) {
    INFO(impl_name(k));
    std::vector<double> one;
    run_ranks(1, [&](communicator&) {  // a thread too, for the same OpenMP setting
      densenet_model m(tiny_config(), 16, 3, make_engine(k));
      progress_printer quiet(nullptr);
      one = train(m, d.train, d.val, few_steps(), quiet).losses;
    });
    REQUIRE(one.size() == 3);
    const std::vector<double> synced = two_rank_losses(k, true, d), local = two_rank_losses(k, false, d);
    REQUIRE(synced.size() == 3);
    REQUIRE(local.size() == 3);
    // The same steps up to float summation order (measured ~1e-7); per-rank BN normalizes each half of
    // the batch with its own statistics, which moves the very first loss by percents.
    CHECK(max_relative_difference(one, synced) < 1e-5);
    CHECK(max_relative_difference(one, local) > 1e-3);
  }
}

TEST_CASE("data-parallel: ranks with different configurations are named", "[trainer][distributed]") {
  CHECK_THROWS_WITH(
      run_ranks(3, [&](communicator& comm) { check_same_config(comm, comm.rank() == 2 ? "batch=8" : "batch=16"); }),
      Catch::Contains("rank(s) 2 differ from rank 0"));
  run_ranks(3, [&](communicator& comm) { check_same_config(comm, "batch=16"); });  // equal: no throw
}

TEST_CASE("data-parallel: gradients are averaged over the ranks", "[trainer][distributed]") {
  std::vector<std::vector<float>> after(2);
  run_ranks(2, [&](communicator& comm) {
    parameter p("w", 3, true);
    for (int i = 0; i < 3; ++i)
      p.grad[std::size_t(i)] = float((comm.rank() + 1) * (i + 1));  // rank 0: 1 2 3, rank 1: 2 4 6
    gradient_averager avg(comm, {&p});
    avg.average();
    after[std::size_t(comm.rank())] = p.grad;
  });
  CHECK(after[0] == std::vector<float>{1.5f, 3.0f, 4.5f});
  CHECK(after[1] == after[0]);
}
