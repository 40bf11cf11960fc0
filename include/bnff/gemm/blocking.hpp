// bnff: register and cache blocking of the GEMM that every convolution runs on.
#pragma once

#include <cstdint>
#include <xsimd/xsimd.hpp>

#include "bnff/config.hpp"

namespace bnff::gemm {

// Tile sizes for element type T on architecture Arch.
//  - mr x nr is the register tile: mr rows of A broadcast against nv vectors of B,
//    mr * nv accumulators, which must stay in registers beside the nv B vectors and a
//    broadcast. With 32 vector registers (AVX-512), 8 x 3 = 24 independent FMA chains
//    cover latency 4 x 2 pipes with room to spare. With 16 (AVX2, SSE) that tile
//    spilled (a 1x1 convolution ran at a quarter of an AVX2 core's peak): 6 x 2 there,
//    12 chains in 12 + 2 + 1 registers (on a Zen 3 core, GEMM 1024 x 3136 x 1024 at
//    about 72 GFLOP/s, against 45 for 8 x 3 and 65 for 4 x 3).
//  - kc rows of B are packed at a time (a B row panel of kc x nr stays in L1).
//  - nc_max bounds a column tile (and its packed kc x nc block, kept in L2).
template <class T, class Arch = xsimd::default_arch>
struct blocking {
  using batch = xsimd::batch<T, Arch>;
  static constexpr int width = int(batch::size);
  // 32 vector registers (AVX-512) or 16 (AVX2, SSE): the rule every register tile in bnff follows.
  static constexpr bool many_registers = sizeof(batch) >= 64;
  static constexpr int mr = many_registers ? 8 : 6;
  static constexpr int nv = many_registers ? 3 : 2;
  static constexpr int nr = nv * width;
  static constexpr index_t kc = 256;
  static constexpr index_t nc_max = 512;
  // Rows of C finished together before the epilogue sees them (a multiple of mr).
  static constexpr index_t mc = many_registers ? 32 : 36;
  static_assert(mc % mr == 0, "a block of rows is whole register tiles");
  static constexpr std::size_t alignment = 64;
};

constexpr index_t round_up(index_t x, index_t m) noexcept { return (x + m - 1) / m * m; }
constexpr index_t ceil_div(index_t x, index_t m) noexcept { return (x + m - 1) / m; }

// Elements of T to reserve so that `count` elements fit after aligning the start.
template <class T>
constexpr index_t aligned_extent(index_t count, std::size_t alignment = 64) noexcept {
  return count + index_t((alignment + sizeof(T) - 1) / sizeof(T));
}

// First `alignment`-byte boundary at or after p.
template <class T>
inline T* align_pointer(T* p, std::size_t alignment = 64) noexcept {
  const auto u = reinterpret_cast<std::uintptr_t>(p);
  return reinterpret_cast<T*>((u + alignment - 1) / alignment * alignment);
}

}  // namespace bnff::gemm
