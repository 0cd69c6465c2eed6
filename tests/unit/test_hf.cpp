// Hugging Face folders in and out: config.json builds the model (each architecture, sharded
// weights, disagreements as errors), greedy generation through the key/value cache equals
// transformers' generate, and export --hf writes a folder transformers loads with our logits.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <filesystem>
#include <sstream>

#include "lathe/ckpt/state_dict.h"
#include "lathe/config/config.h"
#include "lathe/core/error.h"
#include "lathe/run/export.h"
#include "lathe/run/generate.h"
#include "lathe/run/run.h"
#include "models/hf_config.h"
#include "models/registry.h"
#include "tests/support.h"
#include "tests/unit/llama_support.h"

namespace fs = std::filesystem;
namespace config = lathe::config;
namespace run = lathe::run;
using lathe::testing::expect_error;
using lathe::testing::llama_reference;
using lathe::testing::LlamaReference;
using lathe::testing::read_text;
using lathe::testing::TempDir;
using lathe::testing::write_text;

namespace {

const std::vector<std::string> kCases = {"llama_gqa4", "llama_mha_tied_linear", "llama_llama3_bias",
                                         "qwen2", "mistral"};

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

/// The model `section` names, sized by `folder`'s config.json, with the folder's weights
/// (strictly).
torch::nn::AnyModule from_folder(const fs::path& folder, config::ModelSection section) {
  section.pretrained = folder.string();
  lathe::models::apply_hf_config(section);
  auto model = lathe::models::build_model(section);
  lathe::ckpt::load_state_dict(*model.ptr(), lathe::ckpt::load_hf_weights(folder),
                               /*strict=*/true, folder.string());
  model.ptr()->eval();
  return model;
}

/// A run folder around a case's Hugging Face folder, as a fine-tuning run leaves it: config.yaml
/// with the model's options (and the folder as model.pretrained when `with_base`), the weights
/// and generation_config.json.
fs::path run_around(const TempDir& dir, const LlamaReference& ref, bool with_base) {
  const fs::path r = dir / ("run_" + ref.dir.filename().string());
  fs::create_directories(r);
  fs::copy_file(ref.dir / "hf" / "model.safetensors", r / "model.safetensors");
  fs::copy_file(ref.dir / "hf" / "generation_config.json", r / "generation_config.json");
  std::string model = "{name: llama";
  for (const auto& line : ref.options) {
    const auto eq = line.find('=');
    model += fmt::format(", {}: {}", line.substr(0, eq), line.substr(eq + 1));
  }
  if (with_base) model += ", pretrained: " + (ref.dir / "hf").string();
  write_text(r / "config.yaml",
             "run: {name: r, device: cpu}\ndata: {source: text, path: c.txt}\n"
             "task: {kind: lm}\nmodel: " +
                 model + "}\n");
  return r;
}

}  // namespace

TEST(HfFolder, ConfigJsonBuildsEachArchitectureFromOneFileOrShards) {
  for (const auto& name : kCases) {
    SCOPED_TRACE(name);
    const LlamaReference ref = llama_reference(name);
    // config.json gives exactly the options the oracle derived from transformers' config.
    auto section = config::parse_model_section("llama", {});
    section.pretrained = (ref.dir / "hf").string();
    const auto lines = lathe::models::apply_hf_config(section);
    EXPECT_FALSE(lines.empty());
    for (const auto& line : ref.options) {
      const auto eq = line.find('=');
      const std::string key = line.substr(0, eq), value = line.substr(eq + 1);
      ASSERT_TRUE(section.params.has(key)) << key;
      const std::string got = section.params.values().at(key).items.front();
      if (value.find_first_not_of("0123456789.-+e") != std::string::npos)  // true, linear, ...
        EXPECT_EQ(got, value) << key;
      else
        EXPECT_DOUBLE_EQ(std::stod(got), std::stod(value)) << key;
    }
    torch::NoGradGuard no_grad;
    for (const char* folder : {"hf", "hf_sharded"}) {
      auto model = from_folder(ref.dir / folder, config::parse_model_section("llama", {}));
      const double d = max_diff(model.forward<at::Tensor>(ref.get("input_ids")), ref.get("logits"));
      std::printf("[ parity   ] %s from %s/: max |logits diff| %.3g\n", name.c_str(), folder, d);
      EXPECT_LE(d, 1e-5);
    }
  }
}

TEST(HfFolder, Gpt2AndBertClassesLoadFromConfigJson) {
  torch::NoGradGuard no_grad;
  const LlamaReference bert = llama_reference("bert");
  auto classifier = from_folder(bert.dir / "hf",
                                config::parse_model_section("bert_classifier", {"num_labels=3"}));
  EXPECT_LE(max_diff(classifier.forward<at::Tensor>(bert.get("input_ids")), bert.get("logits")),
            1e-5);
  TempDir dir;
  lathe::testing::run_parity("zoo_oracle.py", "gpt2 " + dir.path().string());
  const auto io = lathe::ckpt::load_safetensors(dir / "io.safetensors").tensors;
  at::Tensor input, output;
  for (const auto& [k, v] : io) {
    if (k == "input") input = v;
    if (k == "output") output = v;
  }
  auto gpt2 = from_folder(dir / "hf", config::parse_model_section("gpt2", {}));
  EXPECT_LE(max_diff(gpt2.forward<at::Tensor>(input), output), 1e-5);
}

TEST(HfFolder, DisagreementsAndUnknownArchitecturesAreErrorsNamingBothSides) {
  const LlamaReference ref = llama_reference("mistral");
  const std::string hf = (ref.dir / "hf").string();
  auto stated = config::parse_model_section("llama", {"hidden_size=64", "rope_theta=1e6"});
  stated.pretrained = hf;
  expect_error<lathe::ConfigError>(
      [&] { lathe::models::apply_hf_config(stated); },
      {"model.hidden_size = 64", hf + "/config.json has hidden_size = 32",
       "remove the key (config.json describes the model) or make it 32"});
  auto agrees = config::parse_model_section("llama", {"hidden_size=32", "rope_theta=1e6"});
  agrees.pretrained = hf;
  EXPECT_NO_THROW(lathe::models::apply_hf_config(agrees));
  auto wrong = config::parse_model_section("gpt2", {});
  wrong.pretrained = hf;
  expect_error<lathe::ConfigError>([&] { lathe::models::apply_hf_config(wrong); },
                                   {"model.name = gpt2", "describes a MistralForCausalLM",
                                    "(lathe's llama); make model.name llama"});
  TempDir dir;
  fs::create_directories(dir / "falcon");
  write_text(dir / "falcon" / "config.json", R"({"architectures": ["FalconForCausalLM"]})");
  expect_error<lathe::ConfigError>(
      [&] { lathe::models::read_hf_config(dir / "falcon"); },
      {"architecture FalconForCausalLM is not one lathe has; it reads LlamaForCausalLM, "
       "Qwen2ForCausalLM, MistralForCausalLM, GPT2LMHeadModel, BertModel, "
       "BertForSequenceClassification"});
  std::string yarn = read_text(ref.dir / "hf" / "config.json");
  yarn.replace(yarn.find("\"rope_type\": \"default\""), 22, "\"rope_type\": \"yarn\"");
  fs::create_directories(dir / "yarn");
  write_text(dir / "yarn" / "config.json", yarn);
  expect_error<lathe::ConfigError>(
      [&] { lathe::models::read_hf_config(dir / "yarn"); },
      {"rope_parameters.rope_type = 'yarn'", "default, linear and llama3"});
  // Shards: an index naming a tensor its shard lacks, or a shard outside the folder.
  fs::copy(ref.dir / "hf_sharded", dir / "shards");
  std::string index = read_text(dir / "shards" / "model.safetensors.index.json");
  const size_t at = index.find("\"model.norm.weight\"");
  ASSERT_NE(at, std::string::npos);
  write_text(dir / "shards" / "model.safetensors.index.json",
             index.substr(0, at) +
                 "\"model.extra.weight\": \"model-00001-of-00004.safetensors\", " +
                 index.substr(at));
  expect_error<lathe::CheckpointError>(
      [&] { lathe::ckpt::load_hf_weights(dir / "shards"); },
      {"the index puts tensor 'model.extra.weight' in model-00001-of-00004.safetensors"});
  write_text(dir / "shards" / "model.safetensors.index.json",
             R"({"weight_map": {"model.norm.weight": "../x.safetensors"}})");
  expect_error<lathe::CheckpointError>([&] { lathe::ckpt::load_hf_weights(dir / "shards"); },
                                       {"a shard is a .safetensors file in the same folder"});
}

TEST(HfGenerate, GreedyEqualsTransformersTokenForTokenAndStopsAtEos) {
  TempDir dir;
  for (const auto& name : kCases) {
    SCOPED_TRACE(name);
    const LlamaReference ref = llama_reference(name);
    const fs::path r = run_around(dir, ref, /*with_base=*/false);
    const at::Tensor prompt = ref.get("prompt"), greedy = ref.get("greedy");  // (1, P), (1, P+N)
    run::GenerateOptions o;
    for (int64_t i = 0; i < prompt.size(1); ++i)
      o.prompt_ids.push_back(prompt[0][i].item<int64_t>());
    o.max_new_tokens = 12;
    o.sampling.greedy = true;
    std::vector<int64_t> expected;
    for (int64_t i = prompt.size(1); i < greedy.size(1); ++i)
      expected.push_back(greedy[0][i].item<int64_t>());
    const run::Generation g = run::generate(r, o);
    EXPECT_EQ(g.new_ids, expected);
    ASSERT_EQ(g.stop_ids.size(), 1u);  // generation_config.json's
    EXPECT_EQ(g.new_ids.back(), g.stop_ids.front());
    o.use_cache = false;  // the cache changes nothing
    EXPECT_EQ(run::generate(r, o).new_ids, expected);
    o.use_cache = true;
    o.stop_at_eos = false;
    EXPECT_EQ(run::generate(r, o).new_ids.size(), 12u);
  }
}

TEST(HfExport, TransformersLoadsTheFolderWithOurLogits) {
  TempDir dir;
  for (const auto& name : kCases) {
    SCOPED_TRACE(name);
    const LlamaReference ref = llama_reference(name);
    // Half the runs from a folder (its config.json is the base), half from options alone.
    const bool with_base = name == "llama_mha_tied_linear" || name == "qwen2";
    const fs::path r = run_around(dir, ref, with_base);
    write_text(r / "tokenizer.json", "{}");
    const fs::path out = dir / ("hf_" + name);
    const run::HfExport e = run::export_hf(r, out);
    EXPECT_EQ(e.files, (std::vector<std::string>{"config.json", "model.safetensors",
                                                 "generation_config.json", "tokenizer.json"}));
    // The folder reads back in lathe as the same model ...
    torch::NoGradGuard no_grad;
    auto model = from_folder(out, config::parse_model_section("llama", {}));
    const at::Tensor logits = model.forward<at::Tensor>(ref.get("input_ids"));
    EXPECT_LE(max_diff(logits, ref.get("logits")), 1e-5);
    // ... and in transformers with our logits.
    lathe::ckpt::save_safetensors(dir / "io.safetensors",
                                  {{"input_ids", ref.get("input_ids")}, {"logits", logits}});
    const std::string said = lathe::testing::run_parity(
        "llama_oracle.py",
        fmt::format("check_export {} {}", out.string(), (dir / "io.safetensors").string()));
    std::printf("[ parity   ] %s export --hf: %s", name.c_str(), said.c_str());
  }
}

TEST(HfRun, FineTunesWithLoraFromAShardedFolderThenGeneratesAndExports) {
  const LlamaReference ref = llama_reference("bytes");
  TempDir dir;
  std::string text;
  for (int i = 0; i < 30; ++i) text += fmt::format("line {} of a small corpus.\n", i);
  write_text(dir / "corpus.txt", text);
  const std::string yaml =
      "run: {name: r, dir: " + dir.path().string() + ", seed: 3, device: cpu}\n" +
      "trainer: {max_epochs: 1, progress: none, tensorboard: false}\n"
      "checkpoint: {every_n_epochs: 0, save_best: false}\n"
      "data: {source: text, path: " +
      (dir / "corpus.txt").string() +
      ", seq_len: 16, num_workers: 0}\n"
      "optim: {name: adamw, lr: 0.01}\n"
      "model: {name: llama, pretrained: " +
      (ref.dir / "hf_sharded").string() +
      ", pretrained_strict: true, lora: {targets: [q_proj, v_proj], rank: 4}}\n";
  const fs::path r = run::train_from_config(config::parse_config(yaml, "run.yaml")).run_dir;
  // The resolved config records what config.json said.
  const std::string resolved = read_text(r / "config.yaml");
  EXPECT_NE(resolved.find("num_key_value_heads: 2"), std::string::npos) << resolved;
  EXPECT_TRUE(fs::exists(r / "generation_config.json"));
  // The merged model differs from the folder's (the adapters trained) ...
  torch::NoGradGuard no_grad;
  auto base = from_folder(ref.dir / "hf_sharded", config::parse_model_section("llama", {}));
  const fs::path out = dir / "exported";
  run::export_hf(r, out);
  auto tuned = from_folder(out, config::parse_model_section("llama", {}));
  const at::Tensor ids = ref.get("input_ids");
  const at::Tensor logits = tuned.forward<at::Tensor>(ids);
  EXPECT_GT(max_diff(logits, base.forward<at::Tensor>(ids)), 1e-3);
  // ... and transformers reads the export with the same logits.
  lathe::ckpt::save_safetensors(dir / "io.safetensors", {{"input_ids", ids}, {"logits", logits}});
  lathe::testing::run_parity("llama_oracle.py", fmt::format("check_export {} {}", out.string(),
                                                            (dir / "io.safetensors").string()));
  run::GenerateOptions o;
  o.prompt = "line ";
  o.max_new_tokens = 5;
  o.sampling.greedy = true;
  EXPECT_FALSE(run::generate(r, o).new_ids.empty());
}
