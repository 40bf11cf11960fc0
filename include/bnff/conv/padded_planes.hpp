// bnff: im2col from zero-padded copies of the input planes, for small planes.
//
// On a 7 x 7 or 14 x 14 plane an im2col row of one image is 49 or 196 elements, and
// building it straight from the input (im2col_packer) spends more time on the edges
// (which taps fall in the padding, one short fill per output row) than on copying, and
// runs the prologue R * S times per element. Here each channel's plane is first copied
// once through the prologue into a (H + 2 pad) x (W + 2 pad) plane with zero borders;
// then output row p of im2col row (c, r, s) is Q elements of padded row p * stride + r
// from column s (every stride-th element): one masked copy per output row at stride 1,
// with no edge cases. The values are the prologue's, so B has the same bits as before.
#pragma once

#include <algorithm>
#include <xsimd/xsimd.hpp>

#include "bnff/config.hpp"
#include "bnff/conv/conv2d_problem.hpp"
#include "bnff/simd/load_partial.hpp"
#include "bnff/simd/store_partial.hpp"
#include "bnff/tensor/tensor_view.hpp"

namespace bnff::detail {

// dst[0, len) = src[0, len): whole batches, then one masked batch.
template <class Arch, class T>
BNFF_ALWAYS_INLINE void copy_run(const T* BNFF_RESTRICT src, T* BNFF_RESTRICT dst, index_t len) noexcept {
  using batch = xsimd::batch<T, Arch>;
  constexpr index_t width = index_t(batch::size);
  index_t i = 0;
  for (; i + width <= len; i += width) batch::load_unaligned(src + i).store_unaligned(dst + i);
  if (i < len) simd::store_partial<T, Arch>(dst + i, simd::load_partial<Arch>(src + i, len - i, T(0)), len - i);
}

// dst[0, len) = 0 without a library call (the runs here are a few elements long).
template <class Arch, class T>
BNFF_ALWAYS_INLINE void zero_run(T* dst, index_t len) noexcept {
  using batch = xsimd::batch<T, Arch>;
  constexpr index_t width = index_t(batch::size);
  const batch zero(T(0));
  index_t i = 0;
  for (; i + width <= len; i += width) zero.store_unaligned(dst + i);
  if (i < len) simd::store_partial<T, Arch>(dst + i, zero, len - i);
}

// Padded rows [t0, t0 + rows) of channel c, row t at dst[(t - t0) * wp]:
// dst[(t - t0) * wp + v] = a(x_c[t - pad, v - pad]), zero where that is padding.
template <class Arch, class T, class Prologue>
void pad_channel_rows(const conv2d_problem& pb, index_t c, const T* xc, index_t ldh, const Prologue& prologue,
                      index_t t0, index_t rows, T* dst) {
  const index_t wp = pb.w + 2 * pb.pad;
  for (index_t t = t0; t < t0 + rows; ++t, dst += wp) {
    const index_t ih = t - pb.pad;
    if (ih < 0 || ih >= pb.h) {
      zero_run<Arch>(dst, wp);
      continue;
    }
    zero_run<Arch>(dst, pb.pad);
    prologue.template transform<Arch>(c, xc + ih * ldh, dst + pb.pad, pb.w);
    zero_run<Arch>(dst + pb.pad + pb.w, pb.pad);
  }
}

// Elements of one padded plane.
inline index_t padded_plane_size(const conv2d_problem& pb) noexcept {
  return (pb.h + 2 * pb.pad) * (pb.w + 2 * pb.pad);
}

// im2col row (c, r, s) over `len` output positions of one image from output (p0, q0) on,
// into dst[0, len), from channel c's padded plane pc (all of it, or at least the rows read).
template <class Arch, class T>
BNFF_ALWAYS_INLINE void pack_padded_row(const conv2d_problem& pb, const T* pc, index_t r, index_t s, index_t p0,
                                        index_t q0, index_t len, T* dst) {
  const index_t q_extent = pb.q(), wp = pb.w + 2 * pb.pad, stride = pb.stride;
  const T* src = pc + (p0 * stride + r) * wp + s;
  for (index_t j = 0, q = q0; j < len; src += stride * wp, q = 0) {
    const index_t run = std::min(len - j, q_extent - q);
    if (stride == 1)
      copy_run<Arch>(src + q, dst + j, run);
    else
      for (index_t i = 0; i < run; ++i) dst[j + i] = src[(q + i) * stride];
    j += run;
  }
}

// Scratch of padded_group_packer for depth blocks of at most kc rows: the channels such a
// block can touch, kc / (R * S) + 2 (it may start and end inside a channel's R * S rows),
// for each image.
inline index_t padded_group_scratch_size(const conv2d_problem& pb, index_t images, index_t kc) noexcept {
  return images * (kc / (pb.r * pb.s) + 2) * padded_plane_size(pb);
}

// B for several images side by side (columns [i * plane, (i + 1) * plane) are image
// n0 + i's), from padded planes: pack(k0, kcount) pads the channels its rows use (each
// once per depth block) into `scratch`, then copies runs.
template <class T, class Arch, class Prologue>
struct padded_group_packer {
  const tensor_view<const T>& x;
  const conv2d_problem& pb;
  index_t n0, images, plane;
  const Prologue& prologue;
  T* scratch;  // padded_group_scratch_size(pb, images, kc) elements

  void pack(index_t k0, index_t kcount, T* bp, index_t ldb) const {
    const index_t rs = pb.r * pb.s, hp = pb.h + 2 * pb.pad, pp = padded_plane_size(pb);
    const index_t c_lo = k0 / rs, c_hi = (k0 + kcount - 1) / rs, nch = c_hi - c_lo + 1;
    for (index_t i = 0; i < images; ++i)
      for (index_t c = c_lo; c <= c_hi; ++c)
        pad_channel_rows<Arch>(pb, c, x.plane_ptr(n0 + i, c), x.strides().h, prologue, 0, hp,
                               scratch + (i * nch + c - c_lo) * pp);
    for (index_t k = 0; k < kcount; ++k) {
      const index_t kk = k0 + k, c = kk / rs, r = (kk % rs) / pb.s, s = kk % pb.s;
      for (index_t i = 0; i < images; ++i)
        pack_padded_row<Arch>(pb, scratch + (i * nch + c - c_lo) * pp, r, s, 0, 0, plane, bp + k * ldb + i * plane);
    }
  }
};

}  // namespace bnff::detail
