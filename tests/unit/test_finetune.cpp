// Fine-tuning in a run: LoRA (model.lora) end to end with resume, and layer-wise lr decay
// (optim.layer_decay) against timm's param_groups_layer_decay.
#include <ATen/ATen.h>
#include <torch/optim/optimizer.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "lathe/ckpt/safetensors.h"
#include "lathe/ckpt/state_dict.h"
#include "lathe/config/config.h"
#include "lathe/core/error.h"
#include "lathe/optim/optimizer.h"
#include "lathe/run/run.h"
#include "models/layers.h"
#include "models/lora.h"
#include "models/registry.h"
#include "tests/support.h"

using lathe::ConfigError;
using lathe::testing::expect_error;
using lathe::testing::read_text;
using lathe::testing::TempDir;
namespace config = lathe::config;
namespace fs = std::filesystem;

namespace {

/// A small GPT-2 on the fortunes with LoRA on c_attn: 8 steps, a checkpoint every 4.
config::RunConfig lora_run(const TempDir& dir, const std::string& name) {
  return config::load_config(
      lathe::testing::source_dir() + "/configs/fortunes_gpt.yaml",
      {"run.dir=" + dir.path().string(), "run.name=" + name, "run.threads=2",
       "run.deterministic=true", "data.limit_train=400", "model.n_layer=2", "model.n_embd=32",
       "trainer.max_steps=8", "trainer.progress=none", "trainer.tensorboard=false",
       "trainer.log_every_n_steps=1", "checkpoint.every_n_steps=4", "checkpoint.keep_last=5",
       "model.lora.targets=[c_attn]", "model.lora.rank=4", "model.lora.alpha=8",
       "model.lora.dropout=0.1", "optim.lr=0.01"});
}

std::map<std::string, at::Tensor> tensors_of(const fs::path& file) {
  std::map<std::string, at::Tensor> out;
  for (auto& [name, t] : lathe::ckpt::load_safetensors(file).tensors) out.emplace(name, t);
  return out;
}

}  // namespace

TEST(LoraRun, TrainsOnlyAdaptersWritesPeftFilesAndMergedWeightsAndResumesBitExact) {
  TempDir dir;
  const auto a = lathe::run::train_from_config(lora_run(dir, "a"));
  const fs::path run = dir / "a";
  // peft's files beside the merged model.
  const auto adapter_config = nlohmann::json::parse(read_text(run / "adapter_config.json"));
  EXPECT_EQ(adapter_config["peft_type"], "LORA");
  EXPECT_EQ(adapter_config["r"], 4);
  EXPECT_EQ(adapter_config["target_modules"], nlohmann::json::array({"c_attn"}));
  EXPECT_EQ(adapter_config["fan_in_fan_out"], true);
  EXPECT_EQ(adapter_config["task_type"], "CAUSAL_LM");
  const auto adapter = tensors_of(run / "adapter_model.safetensors");
  EXPECT_EQ(adapter.size(), 4u);  // 2 blocks × (lora_A, lora_B)
  EXPECT_TRUE(adapter.count("base_model.model.transformer.h.1.attn.c_attn.lora_B.weight"));

  // Frozen base: every tensor but c_attn's weight is what it was at the first checkpoint; the
  // final checkpoint's base + B·A·(alpha/r) is model.safetensors's c_attn weight.
  const auto early = tensors_of(run / "checkpoints" / "step-00000004" / "model.safetensors");
  const auto last = tensors_of(run / "checkpoints" / "step-00000008" / "model.safetensors");
  const auto merged = tensors_of(run / "model.safetensors");
  EXPECT_EQ(merged.size() + 4, last.size());  // the checkpoints also hold the adapters
  for (const auto& [name, t] : merged) {
    SCOPED_TRACE(name);
    if (name.find("c_attn.weight") == std::string::npos) {
      EXPECT_TRUE(t.equal(early.at(name)));
      continue;
    }
    const std::string path = name.substr(0, name.size() - std::string(".weight").size());
    EXPECT_FALSE(t.equal(early.at(name)));  // the adapter learnt something
    const at::Tensor delta =
        at::matmul(last.at(path + ".lora_B.weight"), last.at(path + ".lora_A.weight")).t() * 2.0;
    EXPECT_TRUE(t.equal(last.at(name) + delta));
    EXPECT_TRUE(adapter.at("base_model.model." + path + ".lora_A.weight")
                    .equal(last.at(path + ".lora_A.weight")));
  }
  // eval needs nothing new: the merged weights load into the plain model; a checkpoint's
  // weights (adapters still apart) evaluate the same.
  const auto again = lathe::run::evaluate_run(run, {}, {});
  EXPECT_NEAR(again.at("perplexity"), a.test.at("perplexity"), 1e-4 * a.test.at("perplexity"));
  const auto from_ckpt = lathe::run::evaluate_run(
      run, run / "checkpoints" / "step-00000008" / "model.safetensors", {});
  EXPECT_NEAR(from_ckpt.at("perplexity"), a.test.at("perplexity"),
              1e-4 * a.test.at("perplexity"));

  // Resumed from the step-4 checkpoint (adapters, their optimizer state, RNG, dropout included):
  // the same bytes at the end as the uninterrupted run.
  lathe::run::train_from_config(lora_run(dir, "b"),
                                (run / "checkpoints" / "step-00000004").string());
  EXPECT_EQ(read_text(dir / "b" / "model.safetensors"), read_text(run / "model.safetensors"));
  EXPECT_EQ(read_text(dir / "b" / "adapter_model.safetensors"),
            read_text(run / "adapter_model.safetensors"));
}

TEST(LoraRun, StartsFromAPeftAdapterFolderWhoseConfigSaysTheShape) {
  TempDir dir;
  lathe::run::train_from_config(lora_run(dir, "a"));
  // Continue from run a's adapter: the adapter says targets, rank and alpha.
  auto cfg = config::load_config(
      lathe::testing::source_dir() + "/configs/fortunes_gpt.yaml",
      {"run.dir=" + dir.path().string(), "run.name=c", "data.limit_train=400", "model.n_layer=2",
       "model.n_embd=32", "trainer.max_steps=1", "trainer.progress=none",
       "trainer.tensorboard=false", "optim.lr=1e-12", "model.lora.adapter=" + (dir / "a").string(),
       "model.pretrained=" + (dir / "a" / "checkpoints" / "step-00000008" / "model.safetensors")
           .string()});
  lathe::run::train_from_config(cfg);
  const auto resolved = config::load_config(dir / "c" / "config.yaml");
  EXPECT_EQ(resolved.model.lora.rank, 4);
  EXPECT_EQ(resolved.model.lora.alpha, 8);
  EXPECT_EQ(resolved.model.lora.targets, std::vector<std::string>{"c_attn"});
  // One step at lr 1e-12 changes nothing visible: the merged weights are run a's.
  const auto a = tensors_of(dir / "a" / "model.safetensors");
  for (const auto& [name, t] : tensors_of(dir / "c" / "model.safetensors"))
    EXPECT_LE((t - a.at(name)).abs().max().item<double>(), 1e-6) << name;
  // A stated value that disagrees with the adapter is an error naming both sides.
  cfg.model.lora.rank = 8;
  expect_error<ConfigError>([&] { lathe::run::train_from_config(cfg); },
                            {"model.lora.rank = 8", "adapter_config.json has r = 4"});
}

// ---- layer-wise learning-rate decay -------------------------------------------------------------

namespace {

torch::nn::AnyModule zoo_model(const std::string& name, std::vector<std::string> options) {
  return lathe::models::build_model(config::parse_model_section(name, options));
}

/// Each parameter's lr scale in the optimizer make_optimizer builds with layer decay `decay`.
std::map<std::string, double> lr_scales(torch::nn::Module& module, const std::string& model,
                                        double decay, double base = 1e-3) {
  config::OptimSection o;
  o.lr = base;
  o.layer_decay = decay;
  lathe::optim::GroupRules rules;
  const auto layers = lathe::models::transformer_layers(model, module);
  rules.layer_of = layers.of;
  rules.num_layers = layers.num_layers;
  auto bundle = lathe::optim::make_optimizer(o, module, rules);
  std::map<const void*, double> scale;
  for (size_t g = 0; g < bundle->param_groups().size(); ++g) {
    EXPECT_DOUBLE_EQ(lathe::optim::group_values(bundle, g).lr, base * bundle.lr_scale[g]);
    for (const auto& p : bundle->param_groups()[g].params())
      scale[p.unsafeGetTensorImpl()] = bundle.lr_scale[g];
  }
  std::map<std::string, double> out;  // the parameters that train
  for (const auto& item : module.named_parameters())
    if (item.value().requires_grad()) out[item.key()] = scale.at(item.value().unsafeGetTensorImpl());
  return out;
}

}  // namespace

TEST(LayerDecay, EachLayerGetsBaseTimesDecayToItsDepthBelowTheHead) {
  // timm's convention (param_groups_layer_decay, after BEiT): id 0 = embeddings, 1..L = blocks,
  // the final norm with block L, L + 1 = pooler / head; lr = base · decay^(L + 1 − id).
  const double d = 0.8;
  const auto expect = [&](const std::map<std::string, double>& s, const std::string& name,
                          int64_t depth_below_top) {
    EXPECT_EQ(s.at(name), std::pow(d, static_cast<double>(depth_below_top))) << name;
  };
  auto gpt2 = zoo_model("gpt2", {"vocab_size=64", "n_positions=32", "n_embd=32", "n_layer=3",
                                 "n_head=4"});
  const auto g = lr_scales(*gpt2.ptr(), "gpt2", d);
  expect(g, "transformer.wte.weight", 4);  // L = 3: embeddings at decay^4 (lm_head is tied)
  expect(g, "transformer.wpe.weight", 4);
  expect(g, "transformer.h.0.attn.c_attn.weight", 3);
  expect(g, "transformer.h.2.mlp.c_proj.bias", 1);
  expect(g, "transformer.ln_f.weight", 1);  // with the top block, as timm's ViT's norm

  auto bert = zoo_model("bert_classifier",
                        {"vocab_size=64", "hidden_size=32", "num_hidden_layers=2",
                         "num_attention_heads=4", "intermediate_size=64", "num_labels=3"});
  const auto b = lr_scales(*bert.ptr(), "bert_classifier", d);
  expect(b, "bert.embeddings.word_embeddings.weight", 3);
  expect(b, "bert.embeddings.LayerNorm.bias", 3);
  expect(b, "bert.encoder.layer.0.attention.self.query.weight", 2);
  expect(b, "bert.encoder.layer.1.output.LayerNorm.weight", 1);
  expect(b, "bert.pooler.dense.weight", 0);
  expect(b, "classifier.weight", 0);
  // The encoder alone (MiniLM's `bert`) has no prefix.
  auto encoder = zoo_model("bert", {"vocab_size=64", "hidden_size=32", "num_hidden_layers=2",
                                    "num_attention_heads=4", "intermediate_size=64"});
  expect(lr_scales(*encoder.ptr(), "bert", d), "encoder.layer.1.intermediate.dense.weight", 1);

  // LoRA adapters inside a block take the block's rate.
  lathe::models::LoraOptions lora;
  lora.targets = {"query"};
  lathe::models::apply_lora(*bert.ptr(), lora);
  expect(lr_scales(*bert.ptr(), "bert_classifier", d),
         "bert.encoder.layer.0.attention.self.query.lora_A.weight", 2);

  // Schedules scale every group: the scheduled lr times the group's factor.
  config::OptimSection o;
  o.lr = 0.1;
  o.layer_decay = d;
  lathe::optim::GroupRules rules;
  const auto layers = lathe::models::transformer_layers("gpt2", *gpt2.ptr());
  rules.layer_of = layers.of;
  rules.num_layers = layers.num_layers;
  auto bundle = lathe::optim::make_optimizer(o, *gpt2.ptr(), rules);
  lathe::optim::set_hyperparameters(bundle, 0.025);
  // Groups per layer id × (decay, no decay): the embeddings have only 2-d tensors, so 1 + 3 × 2.
  EXPECT_EQ(bundle->param_groups().size(), 7u);
  for (size_t i = 0; i < bundle->param_groups().size(); ++i)
    EXPECT_EQ(lathe::optim::group_values(bundle, i).lr, 0.025 * bundle.lr_scale[i]);
  EXPECT_EQ(bundle.lr_scale.front(), std::pow(d, 4.0));
  EXPECT_EQ(bundle.lr_scale.back(), d);  // ln_f, with the top block (tied lm_head: embeddings)
}

TEST(LayerDecay, VitGroupsMatchTimmsParamGroupsLayerDecay) {
  // The same ViT (2 blocks) in timm; its param_groups_layer_decay's lr_scale per parameter,
  // translated to torchvision's names, equals ours exactly.
  TempDir dir;
  const auto out = lathe::testing::run_parity("layer_decay_oracle.py",
                                              (dir / "timm.json").string() + " 0.75");
  const auto timm = nlohmann::json::parse(read_text(dir / "timm.json"));
  auto vit = zoo_model("vit", {"image_size=32", "patch_size=8", "num_layers=2", "num_heads=4",
                               "hidden_dim=32", "mlp_dim=64", "num_classes=10"});
  const auto ours = lr_scales(*vit.ptr(), "vit", 0.75);
  EXPECT_EQ(ours.size(), timm.size()) << out;
  for (const auto& [name, scale] : ours) {
    ASSERT_TRUE(timm.contains(name)) << name << " not in timm's groups: " << timm.dump();
    EXPECT_EQ(scale, timm[name].get<double>()) << name;
  }
}

TEST(LayerDecay, AModelWithoutLayersIsAnErrorNamingIt) {
  auto resnet = zoo_model("resnet18", {"num_classes=3"});
  expect_error<ConfigError>(
      [&] { lathe::models::transformer_layers("resnet18", *resnet.ptr()); },
      {"model 'resnet18' has no transformer layer structure", "gpt2, llama, bert, bert_classifier, vit"});
  config::OptimSection o;
  o.layer_decay = 0.9;
  expect_error<ConfigError>([&] { lathe::optim::make_optimizer(o, *resnet.ptr()); },
                            {"optim.layer_decay = 0.9 needs the model's layer structure"});
  for (const char* bad : {"optim.layer_decay=0", "optim.layer_decay=1.5"})
    expect_error<ConfigError>(
        [&] { config::parse_config("data: {path: x}\nmodel: {name: vit}\n", "run.yaml", {bad}); },
        {"optim.layer_decay", "must be in (0, 1]"});
}
