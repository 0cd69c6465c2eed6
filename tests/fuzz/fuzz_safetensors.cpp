// libFuzzer target: safetensors bytes → parse_safetensors; anything but a CheckpointError is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "lathe/ckpt/safetensors.h"
#include "lathe/core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    lathe::ckpt::parse_safetensors({reinterpret_cast<const char*>(data), size}, "fuzz.safetensors");
  } catch (const lathe::CheckpointError&) {
  }
  return 0;
}
