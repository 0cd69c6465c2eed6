// LoRA adapters against Python's peft (tests/parity/lora_oracle.py) on GPT-2 and the BERT
// classifier, peft's initialisation and matching rules, errors, and user modules.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <nlohmann/json.hpp>

#include "lathe/ckpt/adapter.h"
#include "lathe/ckpt/state_dict.h"
#include "lathe/config/config.h"
#include "lathe/core/error.h"
#include "models/lora.h"
#include "models/registry.h"
#include "tests/support.h"

using lathe::ConfigError;
using lathe::testing::expect_error;
using lathe::testing::TempDir;
namespace zoo = lathe::models;
namespace fs = std::filesystem;

namespace {

/// Max abs difference the outputs and gradients must stay within (fp32, CPU, one thread).
constexpr double kTol = 1e-5;

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

/// One parity case: a zoo model at test size (the sizes lora_oracle.py builds), its LoRA keys.
struct LoraCase {
  std::string name, model;
  std::vector<std::string> options;  ///< model.* keys, lora.* and head included
  std::vector<std::string> targets;
};

std::vector<LoraCase> cases() {
  return {
      {"gpt2", "gpt2",
       {"vocab_size=64", "n_positions=32", "n_embd=32", "n_layer=2", "n_head=4", "dropout=0",
        "lora.targets=[c_attn,c_proj]", "lora.rank=4", "lora.alpha=8"},
       {"c_attn", "c_proj"}},
      {"bert_classifier", "bert_classifier",
       {"vocab_size=64", "hidden_size=32", "num_hidden_layers=2", "num_attention_heads=4",
        "intermediate_size=64", "max_position_embeddings=32", "hidden_dropout_prob=0",
        "attention_probs_dropout_prob=0", "num_labels=3", "lora.targets=[query,value]",
        "lora.rank=4", "lora.alpha=8", "head=[classifier.*]"},
       {"query", "value"}},
  };
}

/// The model section of `c` with `extra` keys, resolved as a run resolves it.
lathe::config::ModelSection section(const LoraCase& c, std::vector<std::string> extra = {}) {
  auto options = c.options;
  options.insert(options.end(), extra.begin(), extra.end());
  auto s = lathe::config::parse_model_section(c.model, options);
  lathe::ckpt::resolve_lora(s, "test");
  return s;
}

/// The model of `c` without adapters (the sizes only).
torch::nn::AnyModule plain_model(const LoraCase& c) {
  auto s = lathe::config::parse_model_section(c.model, c.options);
  s.lora = {};
  s.head.clear();
  return zoo::build_model(s);
}

at::Tensor input_ids() {
  at::Tensor ids = at::randint(1, 64, {3, 10});  // (B, T)
  ids.index_put_({1, at::indexing::Slice(6)}, 0);  // padding for BERT (pad id 0)
  return ids;
}

/// LoraOptions adapting the layers named `targets`.
zoo::LoraOptions named(std::vector<std::string> targets, int64_t rank = 8, double alpha = 8,
                       double dropout = 0) {
  zoo::LoraOptions o;
  o.targets = std::move(targets);
  o.rank = rank;
  o.alpha = alpha;
  o.dropout = dropout;
  return o;
}

/// LoraOptions adapting the layers whose whole path matches `regex`.
zoo::LoraOptions matching(std::string regex) {
  zoo::LoraOptions o;
  o.target_regex = std::move(regex);
  return o;
}

/// Writes what lora_oracle.py reads for case `c` into dir/<c.name>.
void write_case(const fs::path& dir, const LoraCase& c) {
  const fs::path out = dir / c.name;
  fs::create_directories(out);
  at::manual_seed(0);
  torch::nn::AnyModule model = plain_model(c);
  {
    torch::NoGradGuard no_grad;  // O(1) logits, so that differences mean something
    for (auto& p : model.ptr()->parameters())
      if (p.dim() >= 2) p.normal_(0, 0.2);
  }
  lathe::ckpt::save_weights(*model.ptr(), out / "base.safetensors");
  const auto s = section(c);
  lathe::ckpt::apply_lora_config(*model.ptr(), s, /*load_weights=*/false);
  {
    torch::NoGradGuard no_grad;  // a "trained" adapter: B = 0 would make A's gradient zero
    for (auto& [name, p] : zoo::lora_parameters(*model.ptr())) p.normal_(0, 0.1);
  }
  lathe::ckpt::save_adapter(*model.ptr(), out / "lathe", s);
  model.ptr()->eval();
  const at::Tensor ids = input_ids();
  const at::Tensor output = model.forward<at::Tensor>(ids);
  const at::Tensor probe = at::randn_like(output);
  (output * probe).mean().backward();  // a loss: a mean over the outputs
  lathe::ckpt::NamedTensors io = {
      {"input", ids}, {"probe", probe}, {"output", output.detach()}};
  for (const auto& item : model.ptr()->named_parameters())
    if (item.value().requires_grad())
      io.emplace_back("grad.base_model.model." + item.key(), item.value().grad());
  lathe::ckpt::save_safetensors(out / "io.safetensors", io);
  zoo::merge_lora(*model.ptr());
  lathe::ckpt::save_weights(*model.ptr(), out / "merged.safetensors");
  lathe::testing::write_text(
      out / "spec.json",
      nlohmann::json{{"model", c.model}, {"targets", c.targets}, {"r", 4}, {"alpha", 8}}.dump());
}

}  // namespace

TEST(Lora, MatchesPeftOnGpt2AndBertClassifierBothWays) {
  at::set_num_threads(1);
  TempDir dir;
  std::string names;
  for (const auto& c : cases()) {
    write_case(dir.path(), c);
    names += " " + c.name;
  }
  lathe::testing::run_parity("lora_oracle.py", dir.path().string() + names);
  const auto result = nlohmann::json::parse(lathe::testing::read_text(dir / "result.json"));
  for (const auto& c : cases()) {
    SCOPED_TRACE(c.name);
    const auto& r = result.at(c.name);
    std::cout << c.name << " vs peft: " << r.dump() << "\n";
    // peft adapts the same modules for the same targets (gpt2: 2 blocks × c_attn, attn.c_proj,
    // mlp.c_proj; bert: 2 layers × query, value).
    EXPECT_TRUE(r.at("adapted_equal").get<bool>());
    EXPECT_EQ(r.at("adapted").get<int>(), c.model == "gpt2" ? 6 : 4);
    EXPECT_LE(r.at("output").get<double>(), kTol);
    EXPECT_TRUE(r.at("grad_names_equal").get<bool>());  // the same tensors train
    EXPECT_LE(r.at("grads").get<double>(), kTol);
    EXPECT_LE(r.at("grads").get<double>() / r.at("grad_scale").get<double>(), kTol);  // relative
    EXPECT_LE(r.at("merged").get<double>(), 1e-6);  // merge_and_unload()'s weights

    // The other way: the adapter peft saved (save_pretrained) loads into lathe, which then
    // computes peft's output. Its adapter_config.json says the targets, rank and alpha.
    torch::nn::AnyModule model = plain_model(c);
    lathe::ckpt::load_weights(*model.ptr(), dir / c.name / "base.safetensors");
    std::vector<std::string> keys = {"lora.adapter=" + (dir / c.name / "peft").string()};
    if (c.model == "bert_classifier") keys.push_back("head=[classifier.*]");
    auto s = lathe::config::parse_model_section(c.model, [&] {
      std::vector<std::string> o;
      for (const auto& k : c.options)
        if (k.rfind("lora.", 0) != 0 && k.rfind("head=", 0) != 0) o.push_back(k);
      o.insert(o.end(), keys.begin(), keys.end());
      return o;
    }());
    lathe::ckpt::resolve_lora(s, "test");
    EXPECT_EQ(s.lora.rank, 4);
    EXPECT_EQ(s.lora.alpha, 8);
    auto targets = s.lora.targets;
    std::sort(targets.begin(), targets.end());
    EXPECT_EQ(targets, c.targets);
    lathe::ckpt::apply_lora_config(*model.ptr(), s, /*load_weights=*/true);
    model.ptr()->eval();
    torch::NoGradGuard no_grad;
    const at::Tensor ids =  // the input write_case used, which peft's output is for
        lathe::ckpt::load_safetensors(dir / c.name / "io.safetensors").tensors.at(0).second;
    const at::Tensor peft_out =
        lathe::ckpt::load_safetensors(dir / c.name / "peft_io.safetensors").tensors.at(0).second;
    const double d = max_diff(model.forward<at::Tensor>(ids), peft_out);
    std::cout << c.name << ": lathe with peft's adapter vs peft: " << d << "\n";
    EXPECT_LE(d, kTol);
  }
}

TEST(Lora, InitialisesAsPeftFreezesTheBaseAndMergesBack) {
  at::manual_seed(0);
  const LoraCase c = cases()[1];  // the BERT classifier
  torch::nn::AnyModule model = plain_model(c);
  model.ptr()->eval();
  const at::Tensor ids = input_ids();
  const at::Tensor before = model.forward<at::Tensor>(ids).detach();
  const auto report = zoo::apply_lora(*model.ptr(), named({"query", "value"}, 4, 16, 0.1));
  EXPECT_EQ(report.adapted, (std::vector<std::string>{
                                "bert.encoder.layer.0.attention.self.query",
                                "bert.encoder.layer.0.attention.self.value",
                                "bert.encoder.layer.1.attention.self.query",
                                "bert.encoder.layer.1.attention.self.value"}));
  EXPECT_EQ(report.adapter_parameters, 4 * (4 * 32 + 32 * 4));
  // lora_A: kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in)); lora_B: zeros.
  for (const auto& [name, p] : zoo::lora_parameters(*model.ptr())) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(p.requires_grad());
    if (name.ends_with("lora_B.weight")) {
      EXPECT_EQ(p.abs().max().item<float>(), 0.0f);
    } else {
      EXPECT_LE(p.abs().max().item<double>(), 1.0 / std::sqrt(32.0));
      EXPECT_GT(p.abs().max().item<double>(), 0.5 / std::sqrt(32.0));
    }
  }
  int64_t trainable = 0;
  for (const auto& item : model.ptr()->named_parameters())
    if (item.value().requires_grad()) {
      ++trainable;
      EXPECT_NE(item.key().find(".lora_"), std::string::npos) << item.key();
    }
  EXPECT_EQ(trainable, 8);
  // B = 0: the output is unchanged; dropout applies in training only (eval output equal).
  EXPECT_EQ(max_diff(model.forward<at::Tensor>(ids), before), 0.0);
  // Trained adapters change the output; merging keeps it and removes the adapters.
  {
    torch::NoGradGuard no_grad;
    for (auto& [name, p] : zoo::lora_parameters(*model.ptr())) p.normal_(0, 0.5);
  }
  const at::Tensor adapted = model.forward<at::Tensor>(ids).detach();
  EXPECT_GT(max_diff(adapted, before), 1e-3);
  zoo::merge_lora(*model.ptr());
  EXPECT_FALSE(zoo::has_lora(*model.ptr()));
  EXPECT_LE(max_diff(model.forward<at::Tensor>(ids), adapted), kTol);
  torch::nn::AnyModule plain = plain_model(c);  // the same names: the merged state loads strictly
  EXPECT_TRUE(lathe::ckpt::load_state_dict(*plain.ptr(), lathe::ckpt::state_dict(*model.ptr()),
                                           true, "merged")
                  .clean());
}

TEST(Lora, RegexTargetsAndErrorsNameTheModules) {
  const LoraCase c = cases()[1];
  {
    torch::nn::AnyModule model = plain_model(c);
    const auto report =
        zoo::apply_lora(*model.ptr(), matching(R"(.*layer\.1\..*(query|key))"));
    EXPECT_EQ(report.adapted, (std::vector<std::string>{
                                  "bert.encoder.layer.1.attention.self.query",
                                  "bert.encoder.layer.1.attention.self.key"}));
  }
  const auto fails = [&](const zoo::LoraOptions& o, std::initializer_list<std::string> words) {
    torch::nn::AnyModule model = plain_model(c);
    expect_error<ConfigError>([&] { zoo::apply_lora(*model.ptr(), o); }, words);
  };
  fails(named({"quer"}),
        {"model.lora.targets: 'quer' matches no module", "did you mean 'query'?", "value",
         "bert.encoder.layer.0.attention.self.query"});
  fails(named({"attention"}), {"'bert.encoder.layer.0.attention'", "cannot carry an adapter"});
  fails(matching("query"), {"'query' matches no module path", "a whole path"});
  fails(matching("(query"), {"'(query' is not a regular expression"});
  fails(named({"query"}, 0), {"model.lora.rank = 0"});
  // Config keys: the section's own names, checked like every section.
  expect_error<ConfigError>(
      [&] { lathe::config::parse_model_section("bert", {"lora.rnak=4", "lora.targets=[query]"}); },
      {"unknown key 'model.lora.rnak'", "did you mean 'model.lora.rank'"});
  expect_error<ConfigError>(
      [&] {
        lathe::config::parse_config(
            "data: {path: x}\nmodel: {name: bert, lora: {rank: 4}}\n", "run.yaml");
      },
      {"model.lora sets rank, alpha or dropout but no targets"});
}

namespace {

/// A user's module: lathe::models::Linear layers are adaptable, torch::nn::Linear ones are not.
struct UserNetImpl : torch::nn::Module {
  UserNetImpl() {
    hidden = register_module("hidden", zoo::Linear(zoo::LinearOptions(6, 8)));
    out = register_module("out", zoo::Linear(zoo::LinearOptions(8, 2)));
    plain = register_module("plain", torch::nn::Linear(8, 8));
  }
  at::Tensor forward(const at::Tensor& x) { return out(at::relu(hidden(x))); }
  zoo::Linear hidden{nullptr}, out{nullptr};
  torch::nn::Linear plain{nullptr};
};
TORCH_MODULE(UserNet);

}  // namespace

TEST(Lora, AUserModuleBuiltFromLatheLinearLayersIsAdaptable) {
  at::manual_seed(0);
  UserNet net;
  const at::Tensor x = at::randn({5, 6});
  const auto report = zoo::apply_lora(*net, named({"hidden", "out"}, 2));
  EXPECT_EQ(report.adapted, (std::vector<std::string>{"hidden", "out"}));
  {
    torch::NoGradGuard no_grad;
    for (auto& [name, p] : zoo::lora_parameters(*net)) p.normal_(0, 0.5);
  }
  // y = x W^T + b + (x A^T B^T) · alpha / r, by hand.
  const at::Tensor h = at::relu(at::linear(x, net->hidden->weight, net->hidden->bias) +
                                at::linear(at::linear(x, net->hidden->lora_A->weight),
                                           net->hidden->lora_B->weight) *
                                    4.0);
  const at::Tensor expected = at::linear(h, net->out->weight, net->out->bias) +
                              at::linear(at::linear(h, net->out->lora_A->weight),
                                         net->out->lora_B->weight) *
                                  4.0;
  EXPECT_LE(max_diff(net->forward(x), expected), 1e-6);
  UserNet other;
  expect_error<ConfigError>([&] { zoo::apply_lora(*other, named({"plain"})); },
                            {"'plain' is a torch::nn::LinearImpl", "build it as lathe::models::Linear"});
}
