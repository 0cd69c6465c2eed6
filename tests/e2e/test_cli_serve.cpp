// `lathe predict` and `lathe generate` end to end: output formats, exit codes and messages, a
// large CSV streamed in bounded memory (the child's peak RSS), seeded sampling from the command;
// `lathe export --int8` and `lathe eval --save-inputs`.
#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tests/support.h"

extern char** environ;

using lathe::testing::run_command;
using lathe::testing::TempDir;
using lathe::testing::write_text;

namespace {

const std::string kLathe = lathe::testing::lathe_binary();

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

/// Trains a small CSV classifier (columns a, b, c -> y) into dir/runs/small and returns its folder.
std::filesystem::path csv_run(const TempDir& dir) {
  std::string rows = "a,b,c,y\n";
  for (int i = 0; i < 200; ++i)
    rows += fmt::format("{:.3f},{:.3f},{},{}\n", (i % 17) / 17.0, (i % 13) / 13.0, "xyz"[i % 3],
                        (i % 17) / 17.0 + (i % 13) / 13.0 > 1 ? "p" : "q");
  write_text(dir / "small.csv", rows);
  write_text(dir / "run.yaml", "run: {name: small, dir: " + (dir / "runs").string() +
                                   ", device: cpu}\ndata: {source: csv, path: " +
                                   (dir / "small.csv").string() +
                                   ", target: y, num_workers: 0}\nmodel: {name: mlp, hidden: [8]}\n"
                                   "trainer: {max_epochs: 1, tensorboard: false}\n");
  const auto r = run_command(kLathe + " train " + (dir / "run.yaml").string());
  EXPECT_EQ(r.status, 0) << r.output;
  return dir / "runs" / "small";
}

/// What `command` prints on stdout (its log lines on stderr left out), and its exit status.
lathe::testing::CommandResult stdout_of(const std::string& command) {
  return run_command("(" + command + " 2>/dev/null)");
}

/// Runs `lathe ARGS...` with stdout and stderr to /dev/null; returns the exit status and the
/// child's peak resident set size in KiB (wait4's ru_maxrss).
std::pair<int, long> peak_rss_kib(std::vector<std::string> args) {
  args.insert(args.begin(), kLathe);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  EXPECT_EQ(posix_spawn(&pid, kLathe.c_str(), &actions, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  int status = 0;
  rusage usage{};
  ::wait4(pid, &status, 0, &usage);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, usage.ru_maxrss};
}

}  // namespace

TEST(CliServe, PredictStreamsALargeCsvInBoundedMemory) {
  TempDir dir;
  const auto run = csv_run(dir);
  // 60000 rows that each carry a 400-byte column the model does not use: 25 MB of text, which
  // read whole would take more than that again as cells. Streamed, the peak RSS is that of a
  // 100-row file (within 12 MiB: one batch's rows and the allocator's slack).
  const std::string note(400, 'n');
  for (const auto& [name, rows] : {std::pair{"few.csv", 100}, {"many.csv", 60000}}) {
    std::ofstream out(dir / name);
    out << "note,a,b,c\n";
    for (int i = 0; i < rows; ++i)
      out << note << ',' << (i % 10) / 10.0 << ',' << (i % 7) / 7.0 << ',' << "xyz"[i % 3] << '\n';
  }
  const auto few = peak_rss_kib({"predict", run.string(), (dir / "few.csv").string(),
                                 "--batch-size", "512", "-o", (dir / "few.csv.out.csv").string()});
  const auto many = peak_rss_kib({"predict", run.string(), (dir / "many.csv").string(),
                                  "--batch-size", "512", "-o", (dir / "many.out.csv").string()});
  ASSERT_EQ(few.first, 0);
  ASSERT_EQ(many.first, 0);
  EXPECT_GT(std::filesystem::file_size(dir / "many.csv"), 24'000'000u);
  EXPECT_LT(many.second - few.second, 12 * 1024)
      << "peak RSS " << few.second << " KiB for 100 rows, " << many.second << " KiB for 60000";
  // Every record answered, in order.
  std::ifstream answers(dir / "many.out.csv");
  std::string line, last;
  int64_t lines = 0;
  while (std::getline(answers, line)) {
    ++lines;
    last = line;
  }
  EXPECT_EQ(lines, 60001);
  EXPECT_EQ(last.substr(0, 6), "60000,");
}

TEST(CliServe, PredictWritesCsvOrJsonlAndErrorsNameTheFix) {
  TempDir dir;
  const auto run = csv_run(dir);
  write_text(dir / "new.csv", "c,b,a\nx,0.5,0.9\n\"y\",0.1,0.1\n");
  auto r = stdout_of(kLathe + " predict " + run.string() + " " + (dir / "new.csv").string() +
                     " --top-k 2");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "id,label_1,probability_1,label_2,probability_2\n1,")) << r.output;
  r = run_command(kLathe + " predict " + run.string() + " " + (dir / "new.csv").string() +
                  " -o " + (dir / "out.jsonl").string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "2 records answered (classification)")) << r.output;
  std::ifstream in(dir / "out.jsonl");
  std::string first;
  std::getline(in, first);
  const auto j = nlohmann::json::parse(first);
  EXPECT_EQ(j["id"], "1");
  EXPECT_TRUE(j["label"] == "p" || j["label"] == "q") << first;
  EXPECT_GT(j["probability"].get<double>(), 0.5);
  // export --preprocess: one input per raw column, the class name and probabilities out.
  r = run_command(kLathe + " export " + run.string() + " --preprocess -o " +
                  (dir / "small.onnx").string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "inputs a float[batch, 1]; b float[batch, 1]; c string[batch, 1]"
                                 " -> outputs label string[batch]; probabilities float[batch, 2]; "
                                 "logits float[batch, 2]"))
      << r.output;
  // Usage: an output format predict does not write.
  r = run_command(kLathe + " predict " + run.string() + " " + (dir / "new.csv").string() +
                  " -o " + (dir / "out.txt").string());
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "write the answers to a .csv or .jsonl file")) << r.output;
  // Data: a column the run was trained on is missing (exit 1, file, column, what to do); no
  // half-written output file is left.
  write_text(dir / "short.csv", "a,b\n1,2\n");
  r = run_command(kLathe + " predict " + run.string() + " " + (dir / "short.csv").string() +
                  " -o " + (dir / "short.out.csv").string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "short.csv:1: no column 'c', which the run was trained on"))
      << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "short.out.csv"));
  r = run_command(kLathe + " predict " + (dir / "nowhere").string() + " x.csv");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "no config.yaml here")) << r.output;
}

TEST(CliServe, GenerateFromAByteLevelLstmIsSeededAndTopK1IsGreedy) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 60; ++i) text += fmt::format("the cat sat on mat {}.\n", i % 10);
  write_text(dir / "corpus.txt", text);
  write_text(dir / "lm.yaml", "run: {name: lm, dir: " + (dir / "runs").string() +
                                  ", device: cpu}\ndata: {source: text, path: " +
                                  (dir / "corpus.txt").string() +
                                  ", seq_len: 16, num_workers: 0}\n"
                                  "model: {name: gru_lm, embedding_dim: 8, hidden_size: 16}\n"
                                  "trainer: {max_epochs: 1, tensorboard: false}\n");
  ASSERT_EQ(run_command(kLathe + " train " + (dir / "lm.yaml").string()).status, 0);
  const std::string gen = kLathe + " generate " + (dir / "runs" / "lm").string() +
                          " --prompt 'the ' --max-new-tokens 20";
  const auto a = stdout_of(gen + " --seed 4 --temperature 0.9 --top-p 0.95");
  ASSERT_EQ(a.status, 0) << a.output;
  EXPECT_EQ(a.output.substr(0, 4), "the ");
  EXPECT_EQ(a.output.size(), 4u + 20u + 1u);  // prompt, 20 bytes, newline
  EXPECT_EQ(stdout_of(gen + " --seed 4 --temperature 0.9 --top-p 0.95").output, a.output);
  EXPECT_EQ(stdout_of(gen + " --seed 8 --top-k 1").output, stdout_of(gen + " --greedy").output);
  const auto ids = run_command(gen + " --greedy --prompt-ids 116,104");
  EXPECT_EQ(ids.status, 2) << ids.output;  // both --prompt and --prompt-ids
  const auto wrong = run_command(kLathe + " generate " + (dir / "runs" / "lm").string() +
                                 " --prompt-ids 1,300");
  EXPECT_EQ(wrong.status, 2) << wrong.output;
  EXPECT_TRUE(contains(wrong.output, "prompt token 300 is outside the model's vocabulary of 256"))
      << wrong.output;
}

TEST(CliServe, Int8ExportPicksDynamicForAnMlpTakesStaticAndEvalSavesTheTestSplit) {
  TempDir dir;
  const std::string run = csv_run(dir).string();
  lathe::testing::CommandResult r;

  // No Conv: auto is dynamic.
  r = run_command(fmt::format("{} export {} -o {} --int8", kLathe, run, (dir / "d.onnx").string()));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "int8 dynamic: 2 Gemm quantized")) << r.output;
  // Static on request, calibrated on one training batch.
  r = run_command(fmt::format("{} export {} -o {} --int8 static --calibration-batches 1", kLathe,
                              run, (dir / "s.onnx").string()));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "int8 static: 2 Gemm quantized; calibrated on 1 batch ("))
      << r.output;
  EXPECT_TRUE(contains(r.output, "records) of the training split of")) << r.output;
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
