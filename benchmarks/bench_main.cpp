// bnff_bench: every kernel family beside its unfused baseline and the machine's ceilings.
//   bnff_bench [--quick | --all-shapes] [Google Benchmark flags, e.g. --benchmark_filter=stats/]
#include <cstdio>
#include <cstring>
#include <vector>

#include "bench_common.hpp"

int main(int argc, char** argv) {
  bnff::bench::options opts;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) {
      opts.quick = true;
    } else if (!std::strcmp(argv[i], "--all-shapes")) {
      opts.all_shapes = true;
    } else {
      if (i > 0 && (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")))
        std::printf(
            "bnff_bench [--quick | --all-shapes] [benchmark flags]\n"
            "  --quick       one shape per family, 0.1 s per benchmark (about 2 minutes)\n"
            "  --all-shapes  every DenseNet-121 composite layer of the catalog (long)\n"
            "  default       first and last composite layer of each dense block, 0.2 s per\n"
            "                benchmark (about 12 minutes on 2 cores; budget 15)\n"
            "Names: <family>/<variant>/<shape>/threads:<t>/real_time. Google Benchmark's flags follow.\n\n");
      args.push_back(argv[i]);
    }
  }
  // Minimum time per benchmark unless the command line sets one: 0.2 s (0.3 s
  // took the default run to 17 minutes on two cores once the oneDNN
  // convolution variants joined, past its 15-minute budget), 0.1 s with --quick. Kernels of a few ms still get dozens of
  // iterations; Google Benchmark's names stay free of a min_time suffix.
  static char default_min_time[] = "--benchmark_min_time=0.2";
  static char quick_min_time[] = "--benchmark_min_time=0.1";
  bool has_min_time = false;
  for (char* a : args) has_min_time = has_min_time || !std::strncmp(a, "--benchmark_min_time", 20);
  if (!has_min_time) args.push_back(opts.quick ? quick_min_time : default_min_time);
  // Recorded in the JSON context so a report names the shape set it covers.
  benchmark::AddCustomContext("bnff_shapes", opts.all_shapes ? "all" : opts.quick ? "quick" : "default");
  for (auto f : bnff::bench::families()) f(opts);
  int n = int(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
