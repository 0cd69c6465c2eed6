// export --hf: a finished run as a Hugging Face folder (config.json, model.safetensors, generation
// and tokenizer files) for transformers and the servers that read its folders.
#include <fstream>
#include <nlohmann/json.hpp>

#include "lathe/ckpt/state_dict.h"
#include "lathe/core/activity.h"
#include "lathe/core/error.h"
#include "lathe/core/fs.h"
#include "lathe/run/export.h"
#include "models/hf_config.h"
#include "models/lora.h"
#include "src/run/finished_run.h"

namespace lathe::run {
namespace fs = std::filesystem;

namespace {

/// The files a Hugging Face tokenizer is made of, in any of its forms.
const std::vector<std::string>& tokenizer_files() {
  static const std::vector<std::string> names = {"tokenizer.json",
                                                 "tokenizer_config.json",
                                                 "special_tokens_map.json",
                                                 "vocab.json",
                                                 "merges.txt",
                                                 "tokenizer.model",
                                                 "vocab.txt",
                                                 "chat_template.jinja"};
  return names;
}

/// generation_config.json from config.json's token ids, for a run that has none.
std::string generation_config_from(const std::string& config_json) {
  const auto config = nlohmann::ordered_json::parse(config_json);
  nlohmann::ordered_json g = {{"_from_model_config", true}};
  for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id"})
    if (config.contains(key) && !config[key].is_null()) g[key] = config[key];
  return g.dump(2) + "\n";
}

}  // namespace

HfExport export_hf(const fs::path& run_dir, const fs::path& folder, const fs::path& weights) {
  const Doing doing(fmt::format("writing the run {} as a Hugging Face folder {}", run_dir.string(),
                                folder.string()));
  const config::RunConfig cfg = detail::load_finished_config(run_dir, {"run.device=cpu"});
  LATHE_CHECK(cfg.task.kind == "lm", ExportError,
              "{}: a {} run; export --hf writes causal language models (llama, gpt2)",
              (run_dir / "config.yaml").string(), cfg.task.kind);
  torch::nn::AnyModule model = detail::load_finished_model(cfg, run_dir, weights, at::kCPU);
  if (models::has_lora(*model.ptr())) models::merge_lora(*model.ptr());
  const fs::path pretrained = cfg.model.pretrained;
  const bool from_hf = models::is_hf_folder(pretrained);
  const std::string config_json =
      models::hf_config_json(*model.ptr(), from_hf ? pretrained / "config.json" : fs::path());

  fs::create_directories(folder);
  HfExport out{folder, {}};
  const auto written = [&](const std::string& name) { out.files.push_back(name); };
  write_file_atomic(folder / "config.json", config_json);
  written("config.json");
  ckpt::save_weights(*model.ptr(), folder / "model.safetensors", {{"format", "pt"}});
  written("model.safetensors");
  // The run's own files first, then the folder it was fine-tuned from.
  const auto source_of = [&](const std::string& name) -> fs::path {
    if (fs::is_regular_file(run_dir / name)) return run_dir / name;
    if (from_hf && fs::is_regular_file(pretrained / name)) return pretrained / name;
    return {};
  };
  if (const fs::path g = source_of("generation_config.json"); !g.empty())
    copy_file_atomic(g, folder / "generation_config.json");
  else
    write_file_atomic(folder / "generation_config.json", generation_config_from(config_json));
  written("generation_config.json");
  for (const auto& name : tokenizer_files())
    if (const fs::path t = source_of(name); !t.empty()) {
      copy_file_atomic(t, folder / name);
      written(name);
    }
  return out;
}

}  // namespace lathe::run
