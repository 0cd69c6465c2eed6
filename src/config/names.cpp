// The tables of named config choices (sources, task kinds and losses, augmentations).
#include "lathe/config/names.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdlib>

#include "lathe/config/params.h"
#include "lathe/core/error.h"

namespace lathe::config {
namespace {

template <class Spec>
std::vector<std::string> names_of(const std::vector<Spec>& specs) {
  std::vector<std::string> out;
  for (const auto& s : specs) out.emplace_back(s.name);
  return out;
}

std::string prefix(const std::string& where) { return where.empty() ? "" : where + ": "; }

std::string unknown(const std::string& where, const char* key, const std::string& name,
                    const std::vector<std::string>& known) {
  const std::string hint = closest_key(name, known);
  return fmt::format("{}{} = '{}' must be one of {}{}", prefix(where), key, name,
                     fmt::join(known, ", "),
                     hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint));
}

}  // namespace

const std::vector<std::string_view>& common_data_keys() {
  static const std::vector<std::string_view> keys = {
      "source",          "path",        "val_fraction", "batch_size",
      "eval_batch_size", "limit_train", "limit_test",   "num_workers"};
  return keys;
}

const std::vector<SourceSpec>& sources() {
  static const std::vector<SourceSpec> specs = {
      {"idx",
       SourceKind::idx,
       "the MNIST layout's IDX files (train-*, t10k-*)",
       {"classes", "mean", "std", "image_size", "augment"},
       "classification"},
      {"csv",
       SourceKind::csv,
       "a CSV table with a target column",
       {"test_path", "test_fraction", "skip_bad_records", "target", "task", "impute", "outliers",
        "scale", "encode", "columns"},
       ""},
      {"image_folder",
       SourceKind::image_folder,
       "one folder of JPEG / PNG images per class",
       {"test_fraction", "skip_bad_records", "mean", "std", "image_size", "max_image_pixels",
        "augment"},
       "classification"},
      {"text",
       SourceKind::text,
       "a text corpus in seq_len windows of bytes or of a tokenizer's ids (language models)",
       {"test_fraction", "seq_len", "tokenizer"},
       "lm"},
      {"text_csv",
       SourceKind::text_csv,
       "CSV rows of text and label, WordPiece-tokenized",
       {"test_path", "test_fraction", "skip_bad_records", "target", "task", "vocab", "max_length",
        "text_column", "invalid_utf8"},
       "classification"},
  };
  return specs;
}

const SourceSpec& source_spec(const std::string& name, const std::string& where) {
  for (const auto& s : sources())
    if (s.name == name) return s;
  throw ConfigError(unknown(where, "data.source", name, names_of(sources())));
}

const std::vector<TaskSpec>& tasks() {
  static const std::vector<TaskSpec> specs = {
      {"classification",
       TaskKind::classification,
       "class ids from logits (B, K)",
       {{"cross_entropy", Loss::cross_entropy}},
       "val/accuracy"},
      {"regression",
       TaskKind::regression,
       "values from outputs shaped like the targets",
       {{"mse", Loss::mse}, {"l1", Loss::l1}, {"huber", Loss::huber}},
       "val/loss"},
      {"lm",
       TaskKind::lm,
       "next-token ids from logits (B, T, V)",
       {{"cross_entropy", Loss::cross_entropy}},
       "val/loss"},
  };
  return specs;
}

const TaskSpec& task_spec(const std::string& name, const std::string& where) {
  for (const auto& t : tasks())
    if (t.name == name) return t;
  if (name == "auto")
    throw ConfigError(fmt::format(
        "{}task.kind is auto: a run resolves it from its data; a Task built by hand needs one of "
        "{}",
        prefix(where), fmt::join(names_of(tasks()), ", ")));
  throw ConfigError(unknown(where, "task.kind", name, names_of(tasks())));
}

const LossSpec& loss_spec(const TaskSpec& task, const std::string& name, const std::string& where) {
  if (name.empty()) return task.losses.front();
  for (const auto& l : task.losses)
    if (l.name == name) return l;
  throw ConfigError(fmt::format("{}task.loss = '{}' does not fit task.kind {}: use one of {}",
                                prefix(where), name, task.name,
                                fmt::join(names_of(task.losses), ", ")));
}

const std::vector<AugmentSpec>& augmentations() {
  static const std::vector<AugmentSpec> specs = {
      {"random_crop", AugmentKind::random_crop, "pad", 4},
      {"hflip", AugmentKind::hflip, "p", 0.5},
      {"random_resized_crop", AugmentKind::random_resized_crop, "min_scale", 0.08},
  };
  return specs;
}

Augment parse_augment_item(const std::string& item, const std::string& where) {
  const auto colon = item.find(':');
  const std::string name = item.substr(0, colon);
  for (const auto& spec : augmentations()) {
    if (spec.name != name) continue;
    Augment out{&spec, spec.default_argument};
    if (colon != std::string::npos) {
      const std::string text = item.substr(colon + 1);
      char* end = nullptr;
      out.argument = std::strtod(text.c_str(), &end);
      LATHE_CHECK(!text.empty() && end == text.c_str() + text.size() && out.argument >= 0,
                  ConfigError,
                  "{}data.augment: '{}': the value after ':' ({}) must be a non-negative number",
                  prefix(where), item, spec.argument);
    }
    // Bounded arguments (the crop's padding is bounded by the image size where it is known).
    LATHE_CHECK(spec.kind != AugmentKind::hflip || out.argument <= 1, ConfigError,
                "{}data.augment: '{}': the flip probability must be in [0, 1]", prefix(where),
                item);
    LATHE_CHECK(spec.kind != AugmentKind::random_resized_crop ||
                    (out.argument > 0 && out.argument <= 1),
                ConfigError, "{}data.augment: '{}': the minimum scale must be in (0, 1]",
                prefix(where), item);
    return out;
  }
  std::vector<std::string> known;
  for (const auto& s : augmentations()) known.push_back(fmt::format("{}[:{}]", s.name, s.argument));
  throw ConfigError(fmt::format("{}data.augment: unknown augmentation '{}'; known: {}",
                                prefix(where), item, fmt::join(known, ", ")));
}

}  // namespace lathe::config
