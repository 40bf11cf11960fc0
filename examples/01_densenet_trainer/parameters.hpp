// Trainable parameters (value, gradient, momentum buffer) and their initialization,
// and the non-trained state the network carries (BN running statistics).
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <bnff/config.hpp>

#include "random.hpp"

namespace trainer {

struct parameter {
  std::string name;  // unique within a model; checkpoints key tensors by it
  std::vector<float> value, grad, momentum;
  bool decay = true;  // weight decay applies (conv and FC weights; not BN affine or biases)

  parameter() = default;
  parameter(std::string n, bnff::index_t size, bool weight_decay)
      : name(std::move(n)),
        value(std::size_t(size), 0.0f),
        grad(std::size_t(size), 0.0f),
        momentum(std::size_t(size), 0.0f),
        decay(weight_decay) {}
  bnff::index_t size() const noexcept { return bnff::index_t(value.size()); }
};

// Non-trained tensors a checkpoint must keep (running mean and variance).
struct state_tensor {
  std::string name;
  std::vector<float> value;
};

// He (Kaiming) normal initialization, fan-in mode: std = sqrt(2 / fan_in), the
// variance that keeps activations at scale through ReLU layers. Each tensor draws
// from its own stream of (seed, tag), so adding a layer does not shift the others.
inline void he_normal(parameter& p, bnff::index_t fan_in, std::uint64_t seed, std::uint64_t tag) {
  std::mt19937_64 gen(mix_seed(seed, tag));
  const double stddev = std::sqrt(2.0 / double(fan_in));
  for (auto& v : p.value) v = float(stddev * standard_normal(gen));
}

inline void fill(std::vector<float>& v, float x) {
  for (auto& e : v) e = x;
}

// A stable tag for a tensor's random stream, from its name (FNV-1a 64).
inline std::uint64_t name_tag(const std::string& name) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : name) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}

}  // namespace trainer
