// The smallest integration: views over a framework's own buffers.
#include <bnff/bnff.hpp>

#include <cstdio>
#include <cstring>
#include <vector>

int main(int argc, char** argv) {
  if (argc > 1 && (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h"))) {
    std::puts("usage: bnff_quickstart\nViews a DenseNet concatenation buffer as channel slices.");
    return 0;
  }
  // A DenseNet block's concatenation: 64 input channels + 4 layers x 32 = 192 channels.
  const bnff::index_t n = 2, c = 192, h = 8, w = 8;
  std::vector<float> concat_buffer(std::size_t(n * c * h * w), 0.0f);
  bnff::tensor_view<float> concat(concat_buffer.data(), n, c, h, w);
  for (int layer = 0; layer < 4; ++layer) {
    auto out = concat.channels(64 + 32 * layer, 32);  // where layer `layer` writes, no copies
    std::printf("layer %d writes channels [%d, %d), batch stride %td\n", layer, 64 + 32 * layer, 64 + 32 * (layer + 1),
                out.strides().n);
  }
  std::printf("bnff %d.%d.%d, %d thread(s)\n", bnff::version().major, bnff::version().minor, bnff::version().patch,
              bnff::max_threads());
  return 0;
}
