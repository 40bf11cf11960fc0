// The paper's headline experiment on this machine: full DenseNet-121 and ResNet-50
// training iterations (forward, backward, SGD step on a synthetic batch) with the
// conventional unfused implementation, per-layer BN fission-and-fusion (bnff), and
// BNFF with inter-composite-layer fusion (bnff-icf, DenseNet only). Variants run
// round-robin, one iteration each in turn (each round starting with the next variant),
// so load changes hit them alike; the report gives medians over the measured
// iterations and the fastest iteration of each variant.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "iteration.hpp"
#include "resnet.hpp"

namespace {

using paper::index_t;
using paper::variant;

struct options {
  std::vector<std::string> nets{"densenet121", "resnet50"};
  std::vector<variant> variants{variant::unfused, variant::bnff, variant::bnff_icf};
  index_t batch = 4, image_size = 224, classes = 1000;
  std::vector<index_t> blocks{6, 12, 24, 16}, stages{3, 4, 6, 3};
  int iters = 5, warmup = 1, threads = 2;
  std::uint64_t seed = 1;
  std::string json;
  double tolerance = 0;  // > 0: exit 1 unless every variant's first loss and gradient norm match unfused's
};

const char* usage =
    "usage: bnff_paper_iterations [options]\n"
    "  --net LIST         densenet121,resnet50 (default both)\n"
    "  --variants LIST    unfused,bnff,bnff-icf (default all; bnff-icf is DenseNet only)\n"
    "  --batch N          images per iteration (default 4)\n"
    "  --image-size N     input extent (default 224)\n"
    "  --classes N        classifier outputs (default 1000)\n"
    "  --blocks LIST      DenseNet layers per dense block (default 6,12,24,16: DenseNet-121)\n"
    "  --stages LIST      ResNet bottlenecks per stage (default 3,4,6,3: ResNet-50)\n"
    "  --iters N          measured iterations per variant (default 5)\n"
    "  --warmup N         unmeasured iterations first (default 1)\n"
    "  --threads N        worker threads (default 2)\n"
    "  --seed N           weights and input (default 1)\n"
    "  --json PATH        write the results as JSON (for plot.py)\n"
    "  --check-tolerance R  exit 1 unless each variant's first loss and gradient norm are\n"
    "                     within relative R of the unfused variant's\n";

[[noreturn]] void fail(const std::string& msg) {
  std::fprintf(stderr, "error: %s\n%s", msg.c_str(), usage);
  std::exit(2);
}

long long to_int(const std::string& flag, const std::string& v, long long lo, long long hi) {
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end || x < lo || x > hi)
    fail(flag + " needs an integer in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got '" + v + "'");
  return x;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  return out;
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::printf("%s", usage);
      std::exit(0);
    }
    if (i + 1 >= argc) fail(flag + " needs a value (or unknown flag)");
    const std::string v = argv[++i];
    if (flag == "--net") {
      o.nets = split(v);
      for (const auto& n : o.nets)
        if (n != "densenet121" && n != "resnet50") fail("--net: unknown network '" + n + "'");
      if (o.nets.empty()) fail("--net needs a network");
    } else if (flag == "--variants") {
      o.variants.clear();
      for (const auto& n : split(v)) {
        if (n == "unfused")
          o.variants.push_back(variant::unfused);
        else if (n == "bnff")
          o.variants.push_back(variant::bnff);
        else if (n == "bnff-icf")
          o.variants.push_back(variant::bnff_icf);
        else
          fail("--variants: unknown variant '" + n + "'");
      }
      if (o.variants.empty()) fail("--variants needs a variant");
    } else if (flag == "--batch") {
      o.batch = to_int(flag, v, 2, 4096);
    } else if (flag == "--image-size") {
      o.image_size = to_int(flag, v, 32, 1024);
    } else if (flag == "--classes") {
      o.classes = to_int(flag, v, 2, 100000);
    } else if (flag == "--blocks" || flag == "--stages") {
      std::vector<index_t> l;
      for (const auto& x : split(v)) l.push_back(to_int(flag, x, 1, 128));
      if (l.empty() || l.size() > 4) fail(flag + " needs 1..4 values");
      (flag == "--blocks" ? o.blocks : o.stages) = l;
    } else if (flag == "--iters") {
      o.iters = int(to_int(flag, v, 1, 1000));
    } else if (flag == "--warmup") {
      o.warmup = int(to_int(flag, v, 0, 1000));
    } else if (flag == "--threads") {
      o.threads = int(to_int(flag, v, 1, 256));
    } else if (flag == "--seed") {
      o.seed = std::uint64_t(to_int(flag, v, 0, 1LL << 62));
    } else if (flag == "--json") {
      o.json = v;
    } else if (flag == "--check-tolerance") {
      char* end = nullptr;
      o.tolerance = std::strtod(v.c_str(), &end);
      if (v.empty() || *end || !(o.tolerance > 0)) fail("--check-tolerance needs a positive number, got '" + v + "'");
    } else {
      fail("unknown flag '" + flag + "'");
    }
  }
  return o;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct variant_result {
  variant v;
  double first_loss = 0, first_grad_norm = 0;
  // After the first iteration, the largest |g - g_unfused| of one parameter tensor, relative to the
  // whole network's |g_unfused| (per tensor relative differences are meaningless for gradients that
  // cancel to ~0, as a BN gamma followed by another BN: perturbing the input by 2e-7 moves those
  // by percents in the unfused engine alone).
  double worst_grad_diff = 0;
  std::string worst_grad_param;
  std::vector<paper::iteration_times> times;  // measured iterations
  paper::traffic bytes;
  double fwd() const {
    return med([](const paper::iteration_times& t) { return t.forward; });
  }
  double bwd() const {
    return med([](const paper::iteration_times& t) { return t.backward; });
  }
  double sgd() const {
    return med([](const paper::iteration_times& t) { return t.sgd; });
  }
  double total() const {
    return med([](const paper::iteration_times& t) { return t.forward + t.backward + t.sgd; });
  }
  double cpu_fwd() const {
    return med([](const paper::iteration_times& t) { return t.cpu_forward; });
  }
  double cpu_bwd() const {
    return med([](const paper::iteration_times& t) { return t.cpu_backward; });
  }
  double cpu_total() const {
    return med([](const paper::iteration_times& t) { return t.cpu_forward + t.cpu_backward + t.cpu_sgd; });
  }
  double fwd_type(const std::string& k) const {
    return med([&](const paper::iteration_times& t) {
      auto it = t.fwd_by_type.find(k);
      return it == t.fwd_by_type.end() ? 0.0 : it->second;
    });
  }
  double bwd_type(const std::string& k) const {
    return med([&](const paper::iteration_times& t) {
      auto it = t.bwd_by_type.find(k);
      return it == t.bwd_by_type.end() ? 0.0 : it->second;
    });
  }
  // The fastest measured iteration (least disturbed by other load on the machine).
  double best_total() const {
    double b = 1e300;
    for (const auto& t : times) b = std::min(b, t.forward + t.backward + t.sgd);
    return b;
  }
  double best_fwd() const {
    double b = 1e300;
    for (const auto& t : times) b = std::min(b, t.forward);
    return b;
  }
  double best_bwd() const {
    double b = 1e300;
    for (const auto& t : times) b = std::min(b, t.backward);
    return b;
  }
  template <class F>
  double med(F f) const {
    std::vector<double> xs;
    for (const auto& t : times) xs.push_back(f(t));
    return median(xs);
  }
};

struct network_result {
  std::string name, shape;
  double conv_fwd = 0, conv_bwd = 0;  // medians of the convolutions alone
  std::vector<variant_result> variants;
  std::vector<std::string> types;
};

// A shared_ptr: it deletes a resnet as a resnet (densenet has no virtual destructor).
std::shared_ptr<trainer::densenet> build(const options& o, const std::string& net) {
  if (net == "densenet121") {
    trainer::model_config c;
    c.image_size = o.image_size;
    c.classes = o.classes;
    c.stem_channels = 64;
    c.blocks = o.blocks;
    c.growth = 32;
    c.compression = 0.5;
    c.imagenet_stem = true;
    return std::make_shared<trainer::densenet>(c, o.batch, o.seed);
  }
  paper::resnet_config r;
  r.image_size = o.image_size;
  r.classes = o.classes;
  r.stages = o.stages;
  return std::make_shared<paper::resnet>(r, o.batch, o.seed);
}

network_result run_network(const options& o, const std::string& name) {
  network_result res;
  res.name = name;
  std::vector<variant> vs;
  for (variant v : o.variants)
    if (!(name == "resnet50" && v == variant::bnff_icf)) vs.push_back(v);  // no concatenation to reuse
  std::vector<std::shared_ptr<trainer::densenet>> nets;
  std::vector<std::unique_ptr<paper::iteration_runner>> runners;
  for (variant v : vs) {
    nets.push_back(build(o, name));
    runners.push_back(std::make_unique<paper::iteration_runner>(*nets.back(), paper::make_engine(v), o.seed));
    variant_result r;
    r.v = v;
    r.bytes = paper::memory_model(*nets.back(), v);
    res.variants.push_back(r);
  }
  if (name == "densenet121") {
    res.shape = nets[0]->describe();
  } else {
    res.shape = static_cast<const paper::resnet&>(*nets[0]).describe_resnet();
  }
  std::printf("\n%s, batch %lld, %lldx%lld input, %lld classes, %llu parameters\n%s", name.c_str(), (long long)o.batch,
              (long long)o.image_size, (long long)o.image_size, (long long)o.classes,
              (unsigned long long)nets[0]->parameter_count(), res.shape.c_str());
  std::fflush(stdout);
  paper::conv_alone convs(*nets[0]);
  std::vector<double> cf, cb;
  for (int it = 0; it < o.warmup + o.iters; ++it) {
    const bool measured = it >= o.warmup;
    for (std::size_t j = 0; j < vs.size(); ++j) {
      // Each round starts with the next variant, so no variant always follows the same one.
      const std::size_t k = (j + std::size_t(it)) % vs.size();
      paper::iteration_times t;
      const double loss = runners[k]->step(t);
      if (it == 0) res.variants[k].first_loss = loss, res.variants[k].first_grad_norm = runners[k]->last_grad_norm();
      if (measured) res.variants[k].times.push_back(t);
      std::printf("  iter %d %-9s loss %.6f  fwd %8.1f ms  bwd %8.1f ms  sgd %6.1f ms  (CPU %8.1f ms)%s\n", it + 1,
                  paper::variant_name(vs[k]), loss, 1e3 * t.forward, 1e3 * t.backward, 1e3 * t.sgd,
                  1e3 * (t.cpu_forward + t.cpu_backward + t.cpu_sgd), measured ? "" : "  (warm-up)");
      std::fflush(stdout);
    }
    if (it == 0)
      for (std::size_t k = 1; k < vs.size(); ++k) {
        auto& pa = nets[0]->parameters();
        auto& pb = nets[k]->parameters();
        const double total = std::max(1e-30, res.variants[0].first_grad_norm);
        for (std::size_t i = 0; i < pa.size(); ++i) {
          double d = 0;
          for (std::size_t j = 0; j < pa[i].grad.size(); ++j) {
            const double a = pa[i].grad[j], b = pb[i].grad[j];
            d += (a - b) * (a - b);
          }
          const double rel = std::sqrt(d) / total;
          if (!(rel <= res.variants[k].worst_grad_diff)) {
            res.variants[k].worst_grad_diff = rel;
            res.variants[k].worst_grad_param = pa[i].name;
          }
        }
      }
    if (measured) {
      const auto [f, b] = convs.run();
      cf.push_back(f), cb.push_back(b);
    }
  }
  res.conv_fwd = median(cf), res.conv_bwd = median(cb);
  for (const auto& t : res.variants[0].times[0].fwd_by_type) res.types.push_back(t.first);
  return res;
}

double pct(double base, double x) { return 100.0 * (base / x - 1.0); }

void report(const network_result& r) {
  const variant_result& base = r.variants[0];
  std::printf("\n%s: medians over %zu iterations (ms); speedup = unfused time / variant time\n", r.name.c_str(),
              base.times.size());
  std::printf("  %-9s %9s %9s %7s %9s %9s   %-8s %-8s %-8s  %9s %9s %9s\n", "variant", "forward", "backward", "sgd",
              "iteration", "non-conv", "fwd", "bwd", "overall", "mem fwd", "mem bwd", "mem total");
  for (const auto& v : r.variants) {
    const double conv = 1e3 * (r.conv_fwd + r.conv_bwd);
    std::printf("  %-9s %9.1f %9.1f %7.1f %9.1f %9.1f   %-8.3f %-8.3f %-8.3f  %7.2f GB %7.2f GB %7.2f GB\n",
                paper::variant_name(v.v), 1e3 * v.fwd(), 1e3 * v.bwd(), 1e3 * v.sgd(), 1e3 * v.total(),
                1e3 * (v.fwd() + v.bwd()) - conv, base.fwd() / v.fwd(), base.bwd() / v.bwd(), base.total() / v.total(),
                v.bytes.forward / 1e9, v.bytes.backward / 1e9, (v.bytes.forward + v.bytes.backward) / 1e9);
  }
  std::printf("  CPU time (all threads; does not count time other processes hold the cores), medians:\n");
  for (const auto& v : r.variants)
    std::printf("    %-9s forward %8.1f  backward %8.1f  iteration %8.1f ms   speedup fwd %.3f bwd %.3f overall %.3f\n",
                paper::variant_name(v.v), 1e3 * v.cpu_fwd(), 1e3 * v.cpu_bwd(), 1e3 * v.cpu_total(),
                base.cpu_fwd() / v.cpu_fwd(), base.cpu_bwd() / v.cpu_bwd(), base.cpu_total() / v.cpu_total());
  std::printf("  fastest iteration (least disturbed by other load): ");
  for (const auto& v : r.variants)
    std::printf(" %s fwd %.1f bwd %.1f total %.1f ms (%.3fx);", paper::variant_name(v.v), 1e3 * v.best_fwd(),
                1e3 * v.best_bwd(), 1e3 * v.best_total(), base.best_total() / v.best_total());
  std::printf("\n");
  std::printf("  convolutions alone: forward %.1f ms, backward %.1f ms\n", 1e3 * r.conv_fwd, 1e3 * r.conv_bwd);
  std::printf("  per layer type (forward / backward ms):\n");
  for (const auto& k : r.types) {
    std::printf("    %-16s", k.c_str());
    for (const auto& v : r.variants)
      std::printf("  %s %8.1f / %8.1f", paper::variant_name(v.v), 1e3 * v.fwd_type(k), 1e3 * v.bwd_type(k));
    std::printf("\n");
  }
  std::printf("  first iteration (same weights and input): ");
  for (const auto& v : r.variants)
    std::printf(" %s loss %.7f |grad| %.7g;", paper::variant_name(v.v), v.first_loss, v.first_grad_norm);
  std::printf("\n");
  for (std::size_t k = 1; k < r.variants.size(); ++k)
    std::printf(
        "  %s: largest gradient difference from unfused in one %s parameter tensor: %.3g of the gradient norm (%s)\n",
        paper::variant_name(r.variants[k].v), r.name.c_str(), r.variants[k].worst_grad_diff,
        r.variants[k].worst_grad_param.c_str());
  const double b_bytes = base.bytes.forward + base.bytes.backward;
  for (std::size_t k = 1; k < r.variants.size(); ++k) {
    const auto& v = r.variants[k];
    std::printf(
        "  %s vs unfused: forward %+.1f%%, backward %+.1f%%, overall %+.1f%%; modelled memory traffic %+.1f%%\n",
        paper::variant_name(v.v), pct(base.fwd(), v.fwd()), pct(base.bwd(), v.bwd()), pct(base.total(), v.total()),
        100.0 * ((v.bytes.forward + v.bytes.backward) / b_bytes - 1.0));
  }
}

void write_json(const options& o, const std::vector<network_result>& all) {
  std::ofstream f(o.json);
  if (!f) {
    std::fprintf(stderr, "error: cannot write %s\n", o.json.c_str());
    std::exit(1);
  }
  f << "{\n  \"batch\": " << o.batch << ", \"image_size\": " << o.image_size << ", \"threads\": " << o.threads
    << ", \"iters\": " << o.iters << ", \"warmup\": " << o.warmup << ",\n  \"networks\": [\n";
  for (std::size_t n = 0; n < all.size(); ++n) {
    const auto& r = all[n];
    f << "    {\"name\": \"" << r.name << "\", \"conv_alone_fwd_ms\": " << 1e3 * r.conv_fwd
      << ", \"conv_alone_bwd_ms\": " << 1e3 * r.conv_bwd << ",\n     \"variants\": [\n";
    for (std::size_t k = 0; k < r.variants.size(); ++k) {
      const auto& v = r.variants[k];
      f << "       {\"name\": \"" << paper::variant_name(v.v) << "\", \"fwd_ms\": " << 1e3 * v.fwd()
        << ", \"bwd_ms\": " << 1e3 * v.bwd() << ", \"sgd_ms\": " << 1e3 * v.sgd()
        << ", \"total_ms\": " << 1e3 * v.total() << ", \"best_fwd_ms\": " << 1e3 * v.best_fwd()
        << ", \"best_bwd_ms\": " << 1e3 * v.best_bwd() << ", \"best_total_ms\": " << 1e3 * v.best_total()
        << ", \"cpu_fwd_ms\": " << 1e3 * v.cpu_fwd() << ", \"cpu_bwd_ms\": " << 1e3 * v.cpu_bwd()
        << ", \"cpu_total_ms\": " << 1e3 * v.cpu_total() << ", \"first_loss\": " << v.first_loss
        << ", \"first_grad_norm\": " << v.first_grad_norm << ", \"bytes_fwd\": " << v.bytes.forward
        << ", \"bytes_bwd\": " << v.bytes.backward << ",\n        \"fwd_by_type_ms\": {";
      for (std::size_t t = 0; t < r.types.size(); ++t)
        f << (t ? ", " : "") << "\"" << r.types[t] << "\": " << 1e3 * v.fwd_type(r.types[t]);
      f << "},\n        \"bwd_by_type_ms\": {";
      for (std::size_t t = 0; t < r.types.size(); ++t)
        f << (t ? ", " : "") << "\"" << r.types[t] << "\": " << 1e3 * v.bwd_type(r.types[t]);
      f << "}}" << (k + 1 < r.variants.size() ? "," : "") << "\n";
    }
    f << "     ]}" << (n + 1 < all.size() ? "," : "") << "\n";
  }
  f << "  ]\n}\n";
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  try {
    bnff::set_num_threads(o.threads);
    std::printf("bnff paper iterations: %d thread(s), batch %lld, %d warm-up + %d measured iterations per variant\n",
                bnff::max_threads(), (long long)o.batch, o.warmup, o.iters);
    std::vector<network_result> all;
    for (const auto& n : o.nets) all.push_back(run_network(o, n));
    {
      std::ifstream la("/proc/loadavg");
      std::string l1, l5, l15;
      if (la >> l1 >> l5 >> l15)
        std::printf("\nload average at the end (other work on the machine): %s %s %s\n", l1.c_str(), l5.c_str(),
                    l15.c_str());
    }
    for (const auto& r : all) report(r);
    if (!o.json.empty()) write_json(o, all);
    if (o.tolerance > 0) {
      bool ok = true;
      for (const auto& r : all)
        for (const auto& v : r.variants) {
          const auto& b = r.variants[0];
          const double dl = std::abs(v.first_loss - b.first_loss) / std::max(1e-30, std::abs(b.first_loss));
          const double dg =
              std::abs(v.first_grad_norm - b.first_grad_norm) / std::max(1e-30, std::abs(b.first_grad_norm));
          if (!(dl <= o.tolerance && dg <= o.tolerance && v.worst_grad_diff <= o.tolerance)) {
            ok = false;
            std::printf(
                "MISMATCH %s %s: loss rel diff %.3g, grad norm rel diff %.3g, worst parameter gradient %.3g "
                "(%s) (tolerance %.3g)\n",
                r.name.c_str(), paper::variant_name(v.v), dl, dg, v.worst_grad_diff, v.worst_grad_param.c_str(),
                o.tolerance);
          }
        }
      std::printf(ok ? "variants agree within %.3g\n" : "variants disagree (tolerance %.3g)\n", o.tolerance);
      return ok ? 0 : 1;
    }
  } catch (const trainer::usage_error& e) {
    fail(e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
