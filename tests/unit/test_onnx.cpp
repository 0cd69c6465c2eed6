// ONNX export: every zoo model against onnxruntime at two input sizes, user modules, errors,
// metadata, Triton layout and the CLI.
#include <algorithm>
#include <fstream>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/activation.h>

#include "lathe/ckpt/safetensors.h"
#include "lathe/config/config.h"
#include "lathe/core/error.h"
#include "lathe/onnx/export.h"
#include "lathe/onnx/ir.h"
#include "models/registry.h"
#include "models/signature.h"
#include "tests/support.h"

namespace {

using lathe::ExportError;
using lathe::testing::TempDir;
using lathe::testing::expect_error;
namespace onnx = lathe::onnx;
namespace zoo = lathe::models;

/// Tolerance of ONNX against LibTorch in fp32 (the bar).
constexpr double kTolerance = 1e-4;

struct ZooCase {
  std::string name;
  std::vector<std::string> options;
};

/// Every zoo model at a size that exports and runs in a second or two.
std::vector<ZooCase> zoo_cases() {
  const std::vector<std::string> bert = {"vocab_size=40", "hidden_size=16",
                                         "num_hidden_layers=2", "num_attention_heads=2",
                                         "intermediate_size=32", "max_position_embeddings=32"};
  std::vector<std::string> bert_plain = bert;
  bert_plain.push_back("add_pooling_layer=true");
  std::vector<std::string> bert_cls = bert;
  bert_cls.push_back("num_labels=3");
  return {
      {"convnet", {"num_classes=4", "channels=[4, 8]", "hidden=16"}},
      {"resnet18", {"num_classes=4", "small_input=true"}},
      {"resnet34", {"num_classes=4", "small_input=true", "layers=[1, 1, 1, 1]"}},
      {"resnet50", {"num_classes=4", "small_input=true", "layers=[1, 1, 1, 1]"}},
      {"resnet101", {"num_classes=4", "small_input=true", "layers=[1, 2, 1, 1]"}},
      {"resnet152", {"num_classes=4", "small_input=true", "layers=[1, 1, 2, 1]"}},
      {"mobilenet_v2", {"num_classes=4", "width_mult=0.25"}},
      {"lstm_classifier",
       {"vocab_size=30", "hidden_size=8", "num_layers=2", "bidirectional=true", "pad_id=0"}},
      {"gru_classifier", {"input_size=3", "hidden_size=8", "num_layers=2", "num_classes=5"}},
      {"lstm_lm", {"vocab_size=30", "embedding_dim=8", "hidden_size=8", "tie_weights=true"}},
      {"gru_lm", {"vocab_size=30", "embedding_dim=8", "hidden_size=12", "num_layers=2"}},
      {"gpt2", {"vocab_size=40", "n_positions=32", "n_embd=16", "n_layer=2", "n_head=2"}},
      // grouped keys/values, Qwen2's biases, a window on the second layer (a band mask), tied
      {"llama",
       {"vocab_size=40", "hidden_size=16", "intermediate_size=24", "num_hidden_layers=2",
        "num_attention_heads=4", "num_key_value_heads=2", "qkv_bias=true", "sliding_window=3",
        "max_window_layers=1", "tie_word_embeddings=true"}},
      {"bert_classifier", bert_cls},
      {"bert", bert_plain},
      {"vit",
       {"image_size=32", "patch_size=8", "num_layers=2", "num_heads=2", "hidden_dim=16",
        "mlp_dim=32", "num_classes=4"}},
      {"mlp", {"in_features=5", "hidden=[8, 8]", "out_features=3", "batch_norm=true",
               "activation=gelu"}},
      {"linear_regression", {"in_features=5"}},
      {"logistic_regression", {"in_features=5", "out_features=3"}},
      {"lasso", {"in_features=5"}},
      {"ridge", {"in_features=5"}},
  };
}

/// BatchNorm statistics away from their defaults (0, 1), so that they matter in the test.
void randomize_buffers(torch::nn::Module& m) {
  for (auto& b : m.named_buffers(/*recurse=*/true)) {
    const std::string& name = b.key();
    if (name.size() >= 12 && name.compare(name.size() - 12, 12, "running_mean") == 0) {
      b.value().uniform_(-0.5, 0.5);
    } else if (name.size() >= 11 && name.compare(name.size() - 11, 11, "running_var") == 0) {
      b.value().uniform_(0.5, 2.0);
    }
  }
}

/// Inputs for `sig` with batch `b` and sequence `t`: ids in range, row i ending in i pad ids
/// (0); a mask whose row i pads its last i positions (so padding and packed lengths are
/// exercised); images with dynamic height and width (ResNet, MobileNetV2) 8 px taller and
/// narrower for t < 8, else 8 px shorter and wider.
std::vector<at::Tensor> sized_inputs(const zoo::ModelSignature& sig, int64_t b, int64_t t) {
  std::vector<at::Tensor> out;
  for (const auto& in : sig.inputs) {
    std::vector<int64_t> shape = in.shape;
    shape[0] = b;
    if (in.dynamic.count(1) != 0) shape[1] = t;
    if (in.dynamic.count(2) != 0) {  // images of any size: other, non-square sides per case
      const int64_t d = t < 8 ? 8 : -8;
      shape[2] += d;
      shape[3] -= d;
    }
    if (in.id_limit == 2) {
      at::Tensor mask = at::ones(shape, at::kLong);
      for (int64_t i = 1; i < b; ++i) mask[i].narrow(0, t - std::min(i, t - 1), std::min(i, t - 1)).zero_();
      out.push_back(mask);
    } else if (in.id_limit > 0) {
      // Row i ends in i pad tokens (id 0), as the mask does: models with a pad_id (the packed
      // LSTM) see sequences of every length, not only full ones.
      at::Tensor ids = at::randint(1, in.id_limit, shape, at::kLong);
      if (shape.size() == 2)
        for (int64_t i = 1; i < b; ++i) {
          const int64_t pads = std::min(i, t - 1);
          ids[i].narrow(0, t - pads, pads).zero_();
        }
      out.push_back(ids);
    } else {
      out.push_back(at::randn(shape));
    }
  }
  return out;
}

at::Tensor run_forward(torch::nn::AnyModule& m, const std::vector<at::Tensor>& inputs) {
  return inputs.size() == 1 ? m.forward<at::Tensor>(inputs[0])
                            : m.forward<at::Tensor>(inputs[0], inputs[1]);
}

/// Runs tests/parity/onnx_oracle.py on a manifest; returns its JSON lines by model name.
std::map<std::string, nlohmann::json> run_oracle(const std::filesystem::path& manifest) {
  const std::string out = lathe::testing::run_parity("onnx_oracle.py", manifest.string());
  std::map<std::string, nlohmann::json> results;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] != '{') continue;
    auto j = nlohmann::json::parse(line);
    results[j["name"].get<std::string>()] = j;
  }
  return results;
}

/// Exports `model` (example at the signature's sizes), writes two cases of other sizes with
/// LibTorch's outputs, and adds the model to `manifest`.
void export_with_cases(const std::string& name, torch::nn::AnyModule& model,
                       const std::filesystem::path& dir, nlohmann::json& manifest,
                       bool fp16 = false) {
  const zoo::ModelSignature sig = zoo::model_signature(*model.ptr());
  onnx::ExportOptions o;
  o.fp16 = fp16;
  for (const auto& in : sig.inputs) o.inputs.push_back({in.name, in.dynamic});
  o.output_names = {sig.output};
  const auto file = dir / (name + ".onnx");
  onnx::export_model(model, zoo::example_inputs(sig, 7), file, o);

  nlohmann::json entry{{"name", name}, {"onnx", file.string()}, {"cases", nlohmann::json::array()}};
  // Two sizes other than the traced (2, 8): batch 1 and 5; sequence 5 and 13.
  const std::vector<std::pair<int64_t, int64_t>> sizes{{1, 5}, {5, 13}};
  for (size_t c = 0; c < sizes.size(); ++c) {
    const auto inputs = sized_inputs(sig, sizes[c].first, sizes[c].second);
    lathe::ckpt::NamedTensors tensors;
    for (size_t i = 0; i < inputs.size(); ++i) tensors.emplace_back(sig.inputs[i].name, inputs[i]);
    {
      at::NoGradGuard no_grad;
      tensors.emplace_back("expected", run_forward(model, inputs).contiguous());
    }
    const auto case_file = dir / fmt::format("{}.case{}.safetensors", name, c);
    lathe::ckpt::save_safetensors(case_file, tensors);
    entry["cases"].push_back(case_file.string());
  }
  manifest["models"].push_back(entry);
}

TEST(OnnxExport, EveryZooModelMatchesOnnxruntimeAtTwoSizes) {
  const auto cases = zoo_cases();
  // Every torch-module entry of the table (estimators such as xgboost are not torch modules).
  const auto& specs = zoo::model_specs();
  const auto torch_models = std::count_if(specs.begin(), specs.end(),
                                          [](const auto& s) { return !s.estimator; });
  ASSERT_EQ(static_cast<std::ptrdiff_t>(cases.size()), torch_models) << "a zoo model has no export case";
  TempDir dir;
  nlohmann::json manifest{{"models", nlohmann::json::array()}};
  at::manual_seed(0);
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto model = zoo::build_model(lathe::config::parse_model_section(c.name, c.options));
    randomize_buffers(*model.ptr());
    model.ptr()->eval();
    ASSERT_NO_THROW(export_with_cases(c.name, model, dir.path(), manifest));
  }
  std::ofstream(dir / "manifest.json") << manifest.dump(1);
  const auto results = run_oracle(dir / "manifest.json");
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    ASSERT_EQ(results.count(c.name), 1u) << "the oracle gave no result";
    const auto& r = results.at(c.name);
    ASSERT_EQ(r["diffs"].size(), 2u);
    for (const auto& d : r["diffs"]) EXPECT_LE(d.get<double>(), kTolerance);
    EXPECT_EQ(r["unused_initializers"].get<int64_t>(), 0) << "initializers no node reads";
    std::printf("  %-20s max |onnxruntime - libtorch| = %.2e, %.2e  (input shapes %s)\n",
                c.name.c_str(), r["diffs"][0].get<double>(), r["diffs"][1].get<double>(),
                r["input_shapes"].dump().c_str());
  }
}

TEST(OnnxExport, Fp16ExportsStayWithinHalfPrecisionOfLibTorch) {
  // float16 weights and compute, float32 inputs and outputs; bar 2e-2 on outputs of size ~1.
  TempDir dir;
  nlohmann::json manifest{{"models", nlohmann::json::array()}};
  at::manual_seed(0);
  std::vector<std::string> names;
  for (const auto& c : zoo_cases()) {
    if (c.name != "convnet" && c.name != "resnet18" && c.name != "gpt2" &&
        c.name != "bert_classifier" && c.name != "lstm_lm") {
      continue;
    }
    names.push_back(c.name);
    auto model = zoo::build_model(lathe::config::parse_model_section(c.name, c.options));
    randomize_buffers(*model.ptr());
    model.ptr()->eval();
    ASSERT_NO_THROW(export_with_cases(c.name, model, dir.path(), manifest, /*fp16=*/true));
  }
  std::ofstream(dir / "manifest.json") << manifest.dump(1);
  const auto results = run_oracle(dir / "manifest.json");
  for (const auto& name : names) {
    SCOPED_TRACE(name);
    ASSERT_EQ(results.count(name), 1u);
    for (const auto& d : results.at(name)["diffs"]) EXPECT_LE(d.get<double>(), 2e-2);
    std::printf("  fp16 %-16s max |onnxruntime - libtorch fp32| = %.2e, %.2e\n", name.c_str(),
                results.at(name)["diffs"][0].get<double>(), results.at(name)["diffs"][1].get<double>());
  }
}

// ---- a user's own module --------------------------------------------------------------------

/// Not a zoo class: a small CNN with a residual add, a softmax over a reshaped map and a
/// size-dependent reshape written with x.size(0).
struct UserNetImpl : torch::nn::Module {
  UserNetImpl() {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 4, 3).padding(1)));
    head = register_module("head", torch::nn::Linear(4 * 8 * 8, 5));
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor y = at::relu(conv->forward(x)) + x.mean(1, /*keepdim=*/true);  // (B, 4, 8, 8)
    y = y.view({x.size(0), 4, -1}).softmax(-1).view({x.size(0), -1});        // (B, 256)
    return head->forward(y).tanh();                                           // (B, 5)
  }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(UserNet);

TEST(OnnxExport, UserModuleWithSizeDependentReshapeHasADynamicBatch) {
  TempDir dir;
  at::manual_seed(1);
  UserNet net;
  torch::nn::AnyModule any(net);
  onnx::ExportOptions o;
  o.inputs = {{"x", {{0, "batch"}}}};
  o.output_names = {"y"};
  const auto report = onnx::export_model(any, {at::randn({2, 3, 8, 8})}, dir / "user.onnx", o);
  EXPECT_EQ(report.inputs[0].shape, (std::vector<std::string>{"batch", "3", "8", "8"}));
  EXPECT_EQ(report.outputs[0].shape, (std::vector<std::string>{"batch", "5"}));

  nlohmann::json manifest{{"models", nlohmann::json::array()}};
  nlohmann::json entry{{"name", "user"}, {"onnx", (dir / "user.onnx").string()}, {"cases", nlohmann::json::array()}};
  for (int64_t b : {1, 6}) {
    const at::Tensor x = at::randn({b, 3, 8, 8});
    at::NoGradGuard no_grad;
    const auto file = dir / fmt::format("user{}.safetensors", b);
    lathe::ckpt::save_safetensors(file, {{"x", x}, {"expected", net->forward(x).contiguous()}});
    entry["cases"].push_back(file.string());
  }
  manifest["models"].push_back(entry);
  std::ofstream(dir / "manifest.json") << manifest.dump();
  const auto results = run_oracle(dir / "manifest.json");
  ASSERT_EQ(results.count("user"), 1u);
  for (const auto& d : results.at("user")["diffs"]) EXPECT_LE(d.get<double>(), kTolerance);
}

/// A module using an operation with no translation: the error names the operation and the
/// module it sits in, and no file is written.
struct OddNetImpl : torch::nn::Module {
  OddNetImpl() { fc = register_module("fc", torch::nn::Linear(4, 4)); }
  at::Tensor forward(const at::Tensor& x) { return at::erfinv(fc->forward(x).tanh() * 0.5); }
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(OddNet);

TEST(OnnxExport, UnsupportedOperationNamesItAndItsModuleAndWritesNothing) {
  TempDir dir;
  OddNet net;
  torch::nn::AnyModule any(net);
  expect_error<ExportError>(
      [&] { onnx::export_model(any, {at::randn({2, 4})}, dir / "odd.onnx"); },
      {"odd.onnx", "aten::erfinv", "module 'fc'", "no ONNX opset 17 translation"});
  EXPECT_FALSE(std::filesystem::exists(dir / "odd.onnx"));
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(OnnxExport, OtherOpsetsAndBadAxesAreRefused) {
  TempDir dir;
  torch::nn::AnyModule any(torch::nn::Linear(3, 2));
  onnx::ExportOptions o;
  o.opset = 18;
  expect_error<ExportError>([&] { onnx::export_model(any, {at::randn({2, 3})}, dir / "a.onnx", o); },
                            {"opset 18", "opset 17"});
  o.opset = 17;
  o.inputs = {{"x", {{2, "batch"}}}};
  expect_error<ExportError>([&] { onnx::export_model(any, {at::randn({2, 3})}, dir / "a.onnx", o); },
                            {"input 'x'", "dynamic axis 2"});
}

TEST(OnnxExport, CheckerFailuresAreExportErrorsWithOnnxsMessage) {
  onnx::Model m;
  onnx::Node n;
  n.op_type = "Relu";
  n.inputs = {"missing"};
  n.outputs = {"y"};
  n.name = "relu";
  m.graph.nodes.push_back(n);
  m.graph.outputs.push_back({"y", onnx::DType::Float, {int64_t{2}}});
  expect_error<ExportError>([&] { onnx::serialize_checked(m, "bad.onnx"); },
                            {"bad.onnx", "ONNX checker", "missing"});
}

TEST(OnnxExport, TritonRepositoryHasTheModelAndADynamicBatchConfig) {
  TempDir dir;
  torch::nn::AnyModule any(torch::nn::Linear(3, 2));
  onnx::ExportOptions o;
  o.inputs = {{"features", {{0, "batch"}}}};
  o.output_names = {"scores"};
  const auto report = onnx::export_model(any, {at::randn({2, 3})}, dir / "m.onnx", o);
  const auto entry = onnx::write_triton_repository(report, dir / "repo", "tiny", 32);
  EXPECT_TRUE(std::filesystem::exists(entry / "1" / "model.onnx"));
  const std::string config = lathe::testing::read_text(entry / "config.pbtxt");
  for (const char* part : {"name: \"tiny\"", "backend: \"onnxruntime\"", "max_batch_size: 32",
                           "name: \"features\"", "data_type: TYPE_FP32", "dims: [ 3 ]",
                           "name: \"scores\"", "dims: [ 2 ]", "dynamic_batching"}) {
    EXPECT_NE(config.find(part), std::string::npos) << part << " missing in:\n" << config;
  }
  // A fixed batch cannot go to Triton with max_batch_size > 0.
  o.inputs = {{"features", {}}};
  const auto fixed = onnx::export_model(any, {at::randn({2, 3})}, dir / "f.onnx", o);
  expect_error<ExportError>([&] { onnx::write_triton_repository(fixed, dir / "repo", "f"); },
                            {"f.onnx", "axis 0", "features", "--dynamic batch"});
}

TEST(OnnxExport, SupportedOperationsListTheCoreLayers) {
  const auto ops = onnx::supported_operations();
  for (const char* op : {"aten::linear", "aten::_convolution", "aten::batch_norm",
                         "aten::layer_norm", "aten::lstm", "aten::gru",
                         "aten::scaled_dot_product_attention", "aten::embedding"}) {
    EXPECT_NE(std::find(ops.begin(), ops.end(), op), ops.end()) << op;
  }
}

}  // namespace
