// Uses the public API the way a framework would, on its own buffers.
#include <bnff/bnff.hpp>

#include <cstdio>
#include <vector>

int main() {
  std::vector<float> buffer(2 * 8 * 4 * 4, 1.0f);
  bnff::tensor_view<float> concat(buffer.data(), 2, 8, 4, 4);
  bnff::tensor_view<const float> slice = concat.channels(4, 4);
  if (slice.strides().n != 8 * 16 || slice.c() != 4) return 1;
  try {
    (void)concat.channels(6, 4);
    return 1;
  } catch (const bnff::error&) {
  }
  std::printf("bnff %d.%d.%d consumer ok\n", bnff::version().major, bnff::version().minor, bnff::version().patch);
  return 0;
}
