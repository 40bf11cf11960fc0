// bnff_bench: every kernel family beside its unfused baseline and the machine's ceilings.
//   bnff_bench [--quick | --all-shapes] [Google Benchmark flags, e.g. --benchmark_filter=stats/]
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
            "  --quick       a few representative shapes per family (about 2 minutes)\n"
            "  --all-shapes  every DenseNet-121 composite layer of the catalog (long)\n"
            "Names: <family>/<variant>/<shape>/threads:<t>/real_time. Google Benchmark's flags follow.\n\n");
      args.push_back(argv[i]);
    }
  }
  for (auto f : bnff::bench::families()) f(opts);
  int n = int(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
