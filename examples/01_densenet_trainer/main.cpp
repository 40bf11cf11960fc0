// DenseNet-BC trainer: fused (BNFF) vs conventional (unfused) batch normalization.
// See README.md for what it fuses, how to run it and what it checks.
#include <csignal>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>

#include <bnff/parallel/parallel.hpp>

#include "checkpoint.hpp"
#include "cifar10.hpp"
#include "cli.hpp"
#include "data.hpp"
#include "engines.hpp"
#include "network.hpp"
#include "progress.hpp"
#include "trainer.hpp"
#ifdef BNFF_TRAINER_MPI
#include "mpi_communicator.hpp"
#endif

namespace {

// --compare without --steps: enough steps for a stable median and the loss-agreement check.
constexpr std::uint64_t default_compare_steps = 20;

// Set by SIGINT: the loop finishes its current step, saves (with --save) and returns.
volatile std::sig_atomic_t stop_requested = 0;
extern "C" void on_sigint(int) { stop_requested = 1; }

struct data_splits {
  trainer::dataset train, val;
};

data_splits load_data(const trainer::options& o) {
  data_splits d;
  if (o.data.kind == trainer::data_source::cifar10) {
    auto s = trainer::cifar10::load(o.data.dir);
    d.train = std::move(s.train), d.val = std::move(s.val);
  } else {
    d.train = trainer::synthetic::make(bnff::index_t(o.train_images), o.model.image_size, o.seed, 0);
    d.val = trainer::synthetic::make(bnff::index_t(o.val_images), o.model.image_size, o.seed, 1);
  }
  const auto norm = trainer::channel_normalization::of(d.train);
  norm.apply(d.train);
  norm.apply(d.val);
  return d;
}

// Everything that must be equal on every rank of a data-parallel run (the run's
// trajectory, where it stops, what it resumes from, the BN synchronization).
std::string rank_config_text(const trainer::options& o) {
  return trainer::run_config_text(o) + " impl=" + trainer::impl_name(o.impl) + " steps=" + std::to_string(o.steps) +
         " sync_bn=" + (o.sync_bn ? "1" : "0") + " resume=" + o.resume_path + " compare=" + (o.compare ? "1" : "0");
}

// comm: the data-parallel ranks, or null for a single process.
int run(const trainer::options& o, trainer::communicator* comm) {
  const int ranks = comm ? comm->size() : 1;
  const bool lead = !comm || comm->rank() == 0;  // prints (and, in train, evaluates and saves)
  if (ranks > 1) {
    trainer::check_same_config(*comm, rank_config_text(o));
    if (o.compare)
      throw trainer::usage_error("--compare runs in one process, not under mpirun -np " + std::to_string(ranks));
    if (o.batch % ranks != 0 || o.batch / ranks < 2)
      throw trainer::usage_error(
          "--batch " + std::to_string(o.batch) + " must be a multiple of the " + std::to_string(ranks) +
          " ranks, with at least 2 images per rank (each rank takes --batch / " + std::to_string(ranks) + ")");
  }
  const bnff::index_t local_batch = o.batch / ranks;
  bnff::set_num_threads(o.threads);
  if (lead)
    std::printf("bnff densenet trainer: preset %s, %s, %d thread(s)\n", o.preset.c_str(),
                o.compare ? "compare fused vs unfused" : trainer::impl_name(o.impl), bnff::max_threads());
  if (lead && ranks > 1)
    std::printf("data-parallel: %d ranks, global batch %lld (%lld per rank), BN %s\n", ranks, (long long)o.batch,
                (long long)local_batch,
                o.sync_bn ? "synchronized (global batch statistics)" : "per rank (--no-sync-bn)");

  const data_splits data = load_data(o);
  if (lead)
    std::printf("data: %s, %lld training and %lld validation images of %lldx%lld\n", o.data.describe().c_str(),
                (long long)data.train.count, (long long)data.val.count, (long long)data.train.height,
                (long long)data.train.width);
  trainer::steps_per_epoch(data.train, o.batch);  // refuses a batch larger than the training set

  std::unique_ptr<trainer::communicator_bn_sync> bn_sync;
  if (ranks > 1 && o.sync_bn) bn_sync = std::make_unique<trainer::communicator_bn_sync>(*comm);
  const auto make_model = [&](trainer::impl_kind k) {
    std::unique_ptr<trainer::conv_bn_engine> engine = trainer::make_engine(k);
    engine->set_bn_synchronizer(bn_sync.get());
    return std::make_unique<trainer::densenet_model>(o.model, local_batch, o.seed, std::move(engine));
  };
  std::unique_ptr<trainer::densenet_model> model = make_model(o.impl);
  const trainer::densenet& net = model->network();
  if (lead) {
    std::printf("model: %s\n%s", o.model.canonical().c_str(), net.describe().c_str());
    std::printf("parameters: %llu; activation buffers shared by both implementations: %s\n",
                (unsigned long long)net.parameter_count(), trainer::format_bytes(net.activation_bytes()).c_str());
  }

  trainer::run_settings s;
  s.epochs = o.epochs;
  s.max_steps = std::uint64_t(o.steps);
  s.sgd = {o.lr, o.momentum, o.weight_decay};
  s.seed = o.seed;
  s.config = trainer::run_config_text(o);
  s.save_path = o.save_path;
  s.resume_path = o.resume_path;
  s.stop = &stop_requested;
  s.print_step_losses = o.print_step_losses;
  s.comm = ranks > 1 ? comm : nullptr;
  std::signal(SIGINT, on_sigint);
  trainer::progress_printer progress(lead ? stdout : nullptr);

  if (o.compare) {
    // The fused model is `model`; the unfused one starts from its weights (compare copies them).
    std::unique_ptr<trainer::densenet_model> other =
        make_model(o.impl == trainer::impl_kind::fused ? trainer::impl_kind::unfused : trainer::impl_kind::fused);
    trainer::densenet_model& fused = o.impl == trainer::impl_kind::fused ? *model : *other;
    trainer::densenet_model& unfused = o.impl == trainer::impl_kind::fused ? *other : *model;
    const std::uint64_t steps = o.steps > 0 ? std::uint64_t(o.steps) : default_compare_steps;
    std::printf("comparing fused and unfused for %llu steps from the same weights on the same batches\n",
                (unsigned long long)steps);
    const trainer::comparison c = trainer::compare(fused, unfused, data.train, s, steps, progress);
    std::fputs(trainer::format_comparison(c, fused.scratch_bytes(), unfused.scratch_bytes()).c_str(), stdout);
    if (stop_requested) {
      std::printf("interrupted after %zu steps\n", c.loss_a.size());
      return 130;
    }
    return 0;
  }

  const trainer::run_result r = trainer::train(*model, data.train, data.val, s, progress);
  if (lead) std::fputs(trainer::format_summary(r.summary).c_str(), stdout);
  return r.interrupted ? 130 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string program = argc > 0 ? argv[0] : "bnff_densenet_trainer";
#ifdef BNFF_TRAINER_MPI
  trainer::mpi_session mpi(argc, argv);
  trainer::communicator* comm = &mpi;
  // Under mpirun -np P > 1 any failure ends every rank: the others would wait in a collective forever.
  const auto fail = [&](int code) {
    if (mpi.size() > 1) mpi.abort(code);
    return code;
  };
  const std::string who = mpi.size() > 1 ? program + " (rank " + std::to_string(mpi.rank()) + ")" : program;
  const bool lead = mpi.rank() == 0;
#else
  trainer::communicator* comm = nullptr;
  const auto fail = [](int code) { return code; };
  const std::string& who = program;
  const bool lead = true;
#endif
  try {
    const trainer::options o = trainer::parse_command_line(argc, argv);
    if (o.help) {
      if (lead) std::fputs(trainer::usage(program).c_str(), stdout);
      return 0;
    }
    return run(o, comm);
  } catch (const trainer::usage_error& e) {
    std::fprintf(stderr, "%s: error: %s\nrun '%s --help' for usage\n", who.c_str(), e.what(), program.c_str());
    return fail(2);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", who.c_str(), e.what());
    return fail(1);
  }
}
