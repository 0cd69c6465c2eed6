// lathe export --int8: on a tiny CNN run (static QDQ, calibrated on training batches) and a tiny
// BERT classifier run (dynamic, MatMulInteger), onnxruntime scores the fp32 and the int8 file on
// the run's test split (tests/parity/int8_oracle.py): the int8 accuracy stays within a stated
// margin of the fp32 one, the file shrinks, and the graph holds the quantized operators.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "lathe/config/config.h"
#include "lathe/core/error.h"
#include "lathe/run/export.h"
#include "lathe/run/run.h"
#include "lathe/run/split.h"
#include "tests/support.h"

namespace {

using lathe::testing::expect_error;
using lathe::testing::TempDir;
using lathe::testing::write_text;
namespace run = lathe::run;
namespace fs = std::filesystem;
using lathe::onnx::Int8Mode;

/// Trains the run `yaml` describes into `dir` (quietly) and returns its folder.
fs::path train(const TempDir& dir, const std::string& yaml, int epochs) {
  const std::string common = fmt::format(
      "run: {{name: r, dir: {}, seed: 3, device: cpu}}\n"
      "trainer: {{max_epochs: {}, progress: none, tensorboard: false}}\n"
      "checkpoint: {{every_n_epochs: 0, save_best: false}}\n",
      dir.path().string(), epochs);
  return run::train_from_config(lathe::config::parse_config(common + yaml, "run.yaml")).run_dir;
}

/// Exports `r` in fp32 and in int8 (`mode`), writes its test split, and returns the oracle's
/// verdict (accuracies, sizes, operator counts, the quantization metadata).
nlohmann::json export_and_score(const TempDir& dir, const fs::path& r, Int8Mode mode) {
  run::RunExportOptions fp32;
  fp32.output = dir / "fp32.onnx";
  run::export_run(r, fp32);
  run::RunExportOptions o;
  o.output = dir / "int8.onnx";
  o.int8 = mode;
  o.calibration_batches = 4;
  const auto report = run::export_run(r, o);
  EXPECT_NE(report.quantization.find("int8 "), std::string::npos) << report.quantization;
  run::save_test_split(r, {}, dir / "test.safetensors");
  const std::string out = lathe::testing::run_parity(
      "int8_oracle.py", fmt::format("{} {} {}", (dir / "fp32.onnx").string(),
                                    (dir / "int8.onnx").string(),
                                    (dir / "test.safetensors").string()));
  fmt::print("int8_oracle.py: {}", out);
  return nlohmann::json::parse(out.substr(out.find('{')));
}

TEST(OnnxInt8, ConvnetStaticQdqStaysWithinTwoPointsOfFp32InOnnxruntime) {
  TempDir dir;
  const fs::path r = train(
      dir, fmt::format("data: {{path: {}, limit_train: 1500, limit_test: 1000, batch_size: 50,"
                       " num_workers: 0}}\n"
                       "model: {{name: convnet, channels: [8, 16], hidden: 32}}\n",
                       lathe::testing::kFashionMnist),
      2);
  // automatic picks static for a model with convolutions.
  const nlohmann::json v = export_and_score(dir, r, Int8Mode::automatic);
  SCOPED_TRACE(v.dump());
  EXPECT_EQ(v["records"], 1000);
  EXPECT_GT(v["fp32"].get<double>(), 0.6);  // a trained model: the comparison means something
  // Margin: 2 points of accuracy (20 of 1000 records).
  EXPECT_LT(std::abs(v["delta_points"].get<double>()), 2.0);
  EXPECT_LT(v["ratio"].get<double>(), 0.4);
  EXPECT_GT(v["ops"].value("QuantizeLinear", 0), 0);
  EXPECT_GT(v["ops"].value("DequantizeLinear", 0), 0);
  EXPECT_EQ(v["ops"].value("MatMulInteger", 0), 0);
  EXPECT_EQ(v["quantization"]["mode"], "static");
  // Both convolutions and both linear layers: inputs quantized, none weight-only.
  EXPECT_EQ(v["quantization"]["quantized_activations"], 4);
  EXPECT_EQ(v["quantization"]["weight_only_nodes"], 0);
  // Their results too (what runtimes fuse into QLinearConv / QGemm), after the batch norms were
  // folded into the convolutions.
  EXPECT_EQ(v["quantization"]["quantized_results"], 4);
  EXPECT_EQ(v["quantization"]["batch_norms_folded"], 2);
  EXPECT_EQ(v["ops"].value("BatchNormalization", 0), 0);
  EXPECT_NE(v["quantization"]["calibration"].get<std::string>().find("4 batches (200 records)"),
            std::string::npos);
}

TEST(OnnxInt8, BertClassifierDynamicHasMatMulIntegerAndStaysWithinMargin) {
  TempDir dir;
  // Two topics told apart by their words; the model is big enough for weights to dominate.
  const std::vector<std::string> a = {"goal", "match", "team", "score", "coach", "league"};
  const std::vector<std::string> b = {"vote", "party", "law", "court", "senate", "policy"};
  const std::vector<std::string> common = {"the", "a", "today", "news", "said", "new"};
  std::string vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n";
  for (const auto* words : {&a, &b, &common})
    for (const auto& w : *words) vocab += w + "\n";
  write_text(dir / "vocab.txt", vocab);
  std::string rows = "text,label\n";
  for (int i = 0; i < 400; ++i) {
    const auto& topic = i % 2 ? a : b;
    rows += fmt::format("{} {} {} {} {},{}\n", common[i % 6], topic[i % 6], common[(i / 6) % 6],
                        topic[(i / 3) % 6], (i % 5 == 0) ? (i % 2 ? b : a)[i % 6] : topic[i % 4],
                        i % 2 ? "sport" : "politics");
  }
  write_text(dir / "news.csv", rows);
  const fs::path r = train(
      dir, "data: {source: text_csv, path: " + (dir / "news.csv").string() + ", vocab: " +
               (dir / "vocab.txt").string() +
               ", target: label, max_length: 12, test_fraction: 0.3, batch_size: 16,"
               " num_workers: 0}\n"
               "model: {name: bert_classifier, hidden_size: 64, num_hidden_layers: 2,"
               " num_attention_heads: 4, intermediate_size: 256, max_position_embeddings: 16}\n",
      2);
  const nlohmann::json v = export_and_score(dir, r, Int8Mode::automatic);
  SCOPED_TRACE(v.dump());
  EXPECT_GT(v["fp32"].get<double>(), 0.8);
  // Margin: 2 points of accuracy, and 97% of the records get the same class in both files.
  EXPECT_LT(std::abs(v["delta_points"].get<double>()), 2.0);
  EXPECT_GT(v["agreement"].get<double>(), 0.97);
  EXPECT_LT(v["ratio"].get<double>(), 0.4);
  // Every linear layer: 2 × (q, k, v, attention output, intermediate, output) + the pooler + the
  // classifier.
  EXPECT_EQ(v["ops"].value("MatMulInteger", 0), 14);
  EXPECT_GT(v["ops"].value("DynamicQuantizeLinear", 0), 0);
  EXPECT_EQ(v["ops"].value("QuantizeLinear", 0), 0);
  EXPECT_EQ(v["quantization"]["mode"], "dynamic");

  // Static needs calibration inputs for every model input; a BERT takes two.
  run::RunExportOptions s;
  s.output = dir / "static.onnx";
  s.int8 = Int8Mode::static_qdq;
  expect_error<lathe::ConfigError>([&] { run::export_run(r, s); },
                                   {"--int8 static", "bert_classifier takes 2", "--int8 dynamic"});
  run::RunExportOptions half;
  half.output = dir / "half.onnx";
  half.int8 = Int8Mode::dynamic;
  half.fp16 = true;
  expect_error<lathe::ExportError>([&] { run::export_run(r, half); },
                                   {"half.onnx", "int8 and fp16 exclude each other"});
  EXPECT_FALSE(fs::exists(dir / "half.onnx"));
}

}  // namespace
