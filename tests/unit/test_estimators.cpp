// Estimators (xgboost, random_forest, svm): parity with Python's xgboost and scikit-learn, their
// runs through train_from_config (files, predict, evaluate, resume, early stopping), and their
// model-file readers on hostile input.
#include <cmath>
#include <fstream>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "lathe/config/config.h"
#include "lathe/core/error.h"
#include "lathe/run/predict.h"
#include "lathe/run/run.h"
#include "models/registry.h"
#include "models/tabular/svm.h"
#include "models/tabular/xgboost.h"
#include "tests/support.h"

namespace lathe {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::expect_error;
using testing::TempDir;

/// A numeric CSV without header as a (rows, columns) tensor.
at::Tensor read_matrix(const fs::path& file, at::ScalarType dtype) {
  std::ifstream in(file);
  std::vector<double> values;
  int64_t rows = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    ++rows;
    std::stringstream s(line);
    for (std::string cell; std::getline(s, cell, ',');) values.push_back(std::stod(cell));
  }
  const auto cols = static_cast<int64_t>(values.size()) / std::max<int64_t>(1, rows);
  return at::tensor(values, at::kDouble).reshape({rows, cols}).to(dtype);
}

void write_matrix(const fs::path& file, const at::Tensor& m) {
  const at::Tensor t = m.to(at::kDouble).reshape({m.size(0), -1}).contiguous();
  std::ofstream out(file);
  for (int64_t r = 0; r < t.size(0); ++r)
    for (int64_t c = 0; c < t.size(1); ++c)
      out << fmt::format("{:.17g}", t[r][c].item<double>()) << (c + 1 < t.size(1) ? "," : "\n");
}

/// The oracle's tables, written once per test into `dir`.
struct Tables {
  explicit Tables(const fs::path& dir) : dir(dir) {
    testing::run_parity("estimator_oracle.py", "data " + dir.string());
  }
  at::Tensor x(const std::string& data, const std::string& part) const {
    return read_matrix(dir / (data + "_x_" + part + ".csv"), at::kFloat);
  }
  at::Tensor y(const std::string& data, const std::string& part, bool classes) const {
    return read_matrix(dir / (data + "_y_" + part + ".csv"), classes ? at::kLong : at::kFloat)
        .reshape({-1});
  }
  fs::path dir;
};

models::FitTask task_for(const std::string& data, uint64_t seed = 0) {
  models::FitTask t;
  t.kind = data == "diabetes" ? "regression" : "classification";
  t.num_classes = data == "wine" ? 3 : data == "cancer" ? 2 : 0;
  t.seed = seed;
  return t;
}

TEST(XGBoostParity, MarginsEqualPythonXgboostTrainedAlikeAndItLoadsLathesModelJson) {
  TempDir dir;
  Tables tables(dir.path());
  EXPECT_EQ(models::XGBoostEstimator::library_version(), "1.7.4");
  struct Case {
    std::string name, data;
    std::vector<double> class_weights;
  };
  for (const Case& c : {Case{"wine_gbt", "wine", {}}, Case{"cancer_gbt", "cancer", {1.0, 2.5}},
                        Case{"diabetes_gbt", "diabetes", {}}}) {
    SCOPED_TRACE(c.name);
    models::XGBoostOptions o;
    o.n_estimators(25).learning_rate(0.2).max_depth(4).subsample(0.8).colsample_bytree(0.9)
        .colsample_bynode(0.8).reg_lambda(1.5);
    models::XGBoostEstimator est(o);
    models::FitTask task = task_for(c.data, 7);
    task.class_weights = c.class_weights;
    const bool classes = task.kind == "classification";
    est.fit(tables.x(c.data, "train"), tables.y(c.data, "train", classes), task);
    EXPECT_EQ(est.rounds(), 25);
    const at::Tensor out = est.predict(tables.x(c.data, "test"));
    EXPECT_EQ(out.size(1), c.data == "wine" ? 3 : c.data == "cancer" ? 2 : 1);
    write_matrix(dir / (c.name + "_lathe.csv"), out);
    est.save(dir / (c.name + "_model.json"));
    json p = {{"data", c.data},          {"kind", task.kind},     {"num_classes", task.num_classes},
              {"seed", task.seed},       {"n_estimators", 25},    {"learning_rate", 0.2},
              {"max_depth", 4},          {"subsample", 0.8},      {"colsample_bytree", 0.9},
              {"colsample_bynode", 0.8}, {"reg_lambda", 1.5},     {"class_weights", c.class_weights}};
    testing::write_text(dir / (c.name + "_params.json"), p.dump());
    testing::run_parity("estimator_oracle.py", "xgb " + dir.path().string() + " " + c.name);
    // Loaded back, the booster predicts what it did before saving.
    models::XGBoostEstimator again(o);
    again.load(dir / (c.name + "_model.json"));
    EXPECT_TRUE(at::equal(again.predict(tables.x(c.data, "test")), out));
    const auto importance = est.feature_importance(out.size(0) > 0 ? tables.x(c.data, "test").size(1) : 0);
    EXPECT_GT(*std::max_element(importance.begin(), importance.end()), 0.0);
  }
}

TEST(RandomForest, XGBoostsForestModeMatchesPythonAndScikitLearnsForestOverSeeds) {
  TempDir dir;
  Tables tables(dir.path());
  // The forest is XGBoost's random-forest mode: first the same model as Python's xgboost...
  models::XGBoostOptions forest;
  forest.mode("forest").n_estimators(100).max_depth(8).subsample(0.8).colsample_bynode(0.8)
      .reg_lambda(1e-5);
  {
    models::XGBoostEstimator est(forest);
    est.fit(tables.x("wine", "train"), tables.y("wine", "train", true), task_for("wine", 3));
    write_matrix(dir / "wine_rf_lathe.csv", est.predict(tables.x("wine", "test")));
    est.save(dir / "wine_rf_model.json");
    json p = {{"data", "wine"},         {"kind", "classification"}, {"num_classes", 3},
              {"seed", 3},              {"mode", "forest"},         {"n_estimators", 100},
              {"learning_rate", 1.0},   {"max_depth", 8},           {"subsample", 0.8},
              {"colsample_bytree", 1.0}, {"colsample_bynode", 0.8}, {"reg_lambda", 1e-5}};
    testing::write_text(dir / "wine_rf_params.json", p.dump());
    testing::run_parity("estimator_oracle.py", "xgb " + dir.path().string() + " wine_rf");
  }
  // ...then its test metric against scikit-learn's RandomForest, averaged over five seeds each:
  // accuracy within 0.05 on wine and cancer, R² within 0.08 on diabetes.
  for (const std::string data : {"wine", "cancer", "diabetes"}) {
    SCOPED_TRACE(data);
    const bool classes = data != "diabetes";
    const at::Tensor xte = tables.x(data, "test"), yte = tables.y(data, "test", classes);
    std::vector<double> scores;
    for (uint64_t seed = 0; seed < 5; ++seed) {
      models::XGBoostEstimator est(forest);
      est.fit(tables.x(data, "train"), tables.y(data, "train", classes), task_for(data, seed));
      const at::Tensor out = est.predict(xte);
      if (classes) {
        scores.push_back(out.argmax(1).eq(yte).to(at::kDouble).mean().item<double>());
      } else {
        const at::Tensor y = yte.to(at::kDouble), p = out.reshape({-1}).to(at::kDouble);
        scores.push_back(1.0 - (y - p).pow(2).sum().item<double>() /
                                   (y - y.mean()).pow(2).sum().item<double>());
      }
    }
    json p = {{"data", data},
              {"kind", classes ? "classification" : "regression"},
              {"n_estimators", 100},
              {"seeds", {0, 1, 2, 3, 4}},
              {"lathe", scores},
              {"tolerance", classes ? 0.05 : 0.08}};
    testing::write_text(dir / (data + "_forest_params.json"), p.dump());
    testing::run_parity("estimator_oracle.py",
                        "forest " + dir.path().string() + " " + data + "_forest");
  }
}

TEST(SvmParity, DecisionValuesEqualScikitLearnsSvcAndSvr) {
  TempDir dir;
  Tables tables(dir.path());
  EXPECT_EQ(models::SvmEstimator::library_version(), 324);
  struct Case {
    std::string name, data, kernel, gamma;
    double C;
    std::vector<double> class_weights;
  };
  for (const Case& c : {Case{"wine_rbf", "wine", "rbf", "scale", 1.0, {1.0, 2.0, 0.5}},
                        Case{"wine_poly", "wine", "poly", "auto", 0.5, {}},
                        Case{"cancer_linear", "cancer", "linear", "scale", 0.1, {}},
                        Case{"cancer_sigmoid", "cancer", "sigmoid", "0.01", 2.0, {1.0, 3.0}},
                        Case{"diabetes_rbf", "diabetes", "rbf", "scale", 50.0, {}},
                        Case{"diabetes_linear", "diabetes", "linear", "auto", 1.0, {}}}) {
    SCOPED_TRACE(c.name);
    models::SvmOptions o;
    o.kernel(c.kernel).gamma(c.gamma).C(c.C).epsilon(c.data == "diabetes" ? 5.0 : 0.1);
    models::SvmEstimator est(o);
    models::FitTask task = task_for(c.data);
    task.class_weights = c.class_weights;
    const bool classes = task.kind == "classification";
    est.fit(tables.x(c.data, "train"), tables.y(c.data, "train", classes), task);
    const at::Tensor xte = tables.x(c.data, "test");
    const at::Tensor out = est.predict(xte);
    write_matrix(dir / (c.name + "_lathe.csv"), out);
    write_matrix(dir / (c.name + "_lathe_dec.csv"), est.decision_values(xte));
    json p = {{"data", c.data},    {"kind", task.kind},  {"kernel", c.kernel},
              {"C", c.C},          {"degree", 3},        {"coef0", 0.0},
              {"tol", 1e-3},       {"shrinking", true},  {"epsilon", o.epsilon()},
              {"class_weights", c.class_weights},        {"lathe_gamma", est.fitted_gamma()}};
    p["gamma"] = c.gamma == "scale" || c.gamma == "auto" ? json(c.gamma) : json(std::stod(c.gamma));
    testing::write_text(dir / (c.name + "_params.json"), p.dump());
    testing::run_parity("estimator_oracle.py", "svm " + dir.path().string() + " " + c.name);
    // LIBSVM's model text keeps support vectors to 8 significant digits: a loaded model's values
    // stay within 1e-6 of the fitted one's.
    est.save(dir / (c.name + ".libsvm"));
    models::SvmEstimator again(o);
    again.load(dir / (c.name + ".libsvm"));
    EXPECT_LT(((again.predict(xte) - out).abs() / out.abs().clamp_min(1)).max().item<double>(), 1e-6);
  }
}

TEST(EstimatorFiles, DamagedModelFilesAreCheckpointErrorsNamingTheFile) {
  TempDir dir;
  Tables tables(dir.path());
  models::XGBoostEstimator gbt(models::XGBoostOptions().n_estimators(3));
  gbt.fit(tables.x("wine", "train"), tables.y("wine", "train", true), task_for("wine"));
  gbt.save(dir / "model.json");
  const std::string good_json = testing::read_text(dir / "model.json");
  models::SvmEstimator svm(models::SvmOptions{});
  svm.fit(tables.x("wine", "train"), tables.y("wine", "train", true), task_for("wine"));
  svm.save(dir / "model.libsvm");
  const std::string good_svm = testing::read_text(dir / "model.libsvm");

  const auto bad_json = dir / "bad.json";
  for (const std::string& text :
       {good_json.substr(0, good_json.size() / 2), std::string("\x00\x01garbage\xff", 11),
        std::string(""), std::string("[1, 2, 3]"), std::string(R"({"learner": {}, "version": [1,7,4]})"),
        std::string(R"({"learner": {"objective": {"name": "multi:softprob"}, "learner_model_param": {"num_class": "x"}, "gradient_booster": {"model": {}}}, "version": [1, 7, 4]})")}) {
    testing::write_text(bad_json, text);
    models::XGBoostEstimator est(models::XGBoostOptions{});
    expect_error<CheckpointError>([&] { est.load(bad_json); }, {bad_json.string(), "retrain"});
  }
  // Valid JSON of the right outline whose trees are nonsense: XGBoost's own reader refuses it,
  // in lathe's words first.
  json broken = json::parse(good_json);
  broken["learner"]["gradient_booster"]["model"]["trees"][0]["left_children"] = "oops";
  testing::write_text(bad_json, broken.dump());
  models::XGBoostEstimator est(models::XGBoostOptions{});
  expect_error<CheckpointError>([&] { est.load(bad_json); },
                                {bad_json.string(), "XGBoost could not read this model", "(XGBoost: "});
  expect_error<CheckpointError>([&] { est.load(dir / "missing.json"); },
                                {"missing.json: no such file", "model.json"});

  const auto bad_svm = dir / "bad.libsvm";
  std::string huge = good_svm;
  huge.replace(huge.find("nr_class 3"), 10, "nr_class 99999");
  std::string wrong_count = good_svm;
  wrong_count.replace(wrong_count.find("total_sv "), 9, "total_sv 1");
  for (const std::string& text :
       {good_svm.substr(0, good_svm.size() / 2), good_svm.substr(0, good_svm.find("SV\n")),
        std::string("\x00\x01garbage\xff", 11), std::string(""), huge, wrong_count,
        std::string("svm_type c_svc\nkernel_type rbf\nnr_class 2\ntotal_sv 1\nrho 0.5\nlabel 0 1\n"
                    "nr_sv 1 0\nSV\n1 3:0.5 2:0.1\n")}) {
    testing::write_text(bad_svm, text);
    models::SvmEstimator est_svm(models::SvmOptions{});
    expect_error<CheckpointError>([&] { est_svm.load(bad_svm); },
                                  {bad_svm.string(), "not a LIBSVM model", "retrain"});
  }
}

/// A wine run's config (the oracle's raw table, standardised, 70/15/15).
config::RunConfig wine_run(const fs::path& dir, const std::string& name, const std::string& model,
                           const std::vector<std::string>& overrides = {}) {
  const std::string yaml = fmt::format(
      "run: {{name: {}, dir: {}, seed: 1, threads: 1}}\n"
      "data: {{source: csv, path: {}, target: target, task: classification, scale: standard,"
      " val_fraction: 0.15, test_fraction: 0.15, num_workers: 0}}\n"
      "model: {}\n"
      "trainer: {{progress: none, tensorboard: false}}\n",
      name, (dir / "runs").string(), (dir / "wine.csv").string(), model);
  return config::parse_config(yaml, "run.yaml", overrides);
}

std::vector<run::Prediction> predict_all(const fs::path& run_dir, const fs::path& csv) {
  std::vector<run::Prediction> all;
  run::predict(run_dir, {csv.string()}, {}, [&](const auto& b) { all.insert(all.end(), b.begin(), b.end()); });
  return all;
}

TEST(EstimatorRun, XgboostRunWritesARunFolderPredictsEvaluatesAndResumesToTheSameModel) {
  TempDir dir;
  Tables tables(dir.path());
  // Without row or column sampling: XGBoost 1.7's samplers do not restart from the seed at a
  // loaded model's round, so only unsampled boosting resumes tree for tree.
  const std::string model = "{name: xgboost, n_estimators: 12, max_depth: 3, learning_rate: 0.3}";
  auto cfg = wine_run(dir.path(), "gbt", model, {"checkpoint.every_n_epochs=4", "checkpoint.keep_last=5"});
  const auto result = run::train_from_config(cfg);
  const fs::path r = result.run_dir;
  for (const char* f : {"config.yaml", "classes.txt", "preprocessing.json", "model.json",
                        "metrics.jsonl", "metrics.csv", "test_metrics.json", "test_predictions.json",
                        "feature_importance.json", "report.html", "run.json"})
    EXPECT_TRUE(fs::exists(r / f)) << f;
  EXPECT_EQ(result.history.size(), 12u);
  EXPECT_TRUE(result.history.back().val.count("val/accuracy"));
  EXPECT_GT(result.test.at("accuracy"), 0.8);
  const auto metrics = json::parse(testing::read_text(r / "test_metrics.json"));
  EXPECT_DOUBLE_EQ(metrics.at("accuracy").get<double>(), result.test.at("accuracy"));
  const auto importance = json::parse(testing::read_text(r / "feature_importance.json"));
  EXPECT_EQ(importance.at("features").size(), 13u);
  EXPECT_EQ(importance.at("features")[0].at("name"), "alcohol");
  for (const char* c : {"round-000004", "round-000008", "round-000012"})
    EXPECT_TRUE(fs::exists(r / "checkpoints" / c / "model.json")) << c;
  // evaluate_run reads model.json back and scores the test split as the run did.
  const auto evaluated = run::evaluate_run(r, {}, {});
  EXPECT_NEAR(evaluated.at("accuracy"), result.test.at("accuracy"), 1e-12);
  EXPECT_NEAR(evaluated.at("loss"), result.test.at("loss"), 1e-6);
  // predict answers raw rows through the run's preprocessing with the booster's classes.
  const auto preds = predict_all(r, dir / "wine.csv");
  ASSERT_EQ(preds.size(), 178u);
  int64_t right = 0;
  std::ifstream raw(dir / "wine.csv");
  std::string line;
  std::getline(raw, line);
  for (size_t i = 0; std::getline(raw, line); ++i)
    right += preds[i].labels[0] == line.substr(line.rfind(',') + 1);
  EXPECT_GT(right, 170);  // a boosted forest fits its own table nearly perfectly
  for (const auto& p : preds) EXPECT_GT(p.probabilities[0], 1.0 / 3);

  // Resume: a fresh run folder holding only round 4's checkpoint continues to round 12 and ends
  // with the uninterrupted run's model, tree for tree.
  auto again = wine_run(dir.path(), "gbt_resumed", model, {"checkpoint.every_n_epochs=4"});
  const fs::path r2 = again.run_dir();
  fs::create_directories(r2 / "checkpoints");
  fs::copy(r / "checkpoints" / "round-000004", r2 / "checkpoints" / "round-000004");
  const auto resumed = run::train_from_config(again, "auto");
  EXPECT_EQ(resumed.history.size(), 8u);  // rounds 5..12
  EXPECT_EQ(testing::read_text(r2 / "model.json"), testing::read_text(r / "model.json"));
  EXPECT_EQ(resumed.test, result.test);
  expect_error<CheckpointError>(
      [&] { run::train_from_config(wine_run(dir.path(), "fresh", model), "auto"); },
      {"no boosting checkpoint", "start the run without --resume"});
}

TEST(EstimatorRun, EarlyStoppingKeepsTheBestRoundAndSvmAndForestRunsPredict) {
  TempDir dir;
  Tables tables(dir.path());
  auto cfg = wine_run(dir.path(), "early", "{name: xgboost, n_estimators: 300, learning_rate: 0.5}",
                      {"trainer.early_stopping.monitor=val/loss", "trainer.early_stopping.patience=5",
                       "checkpoint.every_n_epochs=0"});
  const auto result = run::train_from_config(cfg);
  ASSERT_LT(result.history.size(), 300u);
  int64_t best = 0;
  double best_loss = INFINITY;
  for (const auto& rec : result.history)
    if (rec.val.at("val/loss") < best_loss) best_loss = rec.val.at("val/loss"), best = rec.epoch;
  models::XGBoostEstimator kept(models::XGBoostOptions{});
  kept.load(result.run_dir / "model.json");
  EXPECT_EQ(kept.rounds(), best);
  EXPECT_EQ(static_cast<int64_t>(result.history.size()), best + 5);
  EXPECT_NE(testing::read_text(result.run_dir / "run.json").find("early stopping"), std::string::npos);

  for (const std::string model : {"{name: svm, C: 2.0}", "{name: random_forest, n_estimators: 50}"}) {
    SCOPED_TRACE(model);
    const auto run = run::train_from_config(wine_run(dir.path(), "m", model));
    EXPECT_EQ(run.history.size(), 1u);
    EXPECT_GT(run.test.at("accuracy"), 0.85);
    const auto preds = predict_all(run.run_dir, dir / "wine.csv");
    EXPECT_EQ(preds.size(), 178u);
    EXPECT_NEAR(run::evaluate_run(run.run_dir, {}, {}).at("accuracy"), run.test.at("accuracy"), 1e-12);
  }
  EXPECT_TRUE(fs::exists(dir / "runs" / "m" / "model.json"));  // the forest ran last
  // Options are checked against the model's table: a misspelt one names the file and line.
  expect_error<ConfigError>(
      [&] { run::train_from_config(wine_run(dir.path(), "bad", "{name: svm, kernal: rbf}")); },
      {"kernal", "kernel"});
  expect_error<ConfigError>(
      [&] { run::train_from_config(wine_run(dir.path(), "bad", "{name: xgboost, device: cuda}")); },
      {"model.device = cuda", "built without CUDA", "set model.device: cpu"});
}

}  // namespace
}  // namespace lathe
