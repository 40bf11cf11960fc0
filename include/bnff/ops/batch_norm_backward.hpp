// bnff: batch-norm backward, optionally through a fused ReLU, from x and the
// saved statistics: one reduction sweep and one dx sweep per channel.
#pragma once

#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <array>
#include <type_traits>

#include "bnff/config.hpp"
#include "bnff/ops/bn_activation.hpp"
#include "bnff/ops/bn_backward_sums.hpp"
#include "bnff/ops/bn_checks.hpp"
#include "bnff/ops/bn_grad_mode.hpp"
#include "bnff/ops/bn_tasks.hpp"
#include "bnff/simd/fma.hpp"
#include "bnff/simd/prefetch.hpp"
#include "bnff/simd/store_policy.hpp"
#include "bnff/simd/sum_lanes.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff {

namespace detail {

// Channels per task of the backward: a task pipelines its channels (below), so
// more per task overlaps more; enough tasks remain to share among threads.
// From the shape alone, like every partition in bnff.
inline index_t backward_channels_per_task(index_t channels) noexcept {
  const index_t g = channels / 16;
  return g < 1 ? 1 : (g > 8 ? 8 : g);
}

// How far ahead the paired reduction prefetches each stream: one line per batch read,
// spread over the loop. A burst of a whole block's lines (4 KiB per stream) at the start
// of each block kept the dx sweep waiting behind it: 2-3% slower on 16x256x56x56.
constexpr index_t backward_prefetch_bytes = 2048;

// One channel block of each of batch_norm_backward's two sweeps, over x and dz.
template <class Activation, class Arch, class T>
struct bn_backward_blocks {
  using batch = xsimd::batch<T, Arch>;
  const tensor_view<const T>& x;
  const tensor_view<const T>& dz;
  const T *mean, *scale, *beta;

  // Adds block [b0, b1) of plane (n, c) to c's sums: sum(dy), sum(dy * xc).
  BNFF_ALWAYS_INLINE void reduce(index_t c, index_t n, index_t b0, index_t b1, std::array<double, 2>& sums) const {
    const T mean_c = mean[c];
    const batch vmean(mean_c), vscale(scale[c]), vbeta(beta[c]);
    const T* xp = x.plane_ptr(n, c) + b0;
    const T* dzp = dz.plane_ptr(n, c) + b0;
    // Padded lanes: x = mean and dz = 0, so xc = dy = 0 adds nothing.
    simd::sum_lanes<2, T, Arch>(b1 - b0, sums, [&](auto lanes, auto& acc) {
      const batch xc = lanes.load(xp, mean_c) - vmean;
      const batch dy = Activation::backward(simd::fma(xc, vscale, vbeta), lanes.load(dzp, T(0)));
      acc[0] += dy;
      acc[1] = simd::fma(dy, xc, acc[1]);
    });
  }

  // reduce() of block [b0, b1) of planes (n, c) and (n + 1, c) in one loop, as two
  // interleaved streams: plane n's terms go into `sums`, plane n + 1's into `later`
  // (from zero). The block is one flush chunk of sum_lanes (bn_backward_block), so
  // adding `later` to the sums after plane n's blocks gives reduce()'s bits. Each batch
  // asks for the line backward_prefetch_bytes ahead in each of the four streams.
  BNFF_ALWAYS_INLINE void reduce_pair(index_t c, index_t n, index_t b0, index_t b1, std::array<double, 2>& sums,
                                      std::array<double, 2>& later) const {
    const T mean_c = mean[c];
    const batch vmean(mean_c), vscale(scale[c]), vbeta(beta[c]);
    const T *xp = x.plane_ptr(n, c) + b0, *xq = x.plane_ptr(n + 1, c) + b0;
    const T *dzp = dz.plane_ptr(n, c) + b0, *dzq = dz.plane_ptr(n + 1, c) + b0;
    std::array<batch, 2> acc[4], acq[4];
    for (int i = 0; i < 4; ++i) acc[i].fill(batch(T(0))), acq[i].fill(batch(T(0)));
    constexpr index_t ahead = backward_prefetch_bytes / index_t(sizeof(T));
    simd::for_each_lanes<T, Arch, 4>(b1 - b0, [&](auto lanes, auto s) {
      simd::prefetch_ahead(xp + lanes.offset, ahead);
      simd::prefetch_ahead(xq + lanes.offset, ahead);
      simd::prefetch_ahead(dzp + lanes.offset, ahead);
      simd::prefetch_ahead(dzq + lanes.offset, ahead);
      const batch xc = lanes.load(xp, mean_c) - vmean;
      const batch xd = lanes.load(xq, mean_c) - vmean;
      const batch dy = Activation::backward(simd::fma(xc, vscale, vbeta), lanes.load(dzp, T(0)));
      const batch dw = Activation::backward(simd::fma(xd, vscale, vbeta), lanes.load(dzq, T(0)));
      acc[s][0] += dy;
      acc[s][1] = simd::fma(dy, xc, acc[s][1]);
      acq[s][0] += dw;
      acq[s][1] = simd::fma(dw, xd, acq[s][1]);
    });
    simd_flush_sums(acc, sums);
    later = {0.0, 0.0};
    simd_flush_sums(acq, later);
  }

  // dx over block [b0, b1) of plane (n, c), with k0 = scale * sum(dy) / m, k1 = scale * invstd * dgamma / m.
  template <class GradMode, class Store>
  BNFF_ALWAYS_INLINE void dx(const tensor_view<T>& out, index_t c, index_t n, index_t b0, index_t b1, const batch& k0,
                             const batch& k1) const {
    const batch vmean(mean[c]), vscale(scale[c]), vbeta(beta[c]);
    const T* xp = x.plane_ptr(n, c) + b0;
    const T* dzp = dz.plane_ptr(n, c) + b0;
    T* dxp = out.plane_ptr(n, c) + b0;
    Store::template for_each<T, Arch>(b1 - b0, dxp, [&](auto lanes, auto) {
      const batch xc = lanes.load(xp) - vmean;
      const batch dy = Activation::backward(simd::fma(xc, vscale, vbeta), lanes.load(dzp));
      const batch g = simd::fms(vscale, dy, simd::fma(xc, k1, k0));
      if constexpr (GradMode::reads_output)
        lanes.store(dxp, GradMode::combine(lanes.load(dxp), g));
      else
        lanes.store(dxp, g);
    });
  }
};

// Elements per block of both sweeps: one flush chunk, so sum_lanes flushes once per block.
template <class T, class Arch>
constexpr index_t bn_backward_block = simd::sum_flush_batches* index_t(xsimd::batch<T, Arch>::size);

// Planes of at most this many blocks are reduced two at a time (see bn_backward_sweeps).
constexpr index_t backward_pair_max_blocks = 64;

// The two sweeps of batch_norm_backward (arguments already checked). Store is
// simd::temporal_stores or simd::streaming_stores; the bits are the same.
// Within a task, the reduction sweep of channel c + 1 runs block by block
// beside the dx sweep of channel c: the reads of the next channel then overlap
// the writes of this one (a channel's two sweeps would otherwise alternate
// between reading and writing main memory), and each channel's sums still
// accumulate its blocks in the same order, so the bits do not change.
template <class Activation, class GradMode, class Store, class Arch, class T>
void bn_backward_sweeps(const tensor_view<const T>& x, const tensor_view<const T>& dz, const T* mean, const T* invstd,
                        const T* scale, const T* beta, const tensor_view<T>& dx, T* dgamma, T* dbeta) {
  using batch = xsimd::batch<T, Arch>;
  const index_t plane = x.plane(), channels = x.c();
  const double m = double(x.n()) * double(plane);
  const index_t block = bn_backward_block<T, Arch>;
  const std::array<tensor_view<const T>, 2> inputs{x, dz};
  const index_t per_task = backward_channels_per_task(channels);
  const index_t tasks = (channels + per_task - 1) / per_task;
  const bn_backward_blocks<Activation, Arch, T> blocks{x, dz, mean, scale, beta};
  const index_t per_plane = (plane + block - 1) / block;
  auto prefetch_block = [&](index_t c, index_t n, index_t b0) {
    const index_t bytes = (b0 + block < plane ? block : plane - b0) * index_t(sizeof(T));
    simd::prefetch_lines(x.plane_ptr(n, c) + b0, bytes);
    simd::prefetch_lines(dz.plane_ptr(n, c) + b0, bytes);
  };

  parallel_for(tasks, [&](index_t t) {
    const index_t c_end = (t + 1) * per_task < channels ? (t + 1) * per_task : channels;
    std::array<double, 2> sums{0.0, 0.0};
    for_each_channel_block(inputs, t * per_task, block,
                           [&](index_t n, index_t b0, index_t b1) { blocks.reduce(t * per_task, n, b0, b1, sums); });
    for (index_t c = t * per_task; c < c_end; ++c) {
      const double istd = double(invstd[c]), sc = double(scale[c]);
      // dx from dbeta and dgamma as stored (rounded to T), as bn_backward_dx computes it.
      const T sum_dy = T(sums[0]), sum_dy_xhat = T(sums[1] * istd);
      if (dbeta) dbeta[c] = sum_dy;
      if (dgamma) dgamma[c] = sum_dy_xhat;
      const batch k0(T(sc * double(sum_dy) / m)), k1(T(sc * istd * double(sum_dy_xhat) / m));
      std::array<double, 2> next{0.0, 0.0};
      if (c + 1 < c_end) {
        // Walks (and prefetches) channel c + 1, whose planes have the same blocks as c's.
        index_t n0 = 0;
        if (per_plane <= backward_pair_max_blocks) {
          // Planes n and n + 1 of channel c + 1 as two interleaved streams (four
          // from main memory with dz), plane n + 1's block sums added after plane n's.
          // reduce_pair prefetches within the planes; the next pair's first lines are
          // asked for during the last block of this pair.
          std::array<double, 2> later[backward_pair_max_blocks];
          const index_t head = std::min<index_t>(backward_prefetch_bytes, plane * index_t(sizeof(T)));
          for (; n0 + 1 < x.n(); n0 += 2) {
            for (index_t b = 0, b0 = 0; b0 < plane; ++b, b0 += block) {
              const index_t b1 = b0 + block < plane ? b0 + block : plane;
              if (b + 1 == per_plane)
                for (index_t nn = n0 + 2; nn < n0 + 4 && nn < x.n(); ++nn) {
                  simd::prefetch_lines(x.plane_ptr(nn, c + 1), head);
                  simd::prefetch_lines(dz.plane_ptr(nn, c + 1), head);
                }
              blocks.reduce_pair(c + 1, n0, b0, b1, next, later[b]);
              blocks.template dx<GradMode, Store>(dx, c, n0, b0, b1, k0, k1);
              blocks.template dx<GradMode, Store>(dx, c, n0 + 1, b0, b1, k0, k1);
            }
            for (index_t b = 0; b < per_plane; ++b) next[0] += later[b][0], next[1] += later[b][1];
          }
        }
        for (index_t n = n0; n < x.n(); ++n)
          for (index_t b0 = 0; b0 < plane; b0 += block) {
            const index_t b1 = b0 + block < plane ? b0 + block : plane;
            if (b0 + block < plane)
              prefetch_block(c + 1, n, b0 + block);
            else if (n + 1 < x.n())
              prefetch_block(c + 1, n + 1, 0);
            blocks.reduce(c + 1, n, b0, b1, next);
            blocks.template dx<GradMode, Store>(dx, c, n, b0, b1, k0, k1);
          }
      } else {
        for (index_t n = 0; n < x.n(); ++n)
          for (index_t b0 = 0; b0 < plane; b0 += block)
            blocks.template dx<GradMode, Store>(dx, c, n, b0, b0 + block < plane ? b0 + block : plane, k0, k1);
      }
      sums = next;
    }
    Store::finish();
  });
}

// The sweeps of batch_norm_backward with sync(sums) between them (arguments already
// checked): every channel's reductions first, in the same block order as above (so
// the same sums), then the dx sweep from the synchronized sums.
template <class Activation, class GradMode, class Store, class Arch, class T, class SumsSync>
void bn_backward_sweeps_synced(const char* where, const tensor_view<const T>& x, const tensor_view<const T>& dz,
                               const T* mean, const T* invstd, const T* scale, const T* beta, const tensor_view<T>& dx,
                               T* dgamma, T* dbeta, double* sums, SumsSync& sync) {
  using batch = xsimd::batch<T, Arch>;
  const index_t plane = x.plane(), channels = x.c();
  const double local = double(x.n()) * double(plane);
  const index_t block = bn_backward_block<T, Arch>;
  const std::array<tensor_view<const T>, 2> inputs{x, dz};
  const bn_backward_blocks<Activation, Arch, T> blocks{x, dz, mean, scale, beta};
  for_each_channel(channels, [&](index_t c) {
    std::array<double, 2> s{0.0, 0.0};
    for_each_channel_block(inputs, c, block,
                           [&](index_t n, index_t b0, index_t b1) { blocks.reduce(c, n, b0, b1, s); });
    sums[2 * c] = s[0];
    sums[2 * c + 1] = s[1];
  });
  sums[2 * channels] = local;
  for (index_t c = 0; c < channels; ++c) {
    if (dbeta) dbeta[c] = T(sums[2 * c]);
    if (dgamma) dgamma[c] = T(sums[2 * c + 1] * double(invstd[c]));
  }
  sync(vector_view<double>(sums, bn_backward_sums_size(channels)));
  const double m = sums[2 * channels];
  check_sums_count(where, m, local);
  parallel_for(channels, [&](index_t c) {
    const double istd = double(invstd[c]), sc = double(scale[c]);
    // Rounded to T as dbeta and dgamma are (the non-synchronized overload's bits, bn_backward_dx_from_sums's).
    const double sum_dy = double(T(sums[2 * c])), sum_dy_xhat = double(T(sums[2 * c + 1] * istd));
    const batch k0(T(sc * sum_dy / m)), k1(T(sc * istd * sum_dy_xhat / m));
    for (index_t n = 0; n < x.n(); ++n)
      for (index_t b0 = 0; b0 < plane; b0 += block)
        blocks.template dx<GradMode, Store>(dx, c, n, b0, b0 + block < plane ? b0 + block : plane, k0, k1);
    Store::finish();
  });
}

// Every check of batch_norm_backward, before anything is written.
template <class GradMode, class T>
void check_batch_norm_backward(const char* where, const tensor_view<const T>& x, const tensor_view<const T>& dz,
                               vector_view<const T> mean, vector_view<const T> invstd, vector_view<const T> scale,
                               vector_view<const T> beta, const tensor_view<T>& dx, vector_view<T> dgamma,
                               vector_view<T> dbeta) {
  check_planes(where, "x", x);
  check_like(where, "dz", dz, x.shape());
  check_like(where, "dx", dx, x.shape());
  const index_t channels = x.c();
  check_channels(where, "mean", mean, channels);
  check_channels(where, "invstd", invstd, channels);
  check_channels(where, "scale", scale, channels);
  check_channels(where, "beta", beta, channels);
  check_channels(where, "dgamma", dgamma, channels, true);
  check_channels(where, "dbeta", dbeta, channels, true);
  if constexpr (GradMode::reads_output) {
    check_disjoint(where, "dx", dx, "x", x);
    check_disjoint(where, "dx", dx, "dz", dz);
  } else {
    check_in_place_or_disjoint(where, "dx", dx, "x", x);
    check_in_place_or_disjoint(where, "dx", dx, "dz", dz);
  }
  const char* vec_names[4] = {"mean", "invstd", "scale", "beta"};
  const vector_view<const T> vecs[4] = {mean, invstd, scale, beta};
  for (int i = 0; i < 4; ++i) {
    check_disjoint(where, "dx", dx, vec_names[i], vecs[i]);
    check_disjoint(where, "dgamma", dgamma, vec_names[i], vecs[i]);
    check_disjoint(where, "dbeta", dbeta, vec_names[i], vecs[i]);
  }
  check_disjoint(where, "dgamma", dgamma, "x", x);
  check_disjoint(where, "dgamma", dgamma, "dz", dz);
  check_disjoint(where, "dgamma", dgamma, "dx", dx);
  check_disjoint(where, "dbeta", dbeta, "x", x);
  check_disjoint(where, "dbeta", dbeta, "dz", dz);
  check_disjoint(where, "dbeta", dbeta, "dx", dx);
  check_disjoint(where, "dbeta", dbeta, "dgamma", dgamma);
}

}  // namespace detail

// Gradients of z = Activation(BN(x)) given dz, with the batch statistics
// depending on x (training mode). Per channel c, with m = N * H * W:
//   xc = x - mean,  y = xc * scale + beta   (the forward's value, recomputed)
//   dy = dz * [y > 0] for bn_relu, dz for bn_identity   (no mask is stored)
//   dbeta = sum(dy),  dgamma = sum(dy * xc) * invstd     (one sweep over x, dz)
//   dx = scale * dy - (xc * invstd * scale * dgamma / m + scale * dbeta / m)   (second sweep, from
//        dgamma and dbeta rounded to T as stored: bn_backward_dx's bits for the same dy)
// which is scale * (dy - dbeta / m - xhat * dgamma / m). GradMode grad_overwrite
// writes dx, grad_accumulate adds to it. The second sweep finds the channel in
// cache when N * H * W * 2 elements fit in L2, so main memory sees x and dz once.
// mean, invstd, scale come from batch_norm_finalize (beta is the forward's).
// dgamma and dbeta may be empty (not computed). Reductions run per channel in a
// fixed order: the same bits for any thread count. dx may be exactly x or dz
// (in place) with grad_overwrite; otherwise it must not overlap any input.
template <class Activation = bn_identity, class GradMode = grad_overwrite, class Arch = xsimd::default_arch, class T>
void batch_norm_backward(tensor_view<const detail::nondeduced_t<T>> x, tensor_view<const detail::nondeduced_t<T>> dz,
                         vector_view<const detail::nondeduced_t<T>> mean,
                         vector_view<const detail::nondeduced_t<T>> invstd,
                         vector_view<const detail::nondeduced_t<T>> scale,
                         vector_view<const detail::nondeduced_t<T>> beta, tensor_view<T> dx, vector_view<T> dgamma,
                         vector_view<T> dbeta) {
  constexpr const char* where = "batch_norm_backward";
  detail::check_batch_norm_backward<GradMode, T>(where, x, dz, mean, invstd, scale, beta, dx, dgamma, dbeta);
  detail::with_store_policy<T>(dx.size(), dx.data() == x.data() || dx.data() == dz.data(), [&](auto store) {
    // Accumulating reads dx anyway: streaming its stores would save nothing.
    using Store = std::conditional_t<GradMode::reads_output, simd::temporal_stores, decltype(store)>;
    detail::bn_backward_sweeps<Activation, GradMode, Store, Arch, T>(
        x, dz, mean.data(), invstd.data(), scale.data(), beta.data(), dx, dgamma.empty() ? nullptr : dgamma.data(),
        dbeta.empty() ? nullptr : dbeta.data());
  });
}

// The same gradients with a synchronization point between the two sweeps, for BN
// synchronized across processes (data-parallel training): the reduction sweep writes
// this shard's sums into `sums` (2C + 1 doubles, the layout of stats/partials_buffer.hpp:
// sum(dy), sum(dy * xc) per channel, then the count N * H * W) and dgamma, dbeta from
// them (this rank's share, as bn_backward_params_from_sums); sync(sums) must leave
// the sums over the global batch there (e.g. an in-place SUM all-reduce); the dx
// sweep then uses them, with m = sums[2C]. mean, invstd, scale must come from the
// global batch's statistics. The sweeps are not pipelined across channels here (the
// sync sits between them); with a sync that leaves the sums alone the bits are
// those of the overload without it. A count below N * H * W after sync is a bnff::error.
template <class Activation = bn_identity, class GradMode = grad_overwrite, class Arch = xsimd::default_arch, class T,
          class SumsSync>
void batch_norm_backward(tensor_view<const detail::nondeduced_t<T>> x, tensor_view<const detail::nondeduced_t<T>> dz,
                         vector_view<const detail::nondeduced_t<T>> mean,
                         vector_view<const detail::nondeduced_t<T>> invstd,
                         vector_view<const detail::nondeduced_t<T>> scale,
                         vector_view<const detail::nondeduced_t<T>> beta, tensor_view<T> dx, vector_view<T> dgamma,
                         vector_view<T> dbeta, vector_view<double> sums, SumsSync&& sync) {
  constexpr const char* where = "batch_norm_backward";
  detail::check_batch_norm_backward<GradMode, T>(where, x, dz, mean, invstd, scale, beta, dx, dgamma, dbeta);
  check_arg(sums.size() >= bn_backward_sums_size(x.c()), where, "sums",
            detail::concat(">= ", bn_backward_sums_size(x.c()), " doubles (bn_backward_sums_size)"), sums.size());
  detail::check_disjoint(where, "sums", sums, "x", x);
  detail::check_disjoint(where, "sums", sums, "dz", dz);
  detail::check_disjoint(where, "dx", dx, "sums", sums);
  const char* vec_names[6] = {"mean", "invstd", "scale", "beta", "dgamma", "dbeta"};
  const vector_view<const T> vecs[6] = {mean, invstd, scale, beta, dgamma, dbeta};
  for (int i = 0; i < 6; ++i) detail::check_disjoint(where, "sums", sums, vec_names[i], vecs[i]);

  detail::with_store_policy<T>(dx.size(), dx.data() == x.data() || dx.data() == dz.data(), [&](auto store) {
    using Store = std::conditional_t<GradMode::reads_output, simd::temporal_stores, decltype(store)>;
    detail::bn_backward_sweeps_synced<Activation, GradMode, Store, Arch, T>(
        where, x, dz, mean.data(), invstd.data(), scale.data(), beta.data(), dx,
        dgamma.empty() ? nullptr : dgamma.data(), dbeta.empty() ? nullptr : dbeta.data(), sums.data(), sync);
  });
}

}  // namespace bnff
