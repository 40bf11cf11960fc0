#include <catch2/catch.hpp>

#include <vector>

#include "bnff/parallel/parallel.hpp"

TEST_CASE("split_range covers 0..total in order, sizes differ by at most one", "[parallel]") {
  for (bnff::index_t total : {0, 1, 7, 64, 1001}) {
    for (bnff::index_t parts : {1, 2, 3, 16}) {
      bnff::index_t next = 0, lo = total, hi = 0;
      for (bnff::index_t i = 0; i < parts; ++i) {
        auto r = bnff::split_range(total, parts, i);
        CHECK(r.begin == next);
        next = r.end;
        lo = std::min(lo, r.size());
        hi = std::max(hi, r.size());
      }
      CHECK(next == total);
      CHECK(hi - lo <= 1);
    }
  }
}

TEST_CASE("parallel_for runs every task exactly once for any thread count", "[parallel]") {
  for (int threads : {1, 2}) {
    bnff::set_num_threads(threads);
    std::vector<int> hits(1000, 0);
    bnff::parallel_for(1000, [&](bnff::index_t t) { hits[std::size_t(t)] += 1; });
    for (int h : hits) CHECK(h == 1);
  }
}
