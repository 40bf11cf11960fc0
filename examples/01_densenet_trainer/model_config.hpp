// The DenseNet-BC architecture a run trains, and the presets the command line offers.
#pragma once

#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include <bnff/config.hpp>

namespace trainer {

// A problem with what the user asked for (flags, presets, data): reported as a usage error.
class usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// DenseNet-BC (Huang et al. 2017): a 3x3 stem convolution, dense blocks of
// composite layers BN-ReLU-conv1x1(bottleneck) -> BN-ReLU-conv3x3(growth), each
// appending `growth` channels to its block's concatenation, transitions
// BN-ReLU-conv1x1(compression) + 2x2 average pooling between blocks, then
// BN-ReLU, global average pooling and a fully connected classifier.
struct model_config {
  bnff::index_t image_size = 32;               // square input images
  bnff::index_t in_channels = 3;               // RGB
  bnff::index_t classes = 10;                  // classifier outputs
  bnff::index_t stem_channels = 0;             // 0: twice the growth rate, as DenseNet-BC does
  std::vector<bnff::index_t> blocks{4, 4, 4};  // composite layers per dense block
  bnff::index_t growth = 12;                   // channels each composite layer adds (k)
  bnff::index_t bottleneck_factor = 4;         // conv1x1 width = factor * growth (the "B" in BC)
  double compression = 0.5;                    // transition keeps floor(compression * channels) (the "C" in BC)
  // ImageNet stem (DenseNet-121): conv7x7 stride 2, BN-ReLU, 3x3 max pooling stride 2 (the
  // blocks start at a quarter of the image extent); otherwise one conv3x3 stride 1.
  bool imagenet_stem = false;

  // The extent the first dense block sees.
  bnff::index_t block_extent() const noexcept {
    if (!imagenet_stem) return image_size;
    const bnff::index_t conv = (image_size + 2 * 3 - 7) / 2 + 1;
    return (conv + 2 * 1 - 3) / 2 + 1;
  }

  bnff::index_t stem() const noexcept { return stem_channels > 0 ? stem_channels : 2 * growth; }
  bnff::index_t bottleneck() const noexcept { return bottleneck_factor * growth; }

  // Every field that shapes the network, in one canonical line (checkpoint fingerprints use it).
  std::string canonical() const {
    std::string b;
    for (std::size_t i = 0; i < blocks.size(); ++i) b += (i ? "," : "") + std::to_string(blocks[i]);
    char comp[40];
    std::snprintf(comp, sizeof comp, "%.17g", compression);
    return "densenet-bc image=" + std::to_string(image_size) + " in=" + std::to_string(in_channels) +
           " classes=" + std::to_string(classes) + " stem=" + std::to_string(stem()) + " blocks=" + b +
           " growth=" + std::to_string(growth) + " bottleneck=" + std::to_string(bottleneck()) +
           " compression=" + comp + (imagenet_stem ? " stem=imagenet" : "");
  }

  // Throws usage_error naming the first field out of range.
  void validate() const {
    auto fail = [](const std::string& what) { throw usage_error("model: " + what); };
    if (blocks.empty()) fail("--blocks needs at least one dense block");
    if (blocks.size() > 8) fail("--blocks allows at most 8 dense blocks, got " + std::to_string(blocks.size()));
    for (auto l : blocks)
      if (l < 1 || l > 128) fail("--blocks: each block needs 1..128 layers, got " + std::to_string(l));
    if (growth < 1 || growth > 1024) fail("--growth must be in 1..1024, got " + std::to_string(growth));
    if (!(compression > 0.0 && compression <= 1.0))
      fail("--compression must be in (0, 1], got " + std::to_string(compression));
    if (image_size < 1 || image_size > 1024) fail("--image-size must be in 1..1024, got " + std::to_string(image_size));
    // Each transition halves the extent (floor, as 2x2 average pooling with stride 2 does).
    if (imagenet_stem && image_size < 8)
      fail("--image-size must be >= 8 with the ImageNet stem, got " + std::to_string(image_size));
    const bnff::index_t last = block_extent() >> (blocks.size() - 1);
    if (last < 1)
      fail("--image-size " + std::to_string(image_size) + " is too small for " + std::to_string(blocks.size()) +
           " dense blocks: each transition halves it (need >= " + std::to_string(1 << (blocks.size() - 1)) + ")");
    bnff::index_t c = stem();
    for (std::size_t b = 0; b < blocks.size(); ++b) {
      c += blocks[b] * growth;
      if (b + 1 < blocks.size()) {
        c = transition_channels(c);
        if (c < 1) fail("--compression " + std::to_string(compression) + " leaves a transition with no channels");
      }
    }
  }

  bnff::index_t transition_channels(bnff::index_t c_in) const noexcept {
    return bnff::index_t(compression * double(c_in));
  }
};

// The settings a preset chooses besides the model.
struct preset {
  const char* name;
  const char* summary;
  model_config model;
  bnff::index_t batch;
  int epochs;
  long long train_images, val_images;
};

inline std::vector<preset> presets() {
  model_config small;  // the defaults above: 3 blocks of 4 layers, growth 12, 32x32
  model_config d121;   // DenseNet-121 (Huang et al.): ImageNet stem, blocks 6-12-24-16, growth 32, 1000 classes
  d121.image_size = 224;
  d121.stem_channels = 64;
  d121.blocks = {6, 12, 24, 16};
  d121.growth = 32;
  d121.classes = 1000;
  d121.imagenet_stem = true;
  model_config block1;
  block1.image_size = 56;
  block1.stem_channels = 64;
  block1.blocks = {6};
  block1.growth = 32;  // bottleneck 4 x 32 = 128
  return {
      {"cifar-small", "small CIFAR-size DenseNet-BC: 32x32, 3 blocks of 4 layers, growth 12, compression 0.5", small,
       32, 3, 3000, 1000},
      {"densenet121-block1",
       "DenseNet-121's first dense block at 56x56: 64 channels in, 6 layers, growth 32, bottleneck 128 (for timing)",
       block1, 16, 1, 2000, 400},
      {"densenet121", "DenseNet-121 at 224x224: 7x7/2 stem + max pool, blocks 6-12-24-16, growth 32 (for timing)", d121,
       4, 1, 64, 16},
  };
}

inline const preset* find_preset(const std::string& name) {
  static const std::vector<preset> all = presets();
  for (const auto& p : all)
    if (name == p.name) return &p;
  return nullptr;
}

}  // namespace trainer
