// The named choices of a run config — data sources, task kinds with their losses, augmentations —
// each in one table that config validation and the code dispatching on the name both read.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace lathe::config {

/// data.source values. Dispatch switches over this enum, so a source listed here without a
/// loader does not compile, and a name not listed here never validates.
enum class SourceKind { idx, csv, image_folder, text, text_csv };

/// One data source: its name, what it reads, the data.* keys it honours besides the ones every
/// source takes (source, path, val_fraction, batch_size, eval_batch_size, limit_train,
/// limit_test, num_workers), and the task of its data ("" when data.task decides).
struct SourceSpec {
  std::string_view name;
  SourceKind kind;
  std::string_view description;
  std::vector<std::string_view> keys;
  std::string_view task;
};

/// Every source, in a fixed order.
const std::vector<SourceSpec>& sources();
/// The data.* keys every source takes.
const std::vector<std::string_view>& common_data_keys();
/// The source named `name`; ConfigError naming `where` and listing the sources otherwise.
const SourceSpec& source_spec(const std::string& name, const std::string& where = "");

/// task.loss values.
enum class Loss { cross_entropy, mse, l1, huber };
/// task.kind values.
enum class TaskKind { classification, regression, lm };

/// One loss of a task kind.
struct LossSpec {
  std::string_view name;
  Loss loss;
};

/// One task kind: its losses (the first is the default) and the validation metric watched by
/// default (best checkpoint).
struct TaskSpec {
  std::string_view name;
  TaskKind kind;
  std::string_view description;
  std::vector<LossSpec> losses;
  std::string_view monitor;
};

/// Every task kind, in a fixed order.
const std::vector<TaskSpec>& tasks();
/// The task kind named `name`; ConfigError naming `where` and listing the kinds otherwise.
const TaskSpec& task_spec(const std::string& name, const std::string& where = "");
/// The loss named `name` of `task` (its default when `name` is empty); ConfigError otherwise.
const LossSpec& loss_spec(const TaskSpec& task, const std::string& name,
                          const std::string& where = "");

/// data.augment values.
enum class AugmentKind { random_crop, hflip, random_resized_crop };

/// One augmentation: "name[:argument]", what the argument is and its default.
struct AugmentSpec {
  std::string_view name;
  AugmentKind kind;
  std::string_view argument;
  double default_argument;
};

/// Every augmentation, in a fixed order.
const std::vector<AugmentSpec>& augmentations();

/// One parsed data.augment item.
struct Augment {
  const AugmentSpec* spec = nullptr;
  double argument = 0;  ///< the given value, or the spec's default
};
/// Parses "random_crop[:pad]", "hflip[:p]", "random_resized_crop[:min_scale]"; a ConfigError
/// naming `where` for an unknown name or a bad argument.
///
///   const auto a = lathe::config::parse_augment_item("hflip:0.3", "run.yaml:9");
Augment parse_augment_item(const std::string& item, const std::string& where = "");

}  // namespace lathe::config
