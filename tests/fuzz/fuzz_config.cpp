// libFuzzer target: YAML text → parse_config (and once more with an override); anything but a
// ConfigError (a yaml-cpp exception, std::out_of_range, a crash) is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "lathe/config/config.h"
#include "lathe/core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view yaml(reinterpret_cast<const char*>(data), size);
  try {
    const auto cfg = lathe::config::parse_config(yaml, "fuzz.yaml");
    lathe::config::parse_config(lathe::config::to_yaml(cfg), "resolved.yaml");
  } catch (const lathe::ConfigError&) {
  }
  return 0;
}
