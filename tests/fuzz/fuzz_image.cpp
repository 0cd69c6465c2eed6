// libFuzzer target: JPEG / PNG bytes → decode_image under a 4-megapixel limit (RGB and grey, full
// and reduced scale); anything but a DataError is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "lathe/core/error.h"
#include "lathe/data/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const int channels = size % 2 == 0 ? 3 : 1;
  const int min_side = size % 3 == 0 ? 16 : 0;
  try {
    lathe::data::decode_image(bytes, "fuzz.img", channels, min_side, int64_t{1} << 22);
  } catch (const lathe::DataError&) {
  }
  return 0;
}
