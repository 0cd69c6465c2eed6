// load_finished_config / load_finished_model: a run folder's config.yaml and weights.
#include "src/run/finished_run.h"

#include "lathe/ckpt/torch_pickle.h"
#include "lathe/core/error.h"
#include "models/registry.h"

namespace lathe::run::detail {

config::RunConfig load_finished_config(const std::filesystem::path& run_dir,
                                       const std::vector<std::string>& overrides) {
  const auto config_file = run_dir / "config.yaml";
  LATHE_CHECK(std::filesystem::exists(config_file), ConfigError,
              "{}: no config.yaml here; pass the folder of a finished run (runs/<name>)",
              run_dir.string());
  return config::load_config(config_file, overrides);
}

torch::nn::AnyModule load_finished_model(const config::RunConfig& cfg,
                                         const std::filesystem::path& run_dir,
                                         const std::filesystem::path& weights, c10::Device device) {
  torch::nn::AnyModule model = models::build_model(cfg.model);
  if (const auto est = models::estimator_of(*model.ptr())) {  // model.json / model.libsvm
    est->load(weights.empty() ? run_dir / est->file_name() : weights);
    return model;
  }
  ckpt::load_weights_any(*model.ptr(), weights.empty() ? run_dir / "model.safetensors" : weights,
                         /*strict=*/true);
  model.ptr()->to(device);
  model.ptr()->eval();
  return model;
}

}  // namespace lathe::run::detail
