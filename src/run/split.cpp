// save_test_split: the test loader's batches, concatenated, into one safetensors file.
#include "lathe/run/split.h"

#include <ATen/ATen.h>

#include "lathe/ckpt/safetensors.h"
#include "lathe/config/config.h"
#include "lathe/core/error.h"
#include "lathe/run/run.h"

namespace lathe::run {

int64_t save_test_split(const std::filesystem::path& run_dir,
                        const std::vector<std::string>& overrides,
                        const std::filesystem::path& file) {
  const auto config_file = run_dir / "config.yaml";
  LATHE_CHECK(std::filesystem::exists(config_file), ConfigError,
              "{}: no config.yaml here; pass the folder of a finished run (runs/<name>)",
              run_dir.string());
  config::RunConfig cfg = config::load_config(config_file, overrides);
  RunLoaders data = make_run_loaders(cfg.data, cfg.run.seed);
  resolve_from_data(cfg, data);
  LATHE_CHECK(data.test && data.test->size() > 0, DataError, "{}: the test split is empty",
              cfg.data.path);
  data.test->set_epoch(0);
  std::vector<at::Tensor> inputs, targets;
  for (int64_t i = 0; i < data.test->num_batches(); ++i) {
    data::Batch b = data.test->batch(i);
    inputs.push_back(b.inputs.cpu());
    targets.push_back(b.targets.cpu());
  }
  const at::Tensor x = at::cat(inputs), y = at::cat(targets);
  ckpt::save_safetensors(file, {{"inputs", x}, {"targets", y}},
                         {{"task", cfg.task.kind}, {"records", std::to_string(x.size(0))}});
  return x.size(0);
}

}  // namespace lathe::run
