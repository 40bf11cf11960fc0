// bnff: a plain row-major GEMM on the same blocked driver and microkernel as the
// convolutions (the engine's ceiling, and a building block).
#pragma once

#include <vector>

#include "bnff/error.hpp"
#include "bnff/gemm/block_gemm.hpp"
#include "bnff/gemm/task_queue.hpp"
#include "bnff/parallel/parallel.hpp"

namespace bnff::gemm {

// C[m x n] = A[m x k] * B[k x n], row-major with leading dimensions lda, ldb, ldc.
// Column tiles of nc_max columns are the tasks (fixed by n). Packing buffers are
// allocated once per call, outside every loop.
template <class T, class Arch = xsimd::default_arch>
void matmul(index_t m, index_t n, index_t k, const T* a, index_t lda, const T* b, index_t ldb, T* c, index_t ldc) {
  constexpr const char* where = "gemm::matmul";
  check_arg(m > 0 && n > 0 && k > 0, where, "m, n, k", "> 0", detail::concat(m, ", ", n, ", ", k));
  check_arg(lda >= k, where, "lda", detail::concat(">= ", k), lda);
  check_arg(ldb >= n, where, "ldb", detail::concat(">= ", n), ldb);
  check_arg(ldc >= n, where, "ldc", detail::concat(">= ", n), ldc);
  using blk = blocking<T, Arch>;
  const index_t tile = blk::nc_max, tasks = ceil_div(n, tile);
  const index_t a_size = aligned_extent<T>(packed_a_size<T, Arch>(m, k));
  const index_t b_size = aligned_extent<T>(packed_b_size<T, Arch>(k, tile));
  std::vector<T> ws(std::size_t(a_size + index_t(max_threads()) * b_size));
  T* ap = align_pointer(ws.data());
  pack_a<T, Arch>(
      m, k, [&](index_t i, index_t kk) { return a[i * lda + kk]; }, ap);
  struct packer {
    const T* b;
    index_t ldb, cols;
    void pack(index_t k0, index_t kcount, T* bp, index_t ldp) const {
      for (index_t kk = 0; kk < kcount; ++kk) std::copy(b + (k0 + kk) * ldb, b + (k0 + kk) * ldb + cols, bp + kk * ldp);
    }
  };
  task_queue queue(tasks);
  parallel_region([&](int thread, int) {
    T* bp = align_pointer(ws.data() + a_size + index_t(thread) * b_size);
    for (index_t t = queue.claim(); t < tasks; t = queue.claim()) {
      const index_t j0 = t * tile, cols = std::min(tile, n - j0);
      packer p{b + j0, ldb, cols};
      gemm_tile<T, Arch>(m, k, ap, p, bp, c + j0, ldc, cols, [](index_t, index_t) {});
    }
  });
}

}  // namespace bnff::gemm
