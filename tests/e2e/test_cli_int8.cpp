// `lathe export --int8` and `lathe eval --save-inputs` from the command line, on a small CSV MLP
// run: the modes it picks and is told, the log line saying what was quantized, the file's
// metadata, the test split written for onnxruntime, and the messages of bad uses.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tests/support.h"

using lathe::testing::run_command;
using lathe::testing::TempDir;
using lathe::testing::write_text;

namespace {

const std::string kLathe = lathe::testing::lathe_binary();

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST(CliInt8, ExportPicksDynamicForAnMlpTakesStaticAndSavesTheTestSplit) {
  TempDir dir;
  std::string rows = "a,b,c,y\n";
  for (int i = 0; i < 200; ++i)
    rows += fmt::format("{:.3f},{:.3f},{},{}\n", (i % 17) / 17.0, (i % 13) / 13.0, "xyz"[i % 3],
                        (i % 17) / 17.0 + (i % 13) / 13.0 > 1 ? "p" : "q");
  write_text(dir / "small.csv", rows);
  write_text(dir / "run.yaml", "run: {name: small, dir: " + (dir / "runs").string() +
                                   ", device: cpu}\ndata: {source: csv, path: " +
                                   (dir / "small.csv").string() +
                                   ", target: y, batch_size: 16, num_workers: 0}\n"
                                   "model: {name: mlp, hidden: [8]}\n"
                                   "trainer: {max_epochs: 1, tensorboard: false}\n");
  auto r = run_command(kLathe + " train " + (dir / "run.yaml").string());
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string run = (dir / "runs" / "small").string();

  // No Conv: auto is dynamic.
  r = run_command(fmt::format("{} export {} -o {} --int8", kLathe, run, (dir / "d.onnx").string()));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "int8 dynamic: 2 Gemm quantized")) << r.output;
  // Static on request, calibrated on 3 training batches of 16 rows.
  r = run_command(fmt::format("{} export {} -o {} --int8 static --calibration-batches 3", kLathe,
                              run, (dir / "s.onnx").string()));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "int8 static: 2 Gemm quantized; calibrated on 3 batches (48 "
                                 "records) of the training split of"))
      << r.output;
  // The metadata says how, read back by onnx in Python.
  r = run_command(fmt::format("{} {}/tests/parity/onnx_oracle.py --describe {}",
                              lathe::testing::python(), lathe::testing::source_dir(),
                              (dir / "s.onnx").string()));
  ASSERT_EQ(r.status, 0) << r.output;
  const auto meta = nlohmann::json::parse(r.output.substr(r.output.find('{')))["metadata"];
  const auto q = nlohmann::json::parse(meta["quantization"].get<std::string>());
  EXPECT_EQ(q["mode"], "static");
  EXPECT_EQ(q["quantized_activations"], 2);

  // The test split as the model gets it.
  r = run_command(fmt::format("{} eval {} --save-inputs {}", kLathe, run,
                              (dir / "test.safetensors").string()));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "test records)")) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir / "test.safetensors"));

  // Bad uses: an unknown mode, the run folder taken as the mode, int8 with fp16.
  r = run_command(fmt::format("{} export {} --int8 fast", kLathe, run));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--int8 fast: the modes are auto, dynamic and static")) << r.output;
  r = run_command(fmt::format("{} export --int8 {}", kLathe, run));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "write the run folder before --int8")) << r.output;
  r = run_command(fmt::format("{} export {} -o {} --int8 --fp16", kLathe, run,
                              (dir / "h.onnx").string()));
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "int8 and fp16 exclude each other")) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "h.onnx"));
}
