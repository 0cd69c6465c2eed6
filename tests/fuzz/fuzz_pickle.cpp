// libFuzzer target: a data.pkl → unpickle_state_dict, every storage record 64 zero bytes; anything
// but a CheckpointError (a crash, a leak, another exception) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "lathe/ckpt/torch_pickle.h"
#include "lathe/core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lathe::ckpt::PickleRecords records;
  records.has = [](const std::string& name) { return name.size() < 12; };  // data/<short key>
  records.size = [](const std::string&) { return size_t{64}; };
  records.read = [](const std::string&, void* dst, size_t n) { std::memset(dst, 0, n); };
  try {
    lathe::ckpt::unpickle_state_dict({reinterpret_cast<const char*>(data), size}, records,
                                     "fuzz.pt", size > 0 && data[0] == 0x80 && size % 2 == 0);
  } catch (const lathe::CheckpointError&) {
  }
  return 0;
}
