// The two implementations of the model's conv and BN units, by name.
#pragma once

#include <memory>

#include "cli.hpp"
#include "fused_engine.hpp"
#include "unfused_engine.hpp"

namespace trainer {

inline std::unique_ptr<conv_bn_engine> make_engine(impl_kind k) {
  if (k == impl_kind::fused) return std::make_unique<fused_engine>();
  return std::make_unique<unfused_engine>();
}

}  // namespace trainer
