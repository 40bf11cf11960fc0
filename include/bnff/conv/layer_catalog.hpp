// bnff: the real layer shapes that tests, benchmarks and examples share.
// DenseNet-121 (Huang et al.; growth 32, bottleneck 4 x growth, compression 0.5)
// and ResNet-50 (He et al.) at a given batch size.
#pragma once

#include <string>
#include <vector>

#include "bnff/conv/conv2d_problem.hpp"

namespace bnff::catalog {

// A DenseNet-BC composite layer: BN-ReLU-conv1x1(c_in -> bottleneck), BN-ReLU-conv3x3(bottleneck -> growth).
struct composite_layer {
  std::string name;  // "densenet121.b<block>.l<layer>", 1-based
  index_t n, c_in, h, w, bottleneck, growth;
  conv2d_problem conv1() const { return {n, c_in, h, w, bottleneck, 1, 1, 0, 1}; }
  conv2d_problem conv2() const { return {n, bottleneck, h, w, growth, 3, 3, 1, 1}; }
};

// A DenseNet transition layer: BN-ReLU-conv1x1(c_in -> c_out), then 2x2 average pooling.
struct transition_layer {
  std::string name;  // "densenet121.t<i>"
  index_t n, c_in, h, w, c_out;
  conv2d_problem conv() const { return {n, c_in, h, w, c_out, 1, 1, 0, 1}; }
};

// A ResNet-50 bottleneck (not the first of its stage): conv1x1(c -> mid)-BN-ReLU,
// conv3x3(mid -> mid)-BN-ReLU, conv1x1(mid -> c)-BN, + identity, ReLU.
struct bottleneck_block {
  std::string name;  // "resnet50.conv<2..5>_x"
  index_t n, c, h, w, mid;
  conv2d_problem conv1() const { return {n, c, h, w, mid, 1, 1, 0, 1}; }
  conv2d_problem conv2() const { return {n, mid, h, w, mid, 3, 3, 1, 1}; }
  conv2d_problem conv3() const { return {n, mid, h, w, c, 1, 1, 0, 1}; }
};

// Every composite layer of DenseNet-121's four dense blocks (6, 12, 24, 16 layers).
inline std::vector<composite_layer> densenet121_composite_layers(index_t batch = 16) {
  const index_t layers[4] = {6, 12, 24, 16}, extent[4] = {56, 28, 14, 7};
  std::vector<composite_layer> out;
  index_t c = 64;  // channels entering block 1 (after the stem)
  for (int b = 0; b < 4; ++b) {
    for (index_t l = 0; l < layers[b]; ++l)
      out.push_back({"densenet121.b" + std::to_string(b + 1) + ".l" + std::to_string(l + 1), batch, c + 32 * l,
                     extent[b], extent[b], 128, 32});
    c = (c + 32 * layers[b]) / 2;  // transition with compression 0.5
  }
  return out;
}

// DenseNet-121's three transition layers.
inline std::vector<transition_layer> densenet121_transitions(index_t batch = 16) {
  return {{"densenet121.t1", batch, 256, 56, 56, 128},
          {"densenet121.t2", batch, 512, 28, 28, 256},
          {"densenet121.t3", batch, 1024, 14, 14, 512}};
}

// One (identity-shortcut) bottleneck per ResNet-50 stage.
inline std::vector<bottleneck_block> resnet50_bottlenecks(index_t batch = 16) {
  return {{"resnet50.conv2_x", batch, 256, 56, 56, 64},
          {"resnet50.conv3_x", batch, 512, 28, 28, 128},
          {"resnet50.conv4_x", batch, 1024, 14, 14, 256},
          {"resnet50.conv5_x", batch, 2048, 7, 7, 512}};
}

}  // namespace bnff::catalog
