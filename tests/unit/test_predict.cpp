// lathe predict and generate in the run area: on a tiny trained run of each kind (idx images, CSV
// classification, CSV regression, text CSV) the answers to the test split's raw records equal
// the evaluation path's outputs and lathe eval's metrics; errors name what to fix; greedy and
// seeded generation equal transformers' GPT2LMHeadModel.generate token for token; the ONNX file
// of `lathe export --preprocess`, run in onnxruntime on the same raw records, gives predict's
// labels, probabilities and values.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/grad_mode.h>

#include <fstream>
#include <numeric>
#include <set>
#include <sstream>

#include "lathe/ckpt/torch_pickle.h"
#include "lathe/config/config.h"
#include "lathe/core/error.h"
#include "lathe/data/image.h"
#include "lathe/data/csv.h"
#include "lathe/data/idx.h"
#include "lathe/data/split.h"
#include "lathe/data/tokenizer.h"
#include "lathe/run/export.h"
#include "lathe/run/generate.h"
#include "lathe/run/predict.h"
#include "lathe/run/run.h"
#include "models/registry.h"
#include "tests/support.h"

namespace {

using lathe::testing::expect_error;
using lathe::testing::TempDir;
using lathe::testing::write_text;
namespace config = lathe::config;
namespace run = lathe::run;
namespace fs = std::filesystem;

/// Trains the run `yaml` describes into `dir` (quietly) and returns its folder.
fs::path train(const TempDir& dir, const std::string& yaml) {
  const std::string common = "run: {name: r, dir: " + dir.path().string() +
                             ", seed: 3, device: cpu}\n"
                             "trainer: {max_epochs: 2, progress: none, tensorboard: false}\n"
                             "checkpoint: {every_n_epochs: 0, save_best: false}\n";
  return run::train_from_config(config::parse_config(common + yaml, "run.yaml")).run_dir;
}

/// The model outputs (N, K) on the run's test split, computed as lathe eval computes them: the
/// run's loaders over its config's data, the model built from config.yaml, its weights.
at::Tensor eval_outputs(const fs::path& run_dir) {
  config::RunConfig cfg = config::load_config(run_dir / "config.yaml");
  run::RunLoaders data = run::make_run_loaders(cfg.data, cfg.run.seed);
  run::resolve_from_data(cfg, data);
  auto model = lathe::models::build_model(cfg.model);
  lathe::ckpt::load_weights_any(*model.ptr(), run_dir / "model.safetensors", true);
  model.ptr()->eval();
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> outs;
  for (int64_t i = 0; i < data.test->num_batches(); ++i)
    outs.push_back(model.forward<at::Tensor>(data.test->batch(i).inputs));
  return at::cat(outs).to(at::kFloat);
}

std::vector<run::Prediction> predict(const fs::path& run_dir, const std::vector<std::string>& in,
                                     int64_t top_k = 1, int64_t batch = 7) {
  run::PredictOptions o;
  o.top_k = top_k;
  o.batch_size = batch;  // several batches, one cut mid-file
  std::vector<run::Prediction> all;
  run::predict(run_dir, in, o, [&](const auto& b) { all.insert(all.end(), b.begin(), b.end()); });
  return all;
}

std::vector<std::string> classes_of(const fs::path& run_dir) {
  std::ifstream in(run_dir / "classes.txt");
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

/// Every class probability predict gives equals softmax(eval outputs) within 1e-6.
void expect_probabilities_equal(const std::vector<run::Prediction>& preds, const at::Tensor& out,
                                const std::vector<std::string>& classes) {
  const at::Tensor p = at::softmax(out, 1);
  ASSERT_EQ(static_cast<int64_t>(preds.size()), p.size(0));
  for (size_t i = 0; i < preds.size(); ++i) {
    ASSERT_EQ(preds[i].labels.size(), classes.size());
    for (size_t j = 0; j < classes.size(); ++j) {
      const auto k =
          std::find(classes.begin(), classes.end(), preds[i].labels[j]) - classes.begin();
      EXPECT_NEAR(preds[i].probabilities[j], p[static_cast<int64_t>(i)][k].item<double>(), 1e-6)
          << "record " << i << " class " << preds[i].labels[j];
    }
    // Most probable first, and the top-1 class is the argmax of the outputs.
    EXPECT_EQ(preds[i].labels[0], classes[static_cast<size_t>(out[static_cast<int64_t>(i)].argmax().item<int64_t>())]);
  }
}

/// "x1,colour,x2,label" rows: numbers with holes, a category with holes, string classes.
std::string wine_rows(int n, int offset, bool with_label = true) {
  const char* colours[] = {"red", "rose", "white"};
  const char* names[] = {"barbera", "barolo", "grignolino"};
  std::string text = with_label ? "x1,colour,x2,label\n" : "x1,colour,x2\n";
  for (int i = offset; i < offset + n; ++i) {
    const int c = i % 3;
    const std::string x1 = i % 7 == 3 ? "" : fmt::format("{:.2f}", c * 1.5 + 0.1 * (i % 5));
    const std::string colour = i % 11 == 5 ? "NA" : colours[(i + c) % 3];
    text += fmt::format("{},{},{:.3f}", x1, colour, 2.0 - c + 0.05 * (i % 4));
    text += with_label ? fmt::format(",{}\n", names[c]) : "\n";
  }
  return text;
}


/// Exports `run_dir` with --preprocess to `file` and returns what onnxruntime answers on the raw
/// `records` (tests/parity/preprocess_oracle.py: `kind` is --csv or --images).
nlohmann::json onnx_answers(const fs::path& run_dir, const fs::path& file, const std::string& kind,
                            const std::vector<std::string>& records) {
  run::export_run(run_dir, {.output = file, .preprocess = true});
  const fs::path out = file.parent_path() / (file.stem().string() + "_answers.json");
  lathe::testing::run_parity("preprocess_oracle.py", fmt::format("{} {} {} {}", file.string(),
                                                                 out.string(), kind,
                                                                 fmt::join(records, " ")));
  return nlohmann::json::parse(lathe::testing::read_text(out));
}

/// onnxruntime's labels equal predict's, and its probabilities predict's (all classes, top_k =
/// K) within 1e-5; returns the largest difference.
double expect_same_classes(const nlohmann::json& onnx, const std::vector<run::Prediction>& preds,
                           const std::vector<std::string>& classes) {
  const auto& labels = onnx.at("outputs").at("label");
  const auto& probs = onnx.at("outputs").at("probabilities");
  EXPECT_EQ(labels.size(), preds.size());
  EXPECT_EQ(probs.size(), preds.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(preds.size(), labels.size()); ++i) {
    EXPECT_EQ(labels[i].get<std::string>(), preds[i].labels[0]) << "record " << i;
    for (size_t j = 0; j < preds[i].labels.size(); ++j) {
      const auto k =
          std::find(classes.begin(), classes.end(), preds[i].labels[j]) - classes.begin();
      worst = std::max(worst, std::abs(probs[i][static_cast<size_t>(k)].get<double>() -
                                       preds[i].probabilities[j]));
    }
  }
  EXPECT_LT(worst, 1e-5);
  return worst;
}

}  // namespace

TEST(Predict, CsvClassificationEqualsEvalOnTheRawTestRecordsTargetOrNot) {
  TempDir dir;
  write_text(dir / "train.csv", wine_rows(90, 0));
  write_text(dir / "test.csv", wine_rows(25, 1000));
  const fs::path r = train(dir, "data: {source: csv, path: " + (dir / "train.csv").string() +
                                    ", test_path: " + (dir / "test.csv").string() +
                                    ", target: label, impute: mean, outliers: zscore,"
                                    " batch_size: 16, num_workers: 0}\n"
                                    "model: {name: mlp, hidden: [8]}\n");
  const auto classes = classes_of(r);
  ASSERT_EQ(classes, (std::vector<std::string>{"barbera", "barolo", "grignolino"}));
  const auto preds = predict(r, {(dir / "test.csv").string()}, /*top_k=*/3);
  expect_probabilities_equal(preds, eval_outputs(r), classes);
  EXPECT_EQ(preds.front().id, "1");
  EXPECT_EQ(preds.back().id, "25");
  // lathe eval's accuracy is predict's top-1 against the file's labels.
  const auto table = lathe::data::read_csv(dir / "test.csv");
  int correct = 0;
  for (size_t i = 0; i < preds.size(); ++i) correct += preds[i].labels[0] == table.rows[i][3];
  EXPECT_NEAR(static_cast<double>(correct) / 25.0, run::evaluate_run(r, "", {}).at("accuracy"),
              1e-9);

  // Without the target column: the same answers.
  write_text(dir / "new.csv", wine_rows(25, 1000, /*with_label=*/false));
  const auto unlabelled = predict(r, {(dir / "new.csv").string()}, 3, 1000);
  ASSERT_EQ(unlabelled.size(), preds.size());
  for (size_t i = 0; i < preds.size(); ++i) {
    EXPECT_EQ(unlabelled[i].labels, preds[i].labels);
    EXPECT_EQ(unlabelled[i].probabilities, preds[i].probabilities);
  }
  // An unseen category follows the training rule (one-hot: all zeros), a missing cell is imputed.
  write_text(dir / "odd.csv", "colour,x2,x1\npurple,1.0,\n");
  EXPECT_EQ(predict(r, {(dir / "odd.csv").string()}).size(), 1u);
  // A column the run was trained on is missing: the file, the column and the fix.
  write_text(dir / "short.csv", "x1,colour\n1.0,red\n");
  expect_error<lathe::DataError>([&] { predict(r, {(dir / "short.csv").string()}); },
                                 {"short.csv:1: no column 'x2', which the run was trained on",
                                  "add the column"});
  // A cell that is not a number where the run saw numbers: file and line.
  write_text(dir / "bad.csv", "x1,colour,x2\n1.0,red,2\n1.0,red,lots\n");
  expect_error<lathe::DataError>([&] { predict(r, {(dir / "bad.csv").string()}); },
                                 {"bad.csv:3: column 'x2' is numeric but holds 'lots'"});
}

TEST(Predict, CsvIdsAreRecordNumbersThatSurviveASkippedRecord) {
  // The issue's wine_dirty case: a run trained with skip_bad_records, a file whose line 60 is
  // malformed. Every answer keeps its record's number (the one the file's line 60 held is
  // missing), so joining answers back to the input pairs the right rows.
  TempDir dir;
  write_text(dir / "train.csv", wine_rows(90, 0));
  const fs::path r = train(dir, "data: {source: csv, path: " + (dir / "train.csv").string() +
                                    ", target: label, impute: mean, skip_bad_records: true,"
                                    " batch_size: 16, num_workers: 0}\n"
                                    "model: {name: mlp, hidden: [8]}\n");
  const std::string clean = wine_rows(100, 500);
  std::vector<std::string> lines;
  std::istringstream in(clean);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 101u);  // header + records 1..100 on lines 2..101
  std::string dirty;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i + 1 == 60) dirty += "1.0,red\n";  // record 59 (line 60 of clean.csv): a field short
    else dirty += lines[i] + "\n";
    if (i + 1 == 30) dirty += "\n";         // a blank line is no record and shifts no number
  }
  write_text(dir / "clean.csv", clean);
  write_text(dir / "dirty.csv", dirty);
  const auto want = predict(r, {(dir / "clean.csv").string()}, 3, 7);
  const auto got = predict(r, {(dir / "dirty.csv").string()}, 3, 7);
  ASSERT_EQ(want.size(), 100u);
  ASSERT_EQ(got.size(), 99u);
  for (size_t i = 0, j = 0; i < want.size(); ++i) {
    EXPECT_EQ(want[i].id, std::to_string(i + 1));
    if (i + 1 == 59) continue;  // the malformed record: no answer, and no id reused
    EXPECT_EQ(got[j].id, want[i].id) << "answer " << j;
    EXPECT_EQ(got[j].labels, want[i].labels) << "record " << want[i].id;
    EXPECT_EQ(got[j].probabilities, want[i].probabilities) << "record " << want[i].id;
    ++j;
  }
  EXPECT_EQ(got[57].id, "58");
  EXPECT_EQ(got[58].id, "60");
  // Several files: the id is file:record.
  const auto both =
      predict(r, {(dir / "dirty.csv").string(), (dir / "clean.csv").string()}, 1, 7);
  ASSERT_EQ(both.size(), 199u);
  EXPECT_EQ(both[58].id, (dir / "dirty.csv").string() + ":60");
  EXPECT_EQ(both[99].id, (dir / "clean.csv").string() + ":1");
}

TEST(Predict, CsvRegressionEqualsEvalValuesAndRmse) {
  TempDir dir;
  std::string rows = "a,b,kind,y\n";
  for (int i = 0; i < 120; ++i) {
    const double a = (i % 13) * 0.3, b = (i % 7) * -0.5;
    rows += fmt::format("{:.2f},{:.2f},{},{:.3f}\n", a, b, i % 2 ? "x" : "y",
                        2 * a - b + (i % 2) + 0.01 * (i % 3));
  }
  write_text(dir / "d.csv", rows);
  const fs::path r = train(dir, "data: {source: csv, path: " + (dir / "d.csv").string() +
                                    ", target: y, scale: minmax, batch_size: 16,"
                                    " num_workers: 0, test_fraction: 0.25}\n"
                                    "model: {name: mlp, hidden: [8]}\n");
  // The run split d.csv itself: its test records are these rows of the file (same seed).
  const auto test_rows = lathe::data::split_indices(120, 0.1, 0.25, 3, at::Tensor()).test;
  const auto all = predict(r, {(dir / "d.csv").string()}, 1, 50);
  ASSERT_EQ(all.size(), 120u);
  const at::Tensor out = eval_outputs(r).reshape({-1});  // (N_test)
  ASSERT_EQ(out.size(0), static_cast<int64_t>(test_rows.size()));
  const auto table = lathe::data::read_csv(dir / "d.csv");
  double sq = 0;
  for (size_t i = 0; i < test_rows.size(); ++i) {
    const auto row = static_cast<size_t>(test_rows[i]);
    const double v = out[static_cast<int64_t>(i)].item<double>();
    EXPECT_NEAR(all[row].value, v, 1e-6 * std::max(1.0, std::abs(v))) << "row " << row;
    EXPECT_EQ(all[row].id, std::to_string(row + 1));
    const double y = std::stod(table.rows[row][3]);
    sq += (all[row].value - y) * (all[row].value - y);
  }
  // lathe eval's RMSE is that of predict's values on the test rows.
  EXPECT_NEAR(std::sqrt(sq / static_cast<double>(out.size(0))),
              run::evaluate_run(r, "", {}).at("rmse"), 1e-5);
  EXPECT_EQ(all.front().id, "1");
  EXPECT_TRUE(all.front().labels.empty());
}

TEST(Predict, IdxImagesAsPngsEqualEvalAtTheNativeAndAResizedSide) {
  const auto raw = lathe::data::load_idx_split(lathe::testing::kFashionMnist, "t10k");
  for (const int side : {28, 32}) {
    TempDir dir;
    const fs::path r = train(
        dir, fmt::format("data: {{path: {}, limit_train: 300, limit_test: 20, image_size: {},"
                         " batch_size: 32, num_workers: 0}}\n"
                         "model: {{name: convnet, channels: [4], hidden: 8}}\n",
                         lathe::testing::kFashionMnist, side));
    fs::create_directories(dir / "pngs");
    for (int64_t i = 0; i < 20; ++i)  // the test split's raw records, as image files
      write_text(dir / "pngs" / fmt::format("img_{:03}.png", i),
                 lathe::data::encode_png(raw.images[i].unsqueeze(0)));
    const auto preds = predict(r, {(dir / "pngs").string()}, /*top_k=*/10);
    expect_probabilities_equal(preds, eval_outputs(r), classes_of(r));
    EXPECT_EQ(preds.front().id, (dir / "pngs" / "img_000.png").string());
    // A glob names the same files.
    EXPECT_EQ(predict(r, {(dir / "pngs").string() + "/img_01*.png"}).size(), 10u);
    expect_error<lathe::DataError>([&] { predict(r, {(dir / "none*.png").string()}); },
                                   {"none*.png: the pattern matches no file"});
    write_text(dir / "notes.txt", "x");
    expect_error<lathe::DataError>([&] { predict(r, {(dir / "notes.txt").string()}); },
                                   {"notes.txt: not an image this run reads"});
  }
}

TEST(Predict, ImageFolderPngsAndJpegsEqualEvalThroughItsEvaluationTransforms) {
  TempDir dir;
  // train/ and test/ class folders of images larger than the run's side and of varied shapes:
  // predict resizes the shorter side, crops the centre and decodes JPEGs at a reduced scale as
  // the run's loader does.
  for (const char* part : {"train", "test"})
    for (const char* cls : {"ant", "bee"})
      for (int i = 0; i < (std::string(part) == "train" ? 6 : 3); ++i) {
        fs::create_directories(dir / "imgs" / part / cls);
        const at::Tensor img = at::randint(0, 255, {3, 40 + 3 * i, 52 - 2 * i}, at::kByte);
        write_text(dir / "imgs" / part / cls / fmt::format("{}.{}", i, i % 2 ? "jpg" : "png"),
                   i % 2 ? lathe::data::encode_jpeg(img) : lathe::data::encode_png(img));
      }
  const fs::path r = train(dir, "data: {source: image_folder, path: " + (dir / "imgs").string() +
                                    ", image_size: 16, batch_size: 4, num_workers: 0}\n"
                                    "model: {name: convnet, channels: [4], hidden: 8}\n");
  const auto preds = predict(r, {(dir / "imgs" / "test").string()}, /*top_k=*/2, 4);
  expect_probabilities_equal(preds, eval_outputs(r), classes_of(r));
  EXPECT_EQ(preds.front().id, (dir / "imgs" / "test" / "ant" / "0.png").string());
}

TEST(Predict, TextCsvFromACsvAndFromLinesEqualsEval) {
  TempDir dir;
  write_text(dir / "vocab.txt",
             "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ngood\nbad\nfilm\nplot\nacting\n");
  std::string rows = "text,label\n", test = "text,label\n", lines;
  const char* texts[] = {"good film good acting", "bad plot bad film", "good plot",
                         "bad acting film", "film film good", "plot bad"};
  for (int i = 0; i < 24; ++i) rows += fmt::format("{},{}\n", texts[i % 6], i % 6 % 2 ? "neg" : "pos");
  for (int i = 0; i < 9; ++i) {
    test += fmt::format("\"{} {}\",{}\n", texts[(i + 1) % 6], texts[i % 6], i % 2 ? "neg" : "pos");
    lines += fmt::format("{} {}\n", texts[(i + 1) % 6], texts[i % 6]);
  }
  write_text(dir / "reviews.csv", rows);
  write_text(dir / "test.csv", test);
  write_text(dir / "lines.txt", lines);
  const fs::path r = train(
      dir, "data: {source: text_csv, path: " + (dir / "reviews.csv").string() +
               ", test_path: " + (dir / "test.csv").string() + ", vocab: " +
               (dir / "vocab.txt").string() +
               ", target: label, max_length: 12, batch_size: 8, num_workers: 0}\n"
               "model: {name: bert_classifier, hidden_size: 8, num_hidden_layers: 1,"
               " num_attention_heads: 2, intermediate_size: 16, max_position_embeddings: 12}\n");
  const at::Tensor out = eval_outputs(r);
  const auto from_csv = predict(r, {(dir / "test.csv").string()}, 2, 4);
  expect_probabilities_equal(from_csv, out, classes_of(r));
  const auto from_lines = predict(r, {(dir / "lines.txt").string()}, 2, 4);
  expect_probabilities_equal(from_lines, out, classes_of(r));
  EXPECT_EQ(from_lines.back().id, "9");
  // export --preprocess cannot put the tokenizer in the graph: the run, why, what to do.
  expect_error<lathe::ConfigError>(
      [&] { run::export_run(r, {.output = dir / "t.onnx", .preprocess = true}); },
      {fs::canonical(r).string() + ": --preprocess does not apply to a text run",
       "ONNX has no tokenizer operator in the standard or ai.onnx.ml domains",
       "export without --preprocess"});
  EXPECT_FALSE(fs::exists(dir / "t.onnx"));
}

TEST(Predict, ALanguageModelRunIsReferredToGenerate) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 40; ++i) text += fmt::format("line {} of the corpus.\n", i);
  write_text(dir / "corpus.txt", text);
  const fs::path r = train(dir, "data: {source: text, path: " + (dir / "corpus.txt").string() +
                                    ", seq_len: 16, num_workers: 0}\n"
                                    "model: {name: lstm_lm, embedding_dim: 4, hidden_size: 8}\n");
  expect_error<lathe::ConfigError>([&] { predict(r, {"x.txt"}); },
                                   {"a language model", "lathe generate"});
  expect_error<lathe::ConfigError>(
      [&] { run::export_run(r, {.output = dir / "lm.onnx", .preprocess = true}); },
      {"--preprocess does not apply to a language-model run", "export without --preprocess"});
  // The LSTM's carried state gives what rereading the whole sequence gives.
  run::GenerateOptions o;
  o.prompt = "line 3";
  o.max_new_tokens = 12;
  o.sampling.seed = 5;
  const auto cached = run::generate(r, o);
  o.use_cache = false;
  EXPECT_EQ(run::generate(r, o).new_ids, cached.new_ids);
  EXPECT_EQ(cached.text.substr(0, 6), "line 3");
  EXPECT_EQ(cached.text.size(), 18u);
}

TEST(Generate, TextPromptsGoThroughTheRunsTokenizer) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 60; ++i) text += fmt::format("line {} of the corpus.\n", i);
  write_text(dir / "corpus.txt", text);
  // A character-level BPE (two merges), an eos token and a decoder that joins the pieces.
  nlohmann::json vocab = nlohmann::json::object();
  for (const char c : std::string("abcdefghijklmnopqrstuvwxyz0123456789 .\n"))
    vocab[std::string(1, c)] = vocab.size();
  vocab["li"] = vocab.size();
  vocab["ne"] = vocab.size();
  vocab["line"] = vocab.size();
  const nlohmann::json tj = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"l i", "n e", "li ne"}}}},
      {"decoder", {{"type", "Fuse"}}},
      {"added_tokens",
       {{{"id", vocab.size()}, {"content", "</s>"}, {"special", true}, {"normalized", false}}}}};
  fs::create_directories(dir / "tok");
  write_text(dir / "tok" / "tokenizer.json", tj.dump());
  const fs::path r = train(dir, "data: {source: text, path: " + (dir / "corpus.txt").string() +
                                    ", seq_len: 16, num_workers: 0, tokenizer: " +
                                    (dir / "tok").string() + "}\n"
                                    "model: {name: gpt2, n_positions: 32, n_embd: 16, n_layer: 1,"
                                    " n_head: 2}\n");
  const auto tok = lathe::data::load_tokenizer(dir / "tok");
  run::GenerateOptions o;
  o.prompt = "line 4";
  o.max_new_tokens = 8;
  o.sampling.greedy = true;
  const run::Generation g = run::generate(r, o);
  EXPECT_EQ(g.prompt_ids, tok->encode("line 4"));
  EXPECT_EQ(tok->id_to_token(g.prompt_ids[0]), "line");
  EXPECT_TRUE(g.has_text);
  EXPECT_FALSE(g.byte_level);
  EXPECT_EQ(g.stop_ids, std::vector<int64_t>{*tok->token_to_id("</s>")});  // the tokenizer's eos
  std::vector<int64_t> all = g.prompt_ids;
  all.insert(all.end(), g.new_ids.begin(), g.new_ids.end());
  EXPECT_EQ(g.text, tok->decode(all, true));
  EXPECT_EQ(g.text.substr(0, 6), "line 4");
  // generation_config.json's eos ids (here every id) end generation after the first token.
  std::vector<int64_t> every(static_cast<size_t>(tok->vocab_size()));
  std::iota(every.begin(), every.end(), 0);
  write_text(dir / "tok" / "generation_config.json", nlohmann::json({{"eos_token_id", every}}).dump());
  const run::Generation stopped = run::generate(r, o);
  EXPECT_EQ(stopped.stop_ids, every);
  ASSERT_EQ(stopped.new_ids.size(), 1u);
  EXPECT_EQ(stopped.new_ids[0], g.new_ids[0]);
  write_text(dir / "tok" / "generation_config.json", R"({"eos_token_id": "x"})");
  expect_error<lathe::DataError>([&] { run::generate(r, o); },
                                 {"generation_config.json: eos_token_id"});
}

TEST(Generate, GreedyAndSeededSamplingEqualTransformersGenerateTokenForToken) {
  TempDir dir;
  constexpr int kNew = 24;
  lathe::testing::run_parity("generate_oracle.py", fmt::format("{} {}", dir.path().string(), kNew));
  const auto ids = [&](const std::string& name) {
    std::istringstream in(lathe::testing::read_text(dir / name));
    std::vector<int64_t> out;
    for (int64_t v = 0; in >> v;) out.push_back(v);
    return out;
  };
  // A run folder around transformers' weights: save_pretrained's model.safetensors as is.
  const fs::path r = dir / "hf_run";
  fs::create_directories(r);
  fs::copy_file(dir / "hf" / "model.safetensors", r / "model.safetensors");
  write_text(r / "config.yaml",
             "run: {name: hf_run, device: cpu}\ndata: {source: text, path: corpus.txt}\n"
             "task: {kind: lm}\nmodel: {name: gpt2, vocab_size: 96, n_positions: 64, n_embd: 32,"
             " n_layer: 2, n_head: 4}\n");
  run::GenerateOptions o;
  o.prompt_ids = ids("prompt.txt");
  o.max_new_tokens = kNew;
  o.sampling.greedy = true;
  const auto greedy = run::generate(r, o).new_ids;
  EXPECT_EQ(greedy, ids("greedy.txt"));
  o.use_cache = false;  // the key/value cache changes nothing
  EXPECT_EQ(run::generate(r, o).new_ids, greedy);
  o.use_cache = true;
  // Sampling in Hugging Face's order (temperature, top-k, top-p) from torch's seeded generator:
  // the same draws as generate(do_sample=True) after torch.manual_seed(7).
  o.sampling = {.temperature = 0.8, .top_k = 20, .top_p = 0.9, .seed = 7};
  const auto sampled = run::generate(r, o).new_ids;
  EXPECT_EQ(sampled, ids("sampled.txt"));
  EXPECT_EQ(run::generate(r, o).new_ids, sampled);  // same seed, same tokens
  o.sampling = {.temperature = 1.0, .top_k = 1, .seed = 99};
  EXPECT_EQ(run::generate(r, o).new_ids, greedy);  // top_k 1 is greedy
  o.sampling = {.temperature = 0.0, .seed = 99};
  EXPECT_EQ(run::generate(r, o).new_ids, greedy);  // temperature 0 is greedy
  // Tokens outside the vocabulary, too long a sequence: what to change.
  o.prompt_ids = {1, 96};
  expect_error<lathe::ConfigError>([&] { run::generate(r, o); },
                                   {"prompt token 96 is outside the model's vocabulary of 96"});
  o.prompt_ids = {1, 2};
  o.max_new_tokens = 63;
  expect_error<lathe::ConfigError>([&] { run::generate(r, o); },
                                   {"n_positions 64", "lower --max-new-tokens"});
  o.prompt_ids.clear();
  o.prompt = "AB";  // data.source text: byte-level, 'A' = 65, 'B' = 66
  o.max_new_tokens = 2;
  EXPECT_EQ(run::generate(r, o).prompt_ids, (std::vector<int64_t>{65, 66}));
}

TEST(Generate, TopPKeepsTheSmallestSetReachingPAndAlwaysOneToken) {
  // probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.7 keeps {0, 1}; 0.1 keeps {0} only.
  const at::Tensor logits = at::log(at::tensor({0.5, 0.3, 0.15, 0.05}));
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(1);
  std::set<int64_t> seen;
  for (int i = 0; i < 300; ++i)
    seen.insert(run::next_token(logits, {.temperature = 1.0, .top_p = 0.7}, g));
  EXPECT_EQ(seen, (std::set<int64_t>{0, 1}));
  seen.clear();
  for (int i = 0; i < 50; ++i)
    seen.insert(run::next_token(logits, {.temperature = 1.0, .top_p = 0.1}, g));
  EXPECT_EQ(seen, (std::set<int64_t>{0}));
  seen.clear();
  for (int i = 0; i < 300; ++i)
    seen.insert(run::next_token(logits, {.temperature = 1.0, .top_k = 3}, g));
  EXPECT_EQ(seen, (std::set<int64_t>{0, 1, 2}));
  expect_error<lathe::ConfigError>([&] { run::next_token(logits, {.top_p = 0.0}, g); },
                                   {"--top-p 0"});
}

TEST(ExportPreprocess, IdxUint8PixelsInOnnxruntimeGivePredictsLabelsAndProbabilities) {
  const auto raw = lathe::data::load_idx_split(lathe::testing::kFashionMnist, "t10k");
  TempDir dir;
  const fs::path r = train(
      dir, fmt::format("data: {{path: {}, limit_train: 300, limit_test: 20, batch_size: 32,"
                       " num_workers: 0}}\nmodel: {{name: convnet, channels: [4], hidden: 8}}\n",
                       lathe::testing::kFashionMnist));
  std::vector<std::string> files;
  for (int64_t i = 0; i < 20; ++i) {  // the raw records, as image files
    files.push_back((dir / fmt::format("img_{:03}.png", i)).string());
    write_text(files.back(), lathe::data::encode_png(raw.images[i].unsqueeze(0)));
  }
  const auto classes = classes_of(r);
  const auto preds = predict(r, files, /*top_k=*/10);
  const auto onnx = onnx_answers(r, dir / "fashion.onnx", "--images", files);
  EXPECT_EQ(onnx.at("inputs").dump(),
            R"j([{"name":"pixels","shape":["batch",28,28,1],"type":"tensor(uint8)"}])j");
  const double worst = expect_same_classes(onnx, preds, classes);
  EXPECT_EQ(onnx.at("outputs").at("logits").size(), 20u);  // the logits stay an output
  fmt::print("[ measured ] idx images: max |onnxruntime - predict| probability {:.2g}\n", worst);
}

TEST(ExportPreprocess, CsvClassificationRawColumnsGivePredictsLabelsAndProbabilities) {
  for (const std::string encode : {"onehot", "label"}) {
    SCOPED_TRACE(encode);
    TempDir dir;
    write_text(dir / "train.csv", wine_rows(90, 0));
    const fs::path r = train(dir, "data: {source: csv, path: " + (dir / "train.csv").string() +
                                      ", target: label, impute: mean, outliers: zscore,"
                                      " columns: {colour: [encode=" + encode + "]},"
                                      " batch_size: 16, num_workers: 0}\n"
                                      "model: {name: mlp, hidden: [8]}\n");
    // Raw records: holes (empty, NA) in both columns, an unseen category, spaces around a
    // category, values far outside the clipping bounds, the columns in another order.
    std::string rows = wine_rows(25, 1000, /*with_label=*/false);
    rows += "9.5,purple,1.0\n,,-50\nNA, white ,100\n0.3,NA,2.5\n";
    write_text(dir / "new.csv", rows);
    const auto classes = classes_of(r);
    const auto preds = predict(r, {(dir / "new.csv").string()}, 3);
    ASSERT_EQ(preds.size(), 29u);
    const auto onnx = onnx_answers(r, dir / "wine.onnx", "--csv", {(dir / "new.csv").string()});
    EXPECT_EQ(onnx.at("inputs").dump(),
              R"j([{"name":"x1","shape":["batch",1],"type":"tensor(float)"},)j"
              R"j({"name":"colour","shape":["batch",1],"type":"tensor(string)"},)j"
              R"j({"name":"x2","shape":["batch",1],"type":"tensor(float)"}])j");
    EXPECT_EQ(onnx.at("opsets").dump(), R"({"":17,"ai.onnx.ml":3})");
    const double worst = expect_same_classes(onnx, preds, classes);
    fmt::print("[ measured ] csv classification ({}): max |onnxruntime - predict| probability "
               "{:.2g}\n", encode, worst);
    if (encode != "onehot") continue;
    // Triton takes the string columns and the per-record label (dims [1] reshaped to []).
    run::export_run(r, {.output = dir / "t" / "wine.onnx", .triton = true, .preprocess = true});
    const std::string pbtxt =
        lathe::testing::read_text(dir / "t" / "triton" / "r" / "config.pbtxt");
    EXPECT_NE(pbtxt.find("name: \"colour\"\n    data_type: TYPE_STRING\n    dims: [ 1 ]\n"),
              std::string::npos) << pbtxt;
    EXPECT_NE(pbtxt.find("name: \"label\"\n    data_type: TYPE_STRING\n    dims: [ 1 ]\n"
                         "    reshape: { shape: [ ] }\n"),
              std::string::npos) << pbtxt;
  }
}

TEST(ExportPreprocess, CsvRegressionRawColumnsGivePredictsValues) {
  TempDir dir;
  std::string rows = "a,b,kind,y\n";
  for (int i = 0; i < 120; ++i) {
    const double a = (i % 13) * 0.3, b = (i % 7) * -0.5;
    rows += fmt::format("{},{:.2f},{},{:.3f}\n", i % 9 == 4 ? "" : fmt::format("{:.2f}", a), b,
                        i % 10 == 7 ? "NA" : i % 2 ? "x" : "y",
                        2 * a - b + (i % 2) + 0.01 * (i % 3));
  }
  write_text(dir / "d.csv", rows);
  const fs::path r = train(dir, "data: {source: csv, path: " + (dir / "d.csv").string() +
                                    ", target: y, impute: median, outliers: iqr, scale: minmax,"
                                    " batch_size: 16, num_workers: 0}\n"
                                    "model: {name: mlp, hidden: [8]}\n");
  write_text(dir / "new.csv", rows + "40,,z,0\n,-9,x,0\n");
  const auto preds = predict(r, {(dir / "new.csv").string()}, 1, 50);
  ASSERT_EQ(preds.size(), 122u);
  const auto onnx = onnx_answers(r, dir / "d.onnx", "--csv", {(dir / "new.csv").string()});
  const auto& values = onnx.at("outputs").at("prediction");
  ASSERT_EQ(values.size(), preds.size());
  double worst = 0;
  for (size_t i = 0; i < preds.size(); ++i) {
    const double v = values[i][0].get<double>();
    EXPECT_NEAR(v, preds[i].value, 1e-5 * std::max(1.0, std::abs(preds[i].value))) << "row " << i;
    worst = std::max(worst, std::abs(v - preds[i].value));
  }
  EXPECT_EQ(onnx.at("outputs").size(), 1u);  // no label for a regression
  fmt::print("[ measured ] csv regression: max |onnxruntime - predict| value {:.2g}\n", worst);
}

TEST(ExportPreprocess, ImageFolderRgbPixelsAtTheRunsSideGivePredictsLabelsAndProbabilities) {
  TempDir dir;
  // RGB PNGs already at the run's side (the graph takes them there): the evaluation resize and
  // centre crop change nothing, and each channel gets its own mean / std.
  std::vector<std::string> files;
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(7);
  for (const char* part : {"train", "test"})
    for (const char* cls : {"ant", "bee", "cat"})
      for (int i = 0; i < (std::string(part) == "train" ? 6 : 3); ++i) {
        fs::create_directories(dir / "imgs" / part / cls);
        at::Tensor img = at::randint(0, 255, {3, 16, 16}, g, at::kByte);  // (C, H, W)
        img[std::string(cls) == "bee" ? 0 : 2].div_(2, "floor");
        const fs::path file = dir / "imgs" / part / cls / fmt::format("{}.png", i);
        write_text(file, lathe::data::encode_png(img));
        if (std::string(part) == "test") files.push_back(file.string());
      }
  const fs::path r = train(dir, "data: {source: image_folder, path: " + (dir / "imgs").string() +
                                    ", image_size: 16, batch_size: 4, num_workers: 0}\n"
                                    "model: {name: convnet, channels: [4], hidden: 8}\n");
  const auto preds = predict(r, files, /*top_k=*/3, 4);
  const auto onnx = onnx_answers(r, dir / "ants.onnx", "--images", files);
  EXPECT_EQ(onnx.at("inputs").dump(),
            R"j([{"name":"pixels","shape":["batch",16,16,3],"type":"tensor(uint8)"}])j");
  const double worst = expect_same_classes(onnx, preds, classes_of(r));
  fmt::print("[ measured ] image folder (RGB): max |onnxruntime - predict| probability {:.2g}\n",
             worst);
}

namespace {

/// "x1,colour,x2,label" rows of two classes (barbera, barolo), holes as in wine_rows.
std::string two_class_rows(int n, int offset) {
  std::string text = "x1,colour,x2,label\n";
  const char* colours[] = {"red", "rose", "white"};
  for (int i = offset; i < offset + n; ++i) {
    const int c = (i / 2) % 2;
    const std::string x1 = i % 7 == 3 ? "" : fmt::format("{:.2f}", c * 1.2 + 0.15 * (i % 5));
    text += fmt::format("{},{},{:.3f},{}\n", x1, i % 11 == 5 ? "NA" : colours[i % 3],
                        1.0 - c + 0.07 * (i % 6), c ? "barolo" : "barbera");
  }
  return text;
}

}  // namespace

/// Every estimator kind (xgboost, random_forest, svm) on three-class, two-class and regression
/// tables: `lathe export --preprocess` run in onnxruntime on raw records (holes, an unseen
/// category) gives predict's labels, its probabilities within 1e-5 and its values within
/// 1e-5 * max(1, |value|).
TEST(ExportPreprocess, EstimatorRunsGivePredictsLabelsProbabilitiesAndValues) {
  const std::vector<std::pair<std::string, std::string>> kinds = {
      {"xgboost", "n_estimators: 30, max_depth: 3"},
      {"random_forest", "n_estimators: 12, max_depth: 5"},
      {"svm", "kernel: rbf"},
  };
  std::string regression_rows = "a,b,kind,y\n";
  for (int i = 0; i < 120; ++i) {
    const double a = (i % 13) * 0.3, b = (i % 7) * -0.5;
    regression_rows += fmt::format("{},{:.2f},{},{:.3f}\n",
                                   i % 9 == 4 ? "" : fmt::format("{:.2f}", a), b,
                                   i % 10 == 7 ? "NA" : i % 2 ? "x" : "y",
                                   2 * a - b + (i % 2) + 0.01 * (i % 3));
  }
  for (const auto& [kind, options] : kinds) {
    for (const std::string task : {"multiclass", "binary", "regression"}) {
      SCOPED_TRACE(kind + " " + task);
      TempDir dir;
      const bool regression = task == "regression";
      write_text(dir / "train.csv", regression            ? regression_rows
                                    : task == "binary" ? two_class_rows(90, 0)
                                                       : wine_rows(90, 0));
      const fs::path r = train(
          dir, "data: {source: csv, path: " + (dir / "train.csv").string() + ", target: " +
                   (regression ? "y" : "label") +
                   ", impute: mean, scale: standard, batch_size: 16, num_workers: 0}\n"
                   "model: {name: " + kind + ", " + options + "}\n");
      std::string records = regression ? regression_rows + "40,,z,0\n,-9,x,0\n"
                            : task == "binary"
                                ? two_class_rows(25, 1000)
                                : wine_rows(25, 1000);
      if (!regression) records += "9.5,purple,1.0,barolo\n,,-5,barbera\n";
      write_text(dir / "new.csv", records);
      const auto preds = predict(r, {(dir / "new.csv").string()}, /*top_k=*/3, 50);
      const auto onnx =
          onnx_answers(r, dir / (kind + ".onnx"), "--csv", {(dir / "new.csv").string()});
      EXPECT_EQ(onnx.at("opsets").dump(), R"({"":17,"ai.onnx.ml":3})");
      double worst = 0;
      if (regression) {
        const auto& values = onnx.at("outputs").at("prediction");
        ASSERT_EQ(values.size(), preds.size());
        for (size_t i = 0; i < preds.size(); ++i) {
          const double v = values[i][0].get<double>();
          EXPECT_NEAR(v, preds[i].value, 1e-5 * std::max(1.0, std::abs(preds[i].value)))
              << "row " << i;
          worst = std::max(worst, std::abs(v - preds[i].value));
        }
        EXPECT_EQ(onnx.at("outputs").size(), 1u);
      } else {
        worst = expect_same_classes(onnx, preds, classes_of(r));
        EXPECT_EQ(onnx.at("outputs").size(), kind == "svm" ? 3u : 2u);  // + decision_values
      }
      fmt::print("[ measured ] {} {}: max |onnxruntime - predict| {} {:.2g}\n", kind, task,
                 regression ? "value" : "probability", worst);
    }
  }
}

namespace {

/// A user's estimator with no ONNX graph in lathe: export names it. Its methods are never called.
class OpaqueEstimator : public lathe::models::Estimator {
 public:
  void fit(const at::Tensor&, const at::Tensor&, const lathe::models::FitTask&,
           const lathe::models::RoundHook&) override {}
  at::Tensor predict(const at::Tensor& x) const override { return x; }
  std::string file_name() const override { return "model.bin"; }
  void save(const fs::path&) const override {}
  void load(const fs::path&) override {}
};

}  // namespace

TEST(ExportPreprocess, EstimatorExportErrorsNameTheKindTheFileAndTheFlag) {
  TempDir dir;
  write_text(dir / "train.csv", wine_rows(60, 0));
  const fs::path r = train(dir, "data: {source: csv, path: " + (dir / "train.csv").string() +
                                    ", target: label, impute: mean, num_workers: 0}\n"
                                    "model: {name: svm, kernel: linear}\n");
  expect_error<lathe::ConfigError>(
      [&] { run::export_run(r, {.output = dir / "a.onnx", .fp16 = true}); },
      {"--fp16 / --int8", "the svm model is exported as it is"});
  expect_error<lathe::ConfigError>(
      [&] { run::export_run(r, {.output = dir / "a.onnx", .dynamic = {"seq"}}); },
      {"--dynamic seq", "only dynamic axis is batch"});
  // A damaged model file: the file, the line and what is wrong; nothing is written.
  std::string text = lathe::testing::read_text(r / "model.libsvm");
  text.replace(text.find("nr_class 3"), 10, "nr_class 4");
  write_text(r / "model.libsvm", text);
  expect_error<lathe::ExportError>([&] { run::export_run(r, {.output = dir / "a.onnx"}); },
                                   {(r / "model.libsvm").string() + ":5", "'rho' has 3 value(s), 6 expected"});
  EXPECT_FALSE(fs::exists(dir / "a.onnx"));
  fs::remove(r / "model.libsvm");
  expect_error<lathe::ExportError>([&] { run::export_run(r, {.output = dir / "a.onnx"}); },
                                   {"model.libsvm", "no model here", "train the run first"});

  // An estimator of the user's that lathe has no graph for: an error naming the kind.
  lathe::models::ModelSpec spec;
  spec.name = "opaque_estimator";
  spec.description = "a test estimator";
  spec.estimator = [](const config::Params&) { return std::make_shared<OpaqueEstimator>(); };
  spec.build = [est = spec.estimator](const config::Params& p) {
    return torch::nn::AnyModule(lathe::models::EstimatorModule(est(p)));
  };
  lathe::models::register_model(spec);
  std::string cfg = lathe::testing::read_text(r / "config.yaml");
  const auto at = cfg.find("name: svm");
  ASSERT_NE(at, std::string::npos) << cfg;
  cfg.replace(at, 9, "name: opaque_estimator");
  write_text(r / "config.yaml", cfg);
  expect_error<lathe::ExportError>(
      [&] { run::export_run(r, {.output = dir / "a.onnx"}); },
      {"model 'opaque_estimator' is an estimator lathe has no ONNX graph for",
       "exported: xgboost, random_forest, svm"});
}
