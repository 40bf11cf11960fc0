// bnff: batch-norm backward, optionally through a fused ReLU, from x and the
// saved statistics: one reduction sweep and one dx sweep per group of channels.
#pragma once

#include <xsimd/xsimd.hpp>

#include <array>
#include <type_traits>

#include "bnff/config.hpp"
#include "bnff/ops/bn_activation.hpp"
#include "bnff/ops/bn_backward_sums.hpp"
#include "bnff/ops/bn_checks.hpp"
#include "bnff/ops/bn_grad_mode.hpp"
#include "bnff/ops/bn_tasks.hpp"
#include "bnff/parallel/parallel.hpp"
#include "bnff/simd/fma.hpp"
#include "bnff/simd/store_policy.hpp"
#include "bnff/simd/sum_lanes.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff {

namespace detail {

// Channels per group of the backward's sweeps. A group's planes of x and dz over
// every image (2 * N * G * H * W elements) are read once from main memory by the
// reduction and again by the dx sweep, which must find them in cache: the group
// stays within backward_group_bytes (a share of a per-core L2 plus L3 slice,
// whatever the thread count), with at most backward_group_max channels and at
// least 16 groups when there are that many channels, so two threads share work.
// Within one image a group's planes are contiguous, so the reduction reads runs
// of G planes; channel by channel (planes C * H * W apart) the hardware prefetchers
// lost the stream at every plane: 16x224x56x56 float took 8.1 ms against 5.1 ms
// grouped (one thread). From the shape alone, like every partition in bnff.
constexpr index_t backward_group_bytes = index_t(2) << 20;
constexpr index_t backward_group_max = 32;

inline index_t backward_group_channels(index_t images, index_t plane, index_t channels, index_t elem_bytes) noexcept {
  const index_t per_channel = 2 * images * plane * elem_bytes;
  index_t g = per_channel > 0 ? backward_group_bytes / per_channel : backward_group_max;
  const index_t spread = channels / 16 < 1 ? 1 : channels / 16;
  if (g > spread) g = spread;
  if (g > backward_group_max) g = backward_group_max;
  return g < 1 ? 1 : g;
}

// One plane of each of batch_norm_backward's two sweeps, over x and dz.
template <class Activation, class Arch, class T>
struct bn_backward_planes {
  using batch = xsimd::batch<T, Arch>;
  const tensor_view<const T>& x;
  const tensor_view<const T>& dz;
  const T *mean, *scale, *beta;

  // Adds plane (n, c) to c's sums: sum(dy), sum(dy * xc), in sum_lanes' fixed order.
  BNFF_ALWAYS_INLINE void reduce(index_t c, index_t n, std::array<double, 2>& sums) const {
    const T mean_c = mean[c];
    const batch vmean(mean_c), vscale(scale[c]), vbeta(beta[c]);
    const T* xp = x.plane_ptr(n, c);
    const T* dzp = dz.plane_ptr(n, c);
    // Padded lanes: x = mean and dz = 0, so xc = dy = 0 adds nothing.
    simd::sum_lanes<2, T, Arch>(x.plane(), sums, [&](auto lanes, auto& acc) {
      const batch xc = lanes.load(xp, mean_c) - vmean;
      const batch dy = Activation::backward(simd::fma(xc, vscale, vbeta), lanes.load(dzp, T(0)));
      acc[0] += dy;
      acc[1] = simd::fma(dy, xc, acc[1]);
    });
  }

  // dx over plane (n, c), with k0 = scale * sum(dy) / m, k1 = scale * invstd * dgamma / m.
  template <class GradMode, class Store>
  BNFF_ALWAYS_INLINE void dx(const tensor_view<T>& out, index_t c, index_t n, const batch& k0, const batch& k1) const {
    const batch vmean(mean[c]), vscale(scale[c]), vbeta(beta[c]);
    const T* xp = x.plane_ptr(n, c);
    const T* dzp = dz.plane_ptr(n, c);
    T* dxp = out.plane_ptr(n, c);
    Store::template for_each<T, Arch>(x.plane(), dxp, [&](auto lanes, auto) {
      const batch xc = lanes.load(xp) - vmean;
      const batch dy = Activation::backward(simd::fma(xc, vscale, vbeta), lanes.load(dzp));
      const batch g = simd::fms(vscale, dy, simd::fma(xc, k1, k0));
      if constexpr (GradMode::reads_output)
        lanes.store(dxp, GradMode::combine(lanes.load(dxp), g));
      else
        lanes.store(dxp, g);
    });
  }

  // reduce() over channels [c0, c1) image by image, sums[c - c0] from zero.
  BNFF_ALWAYS_INLINE void reduce_group(index_t c0, index_t c1, std::array<double, 2>* sums) const {
    for (index_t c = c0; c < c1; ++c) sums[c - c0] = {0.0, 0.0};
    for (index_t n = 0; n < x.n(); ++n)
      for (index_t c = c0; c < c1; ++c) reduce(c, n, sums[c - c0]);
  }

  // dx() over channels [c0, c1) image by image, with channel c's k0[c - c0], k1[c - c0].
  template <class GradMode, class Store>
  BNFF_ALWAYS_INLINE void dx_group(const tensor_view<T>& out, index_t c0, index_t c1, const batch* k0,
                                   const batch* k1) const {
    for (index_t n = 0; n < x.n(); ++n)
      for (index_t c = c0; c < c1; ++c) dx<GradMode, Store>(out, c, n, k0[c - c0], k1[c - c0]);
  }
};

// The dx coefficients of channel c from its sums as stored in dbeta and dgamma
// (rounded to T): k0 = scale * dbeta / m, k1 = scale * invstd * dgamma / m, the
// bits of bn_backward_dx for the same dy.
template <class T, class Batch>
BNFF_ALWAYS_INLINE void backward_coefficients(double sum_dy, double sum_dy_xc, double m, T invstd, T scale, T* dgamma,
                                              T* dbeta, Batch& k0, Batch& k1) {
  const double istd = double(invstd), sc = double(scale);
  const T db = T(sum_dy), dg = T(sum_dy_xc * istd);
  if (dbeta) *dbeta = db;
  if (dgamma) *dgamma = dg;
  k0 = Batch(T(sc * double(db) / m));
  k1 = Batch(T(sc * istd * double(dg) / m));
}

// The two sweeps of batch_norm_backward (arguments already checked). Store is
// simd::temporal_stores or simd::streaming_stores; the bits are the same.
// A task is one group of channels (backward_group_channels): its reduction reads
// the group's planes image by image from main memory, then its dx sweep reads
// them again from cache. Each channel's sums accumulate its planes in image
// order, so the bits do not depend on the thread count. (Running the dx sweep of
// one group beside the reduction of the next, plane by plane, was 10-25% slower
// on 56x56 and 28x28 planes on one thread, though 15% faster on 7x7 planes.)
template <class Activation, class GradMode, class Store, class Arch, class T>
void bn_backward_sweeps(const tensor_view<const T>& x, const tensor_view<const T>& dz, const T* mean, const T* invstd,
                        const T* scale, const T* beta, const tensor_view<T>& dx, T* dgamma, T* dbeta) {
  using batch = xsimd::batch<T, Arch>;
  const index_t images = x.n(), channels = x.c();
  const double m = double(images) * double(x.plane());
  const index_t group = backward_group_channels(images, x.plane(), channels, index_t(sizeof(T)));
  const bn_backward_planes<Activation, Arch, T> planes{x, dz, mean, scale, beta};
  parallel_for((channels + group - 1) / group, [&](index_t g) {
    const index_t c0 = g * group, c1 = c0 + group < channels ? c0 + group : channels;
    std::array<double, 2> sums[backward_group_max];
    planes.reduce_group(c0, c1, sums);
    batch k0[backward_group_max], k1[backward_group_max];
    for (index_t c = c0; c < c1; ++c)
      backward_coefficients(sums[c - c0][0], sums[c - c0][1], m, invstd[c], scale[c], dgamma ? dgamma + c : nullptr,
                            dbeta ? dbeta + c : nullptr, k0[c - c0], k1[c - c0]);
    planes.template dx_group<GradMode, Store>(dx, c0, c1, k0, k1);
    Store::finish();
  });
}

// The sweeps of batch_norm_backward with sync(sums) between them (arguments already
// checked): every group's reductions first, in the same plane order as above (so
// the same sums), then the dx sweep from the synchronized sums.
template <class Activation, class GradMode, class Store, class Arch, class T, class SumsSync>
void bn_backward_sweeps_synced(const char* where, const tensor_view<const T>& x, const tensor_view<const T>& dz,
                               const T* mean, const T* invstd, const T* scale, const T* beta, const tensor_view<T>& dx,
                               T* dgamma, T* dbeta, double* sums, SumsSync& sync) {
  using batch = xsimd::batch<T, Arch>;
  const index_t images = x.n(), channels = x.c();
  const double local = double(images) * double(x.plane());
  const index_t group = backward_group_channels(images, x.plane(), channels, index_t(sizeof(T)));
  const index_t groups = (channels + group - 1) / group;
  const bn_backward_planes<Activation, Arch, T> planes{x, dz, mean, scale, beta};
  parallel_for(groups, [&](index_t g) {
    const index_t c0 = g * group, c1 = c0 + group < channels ? c0 + group : channels;
    std::array<double, 2> s[backward_group_max];
    planes.reduce_group(c0, c1, s);
    for (index_t c = c0; c < c1; ++c) sums[2 * c] = s[c - c0][0], sums[2 * c + 1] = s[c - c0][1];
  });
  sums[2 * channels] = local;
  for (index_t c = 0; c < channels; ++c) {
    if (dbeta) dbeta[c] = T(sums[2 * c]);
    if (dgamma) dgamma[c] = T(sums[2 * c + 1] * double(invstd[c]));
  }
  sync(vector_view<double>(sums, bn_backward_sums_size(channels)));
  const double m = sums[2 * channels];
  check_sums_count(where, m, local);
  parallel_for(groups, [&](index_t g) {
    const index_t c0 = g * group, c1 = c0 + group < channels ? c0 + group : channels;
    batch k0[backward_group_max], k1[backward_group_max];
    // Coefficients from the synchronized sums (dgamma and dbeta keep this rank's share).
    for (index_t c = c0; c < c1; ++c)
      backward_coefficients(sums[2 * c], sums[2 * c + 1], m, invstd[c], scale[c], static_cast<T*>(nullptr),
                            static_cast<T*>(nullptr), k0[c - c0], k1[c - c0]);
    planes.template dx_group<GradMode, Store>(dx, c0, c1, k0, k1);
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
// writes dx, grad_accumulate adds to it. Channels go in groups whose x and dz fit
// in cache (backward_group_bytes), so main memory sees x and dz once when one
// channel's planes, 2 * N * H * W elements, fit there.
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
