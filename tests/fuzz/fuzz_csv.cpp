// libFuzzer target: CSV text → parse_csv (strict, and skipping bad rows), then the first column's
// task inference; anything but a lathe::Error is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "lathe/core/error.h"
#include "lathe/data/csv.h"
#include "lathe/data/tabular.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  lathe::data::CsvOptions options;
  options.skip_bad_rows = size % 2 == 1;
  try {
    const lathe::data::CsvTable t = lathe::data::parse_csv(text, "fuzz.csv", options);
    if (!t.columns.empty() && t.num_rows() > 0) {
      lathe::data::infer_task(t, t.columns.front());
      lathe::data::target_strata(t, t.columns.back());
    }
  } catch (const lathe::Error&) {
  }
  return 0;
}
