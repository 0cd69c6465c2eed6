// DataInfo: the input shape, output count and one-line description of a run's data.
#include "lathe/config/data_info.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace lathe::config {

std::vector<int64_t> DataInfo::input_shape() const {
  if (channels > 0 && side > 0) return {channels, side, side};
  if (num_features > 0) return {num_features};
  if (seq_len > 0) return {seq_len};
  return {};
}

int64_t DataInfo::num_outputs() const {
  if (task == "classification") return static_cast<int64_t>(classes.size());
  if (task == "regression") return 1;
  if (task == "lm") return vocab_size;
  return 0;
}

std::string DataInfo::classes_text() const {
  constexpr size_t kShown = 8;
  std::vector<std::string> shown(
      classes.begin(), classes.begin() + static_cast<long>(std::min(kShown, classes.size())));
  if (classes.size() > kShown) shown.push_back("...");
  return fmt::format("{} class{} ({})", classes.size(), classes.size() == 1 ? "" : "es",
                     fmt::join(shown, ", "));
}

std::string DataInfo::describe() const {
  std::string out = task;
  if (channels > 0) out += fmt::format(", images {}x{}x{}", channels, side, side);
  if (num_features > 0) out += fmt::format(", {} features", num_features);
  if (vocab_size > 0) out += fmt::format(", vocabulary {}", vocab_size);
  if (!tokenizer.empty()) out += fmt::format(" ({})", tokenizer);
  if (seq_len > 0) out += fmt::format(", {} tokens per record", seq_len);
  if (!classes.empty()) out += ", " + classes_text();
  return out;
}

}  // namespace lathe::config
