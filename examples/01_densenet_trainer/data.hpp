// Image data sets in memory (NCHW float), the generated default set, per-channel
// normalization and the reproducible batch order.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <bnff/parallel/parallel.hpp>
#include <bnff/tensor/tensor_view.hpp>

#include "model_config.hpp"
#include "random.hpp"

namespace trainer {

// Labelled images, packed NCHW.
struct dataset {
  bnff::index_t count = 0, channels = 3, height = 0, width = 0;
  std::vector<float> images;
  std::vector<std::int32_t> labels;

  bnff::index_t image_elements() const noexcept { return channels * height * width; }
  const float* image(bnff::index_t i) const noexcept { return images.data() + i * image_elements(); }
  void resize(bnff::index_t n, bnff::index_t c, bnff::index_t h, bnff::index_t w) {
    count = n, channels = c, height = h, width = w;
    images.assign(std::size_t(n * c * h * w), 0.0f);
    labels.assign(std::size_t(n), 0);
  }
};

// The generated 10-class set. Each class is a kind of pattern, drawn with random
// colours, position, size, phase and noise, so no single pixel or colour gives
// the class away and a classifier must learn shapes and orientations:
//   0-3 gratings at 0, 90, 45 and 135 degrees (random frequency and phase),
//   4 disc, 5 ring, 6 square, 7 plus sign, 8 checkerboard, 9 triangle.
namespace synthetic {

constexpr int classes = 10;

inline double smoothstep_edge(double distance, double softness) {
  // Coverage of a point `distance` inside (+) or outside (-) an edge, softened over `softness`.
  const double t = std::clamp(0.5 + distance / softness, 0.0, 1.0);
  return t * t * (3 - 2 * t);
}

// Writes one image of class `label` (channels x size x size, values near [0, 1]).
inline void draw(int label, bnff::index_t size, std::uint64_t stream, float* out) {
  std::mt19937_64 gen(stream);
  // Foreground and background colours with enough luminance contrast to see the pattern.
  std::array<double, 3> fg{}, bg{};
  for (int attempt = 0;; ++attempt) {
    for (auto& v : fg) v = uniform01(gen);
    for (auto& v : bg) v = uniform01(gen);
    const double lf = 0.3 * fg[0] + 0.59 * fg[1] + 0.11 * fg[2], lb = 0.3 * bg[0] + 0.59 * bg[1] + 0.11 * bg[2];
    if (std::abs(lf - lb) >= 0.25 || attempt == 64) break;
  }
  const double cx = uniform(gen, -0.25, 0.25), cy = uniform(gen, -0.25, 0.25);  // position jitter
  const double radius = uniform(gen, 0.35, 0.6);                                // size jitter
  const double cycles = uniform(gen, 1.5, 4.0);                                 // grating frequency
  const double phase = uniform(gen, 0.0, 6.283185307179586);
  const double tilt = uniform(gen, -0.15, 0.15);  // +-8.6 degrees around the class orientation
  const double noise = 0.08;
  const double px = 2.0 / double(size);  // one pixel in the [-1, 1] frame: edge softness
  const double pi = 3.141592653589793;

  for (bnff::index_t i = 0; i < size; ++i)
    for (bnff::index_t j = 0; j < size; ++j) {
      const double v = (double(i) + 0.5) * px - 1.0, u = (double(j) + 0.5) * px - 1.0;  // v down, u right
      const double du = u - cx, dv = v - cy;
      double m = 0;  // foreground coverage in [0, 1]
      if (label < 4) {
        const double angle = (label == 0 ? 0.0 : label == 1 ? pi / 2 : label == 2 ? pi / 4 : 3 * pi / 4) + tilt;
        const double along = -u * std::sin(angle) + v * std::cos(angle);  // across the stripes
        m = 0.5 + 0.5 * std::sin(pi * cycles * along + phase);
      } else if (label == 4) {
        m = smoothstep_edge(radius - std::hypot(du, dv), px);
      } else if (label == 5) {
        const double t = 0.3 * radius;
        m = smoothstep_edge(t / 2 - std::abs(std::hypot(du, dv) - 0.8 * radius), px);
      } else if (label == 6) {
        m = smoothstep_edge(0.85 * radius - std::max(std::abs(du), std::abs(dv)), px);
      } else if (label == 7) {
        const double t = 0.3 * radius;
        const double bar1 = std::min(t - std::abs(du), radius - std::abs(dv));
        const double bar2 = std::min(t - std::abs(dv), radius - std::abs(du));
        m = smoothstep_edge(std::max(bar1, bar2), px);
      } else if (label == 8) {
        const double f = pi * cycles;
        m = std::sin(f * u + phase) * std::sin(f * v + 0.5 * phase) > 0 ? 1.0 : 0.0;
      } else {
        // Upward equilateral triangle, apex at dv = -radius, base at dv = radius / 2:
        // the smallest signed distance to its three edges (inradius radius / 2).
        const double base = radius / 2 - dv;
        const double left = 0.5 * (dv + radius) + 0.8660254037844386 * du;
        const double right = 0.5 * (dv + radius) - 0.8660254037844386 * du;
        m = smoothstep_edge(std::min(base, std::min(left, right)), px);
      }
      for (int c = 0; c < 3; ++c) {
        const double value = bg[c] + (fg[c] - bg[c]) * m + noise * standard_normal(gen);
        out[(c * size + i) * size + j] = float(value);
      }
    }
}

// `count` images of `size` x `size`, classes in turn (balanced to within one),
// image i drawn from its own stream of (seed, split, i): a split is the same
// whatever its length, and train (split 0) and validation (split 1) differ.
inline dataset make(bnff::index_t count, bnff::index_t size, std::uint64_t seed, int split) {
  dataset d;
  d.resize(count, 3, size, size);
  const std::uint64_t split_seed = mix_seed(seed, 0x5157ull + std::uint64_t(split));
  bnff::parallel_for(count, [&](bnff::index_t i) {
    const int label = int(i % classes);
    d.labels[std::size_t(i)] = label;
    draw(label, size, mix_seed(split_seed, std::uint64_t(i)), d.images.data() + i * d.image_elements());
  });
  return d;
}

}  // namespace synthetic

// Per-channel affine normalization x' = (x - mean[c]) / std[c], with the
// statistics of the training split applied to every split.
struct channel_normalization {
  std::vector<double> mean, stddev;

  static channel_normalization of(const dataset& d) {
    channel_normalization n{std::vector<double>(std::size_t(d.channels), 0.0),
                            std::vector<double>(std::size_t(d.channels), 1.0)};
    const bnff::index_t plane = d.height * d.width;
    const double m = double(d.count) * double(plane);
    for (bnff::index_t c = 0; c < d.channels; ++c) {
      double sum = 0;  // two passes in double: exact enough for any data set size here
      for (bnff::index_t i = 0; i < d.count; ++i)
        for (bnff::index_t p = 0; p < plane; ++p) sum += d.image(i)[c * plane + p];
      const double mean = sum / m;
      double m2 = 0;
      for (bnff::index_t i = 0; i < d.count; ++i)
        for (bnff::index_t p = 0; p < plane; ++p) {
          const double e = d.image(i)[c * plane + p] - mean;
          m2 += e * e;
        }
      n.mean[std::size_t(c)] = mean;
      n.stddev[std::size_t(c)] = m2 > 0 ? std::sqrt(m2 / m) : 1.0;  // a constant channel stays as is
    }
    return n;
  }

  void apply(dataset& d) const {
    const bnff::index_t plane = d.height * d.width;
    for (bnff::index_t i = 0; i < d.count; ++i)
      for (bnff::index_t c = 0; c < d.channels; ++c) {
        float* p = d.images.data() + i * d.image_elements() + c * plane;
        const float mu = float(mean[std::size_t(c)]), inv = float(1.0 / stddev[std::size_t(c)]);
        for (bnff::index_t k = 0; k < plane; ++k) p[k] = (p[k] - mu) * inv;
      }
  }
};

// The order of training images in epoch `epoch`: a permutation from (seed, epoch)
// alone, so a resumed run recomputes it from the step counter.
inline std::vector<bnff::index_t> epoch_order(bnff::index_t count, std::uint64_t seed, std::uint64_t epoch) {
  std::mt19937_64 gen(mix_seed(mix_seed(seed, 0x0bde5ull), epoch));
  return permutation(count, gen);
}

// Copies images order[first .. first + batch) into a packed batch and their labels.
inline void gather_batch(const dataset& d, const std::vector<bnff::index_t>& order, bnff::index_t first,
                         bnff::index_t batch, float* images, std::int32_t* labels) {
  const bnff::index_t e = d.image_elements();
  for (bnff::index_t b = 0; b < batch; ++b) {
    const bnff::index_t src = order[std::size_t(first + b)];
    std::copy(d.image(src), d.image(src) + e, images + b * e);
    labels[b] = d.labels[std::size_t(src)];
  }
}

}  // namespace trainer
