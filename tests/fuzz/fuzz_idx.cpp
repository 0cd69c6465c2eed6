// libFuzzer target: bytes written to a file (plain, or gzip when they start 1F 8B) → read_idx;
// anything but a DataError is a bug, and so is an allocation the file cannot justify.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

#include "lathe/core/error.h"
#include "lathe/data/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string file = "/tmp/lathe-fuzz-idx-" + std::to_string(::getpid());
  {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    const at::Tensor t = lathe::data::read_idx(file);
    (void)t;
  } catch (const lathe::DataError&) {
  }
  return 0;
}
