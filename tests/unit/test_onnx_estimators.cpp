// ONNX export of the estimators: XGBoost boosters and forests (model.json) and LIBSVM models
// (model.libsvm) fitted by the libraries themselves, against their own predictions in
// onnxruntime; and what a malformed model file says.
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lathe/core/error.h"
#include "lathe/onnx/estimators.h"
#include "tests/support.h"

namespace {

using lathe::ExportError;
using lathe::testing::expect_error;
using lathe::testing::read_text;
using lathe::testing::run_parity;
using lathe::testing::TempDir;
using lathe::testing::write_text;
namespace onnx = lathe::onnx;

/// onnxruntime against the library's own predictions (probabilities, decision values, regression
/// values): |difference| <= tolerance * max(1, |reference|). Relative above 1 because
/// onnxruntime's ai.onnx.ml operators compute in float32, whose rounding grows with the value
/// (a float32 near 150 is only held to 1.5e-5).
constexpr double kTolerance = 1e-5;
/// SVMs with the polynomial kernel: onnxruntime evaluates (gamma <x, sv> + coef0)^3 in float32
/// for every support vector and the sum cancels terms many times larger than the result (LIBSVM
/// works in double): measured 1.4e-5 here at values near 8.
constexpr double kPolynomialTolerance = 5e-5;

constexpr const char* kOracle = "estimator_onnx_oracle.py";

struct EstimatorCase {
  std::string name;
  std::string spec;  ///< KIND:TASK[:KERNEL] for the oracle's make
  std::vector<std::string> outputs;
  double tolerance = kTolerance;
};

const std::vector<std::string> kClassifier = {"class_id", "probabilities"};
const std::vector<std::string> kSvc = {"class_id", "probabilities", "decision_values"};
const std::vector<std::string> kRegressor = {"prediction"};

/// Per kind and task; the SVMs with each kernel.
const std::vector<EstimatorCase> kCases = {
    {"xgboost_binary", "xgboost:binary", kClassifier},
    {"xgboost_multiclass", "xgboost:multiclass", kClassifier},
    {"xgboost_softmax", "xgboost:softmax", kClassifier},
    {"xgboost_regression", "xgboost:regression", kRegressor},
    {"random_forest_binary", "random_forest:binary", kClassifier},
    {"random_forest_multiclass", "random_forest:multiclass", kClassifier},
    {"random_forest_regression", "random_forest:regression", kRegressor},
    {"svm_multiclass_rbf", "svm:multiclass:rbf", kSvc},
    {"svm_multiclass_linear", "svm:multiclass:linear", kSvc},
    {"svm_binary_polynomial", "svm:binary:polynomial", kSvc, kPolynomialTolerance},
    {"svm_binary_sigmoid", "svm:binary:sigmoid", kSvc},
    {"svm_regression_rbf", "svm:regression:rbf", kRegressor},
    {"svm_regression_polynomial", "svm:regression:polynomial", kRegressor, kPolynomialTolerance},
};

/// The libraries fit each model, lathe exports its file, onnxruntime runs it: every output
/// within the case's tolerance of the library's, every class id equal. (One oracle call makes all
/// the models and one checks them: the Python start-up dominates otherwise.)
TEST(EstimatorOnnx, EveryKindMatchesItsLibrary) {
  TempDir dir;
  std::string make_args = "make " + dir.path().string(),
              check_args = "check " + dir.path().string();
  for (const auto& c : kCases) {
    make_args += " " + c.name + ":" + c.spec;
    check_args += " " + c.name;
  }
  run_parity(kOracle, make_args);
  for (const auto& c : kCases) {
    const auto folder = dir / c.name;
    const bool svm = c.spec.rfind("svm", 0) == 0;
    const onnx::Model model = svm ? onnx::libsvm_graph(folder / "model.libsvm", 6)
                                  : onnx::xgboost_graph(folder / "model.json", 6);
    const onnx::ExportReport report = onnx::write_model(model, folder / "model.onnx");
    std::vector<std::string> outputs;
    for (const auto& io : report.outputs) outputs.push_back(io.name);
    EXPECT_EQ(outputs, c.outputs) << c.name;
    ASSERT_EQ(report.inputs.size(), 1u);
    EXPECT_EQ(report.inputs[0].name, "features");
    EXPECT_EQ(report.inputs[0].shape, (std::vector<std::string>{"batch", "6"})) << c.name;
  }
  std::istringstream printed(run_parity(kOracle, check_args));
  std::map<std::string, nlohmann::json> results;
  for (std::string line; std::getline(printed, line);) {
    if (line.empty() || line[0] != '{') continue;
    const auto j = nlohmann::json::parse(line);
    results[j["name"].get<std::string>()] = j;
    std::printf("[ estimator ] %s\n", line.c_str());
  }
  for (const auto& c : kCases) {
    ASSERT_TRUE(results.count(c.name)) << c.name << " was not checked";
    const auto& r = results[c.name];
    for (const auto& name : c.outputs) {
      ASSERT_TRUE(r.contains(name)) << c.name << ": " << r.dump();
      if (name == "class_id") {
        EXPECT_EQ(r[name]["mismatches"].get<int64_t>(), 0) << c.name;
      } else {
        EXPECT_LE(r[name]["max_scaled_diff"].get<double>(), c.tolerance) << c.name << " " << name;
      }
    }
  }
}

// ---- hostile model files: an ExportError naming the file and what is wrong -----------------

/// A small valid booster: one tree splitting feature 1 at 0.5, binary:logistic.
nlohmann::json tiny_booster() {
  return nlohmann::json::parse(R"({
    "learner": {
      "attributes": {},
      "gradient_booster": {"name": "gbtree", "model": {
        "gbtree_model_param": {"num_trees": "1", "num_parallel_tree": "1"},
        "tree_info": [0],
        "trees": [{"id": 0, "left_children": [1, -1, -1], "right_children": [2, -1, -1],
                   "split_indices": [1, 0, 0], "split_conditions": [0.5, -0.4, 0.3],
                   "default_left": [1, 0, 0], "split_type": [0, 0, 0],
                   "base_weights": [0, -0.4, 0.3],
                   "tree_param": {"num_nodes": "3", "size_leaf_vector": "0"}}]}},
      "learner_model_param": {"base_score": "5E-1", "num_class": "0", "num_feature": "3",
                              "num_target": "1"},
      "objective": {"name": "binary:logistic"}},
    "version": [1, 7, 4]})");
}

TEST(EstimatorOnnxHostile, ATinyBoosterExports) {
  TempDir dir;
  write_text(dir / "model.json", tiny_booster().dump());
  const auto m = onnx::xgboost_graph(dir / "model.json");
  EXPECT_EQ(std::get<int64_t>(m.graph.inputs[0].shape[1]), 3);
  EXPECT_NO_THROW(onnx::write_model(m, dir / "model.onnx"));
  // XGBoost 3.x writes base_score as a list: read alike.
  auto v3 = tiny_booster();
  v3["learner"]["learner_model_param"]["base_score"] = "[5E-1]";
  write_text(dir / "v3.json", v3.dump());
  EXPECT_NO_THROW(onnx::xgboost_graph(dir / "v3.json"));
}

TEST(EstimatorOnnxHostile, MalformedBoostersNameTheFileAndTheFault) {
  TempDir dir;
  const auto file = dir / "model.json";
  const auto expect = [&](const nlohmann::json& j, std::initializer_list<std::string> parts) {
    write_text(file, j.dump());
    std::vector<std::string> all{file.string()};
    all.insert(all.end(), parts);
    try {
      onnx::xgboost_graph(file);
      ADD_FAILURE() << "no error for: " << j.dump();
    } catch (const ExportError& e) {
      for (const auto& p : all)
        EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << " lacks " << p;
    }
  };
  write_text(file, "{\"learner\": [");
  expect_error<ExportError>([&] { onnx::xgboost_graph(file); }, {file.string(), "not valid JSON"});
  expect_error<ExportError>([&] { onnx::xgboost_graph(dir / "absent.json"); },
                            {"absent.json", "cannot be read"});

  auto j = tiny_booster();
  j["learner"]["objective"]["name"] = "rank:pairwise";
  expect(j, {"objective 'rank:pairwise'", "binary:logistic"});
  j = tiny_booster();
  j["learner"]["gradient_booster"]["name"] = "gblinear";
  expect(j, {"gblinear"});
  j = tiny_booster();
  j["learner"]["learner_model_param"].erase("base_score");
  expect(j, {"has no 'base_score'"});
  j = tiny_booster();
  j["learner"]["learner_model_param"]["base_score"] = "half";
  expect(j, {"base_score is 'half', not a number"});
  j = tiny_booster();
  j["learner"]["gradient_booster"]["model"]["trees"][0]["left_children"] = {1, -1};
  expect(j, {"tree 0.right_children has 3 entries for 2 nodes"});
  j = tiny_booster();
  j["learner"]["gradient_booster"]["model"]["trees"][0]["right_children"] = {1, -1, -1};
  expect(j, {"tree 0 node 1 is reached twice"});
  j = tiny_booster();
  j["learner"]["gradient_booster"]["model"]["trees"][0]["left_children"] = {7, -1, -1};
  expect(j, {"tree 0 node 0 has child 7 (the tree has 3 nodes)"});
  j = tiny_booster();
  j["learner"]["gradient_booster"]["model"]["trees"][0]["split_indices"] = {9, 0, 0};
  expect(j, {"tree 0 node 0 splits on feature 9; the booster has 3 features"});
  j = tiny_booster();
  j["learner"]["gradient_booster"]["model"]["trees"][0]["split_type"] = {1, 0, 0};
  expect(j, {"categorical split"});
  j = tiny_booster();
  j["learner"]["gradient_booster"]["model"]["tree_info"] = {0, 0};
  expect(j, {"tree_info has 2 entries for 1 trees"});
  j = tiny_booster();
  j["learner"]["gradient_booster"]["model"]["trees"][0]["split_conditions"] = {0.5, "x", 0.3};
  expect(j, {"tree 0.split_conditions holds a non-number"});
  expect_error<ExportError>(
      [&] {
        write_text(file, tiny_booster().dump());
        onnx::xgboost_graph(file, 5);
      },
      {file.string(), "fitted on 3 features but the run's preprocessing makes 5"});
}

/// A small valid LIBSVM model: 3 classes, rbf, 4 support vectors.
std::string tiny_svm(const std::string& replace = "", const std::string& with = "") {
  std::string text =
      "svm_type c_svc\nkernel_type rbf\ngamma 0.5\nnr_class 3\ntotal_sv 4\n"
      "rho 0.1 -0.2 0.3\nlabel 1 0 2\nnr_sv 2 1 1\nSV\n"
      "0.5 0.25 1:0.5 3:-1\n-0.5 0 2:1\n1 -1 1:1 2:1 3:1\n-1 -0.25 3:2\n";
  if (!replace.empty()) text.replace(text.find(replace), replace.size(), with);
  return text;
}

TEST(EstimatorOnnxHostile, ATinySvmExports) {
  TempDir dir;
  write_text(dir / "model.libsvm", tiny_svm());
  const auto m = onnx::libsvm_graph(dir / "model.libsvm", 4);
  EXPECT_EQ(std::get<int64_t>(m.graph.inputs[0].shape[1]), 4);
  EXPECT_NO_THROW(onnx::write_model(m, dir / "model.onnx"));
  EXPECT_EQ(std::get<int64_t>(onnx::libsvm_graph(dir / "model.libsvm").graph.inputs[0].shape[1]),
            3);  // the largest index used
}

TEST(EstimatorOnnxHostile, MalformedSvmModelsNameTheFileLineAndFault) {
  TempDir dir;
  const auto file = dir / "model.libsvm";
  const auto expect = [&](const std::string& text, std::initializer_list<std::string> parts) {
    write_text(file, text);
    std::vector<std::string> all{file.string()};
    all.insert(all.end(), parts);
    try {
      onnx::libsvm_graph(file, 3);
      ADD_FAILURE() << "no error for: " << text;
    } catch (const ExportError& e) {
      for (const auto& p : all)
        EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << " lacks " << p;
    }
  };
  expect(tiny_svm("svm_type c_svc", "svm_type one_class"), {":1:", "svm_type 'one_class'"});
  expect(tiny_svm("kernel_type rbf", "kernel_type precomputed"),
         {":2:", "kernel_type 'precomputed'"});
  expect(tiny_svm("gamma 0.5", "gamma nan"), {":3:", "gamma 'nan' is not a finite number"});
  expect(tiny_svm("rho 0.1 -0.2 0.3", "rho 0.1"), {":6:", "'rho' has 1 value(s), 3 expected"});
  expect(tiny_svm("label 1 0 2", "label 1 5 2"), {":7:", "the labels are 1 5 2"});
  expect(tiny_svm("nr_sv 2 1 1", "nr_sv 2 1 2"), {":8:", "nr_sv adds up to 5 but total_sv is 4"});
  expect(tiny_svm("SV\n", "weights 1\nSV\n"), {":9:", "unknown header key 'weights'"});
  expect(tiny_svm().substr(0, tiny_svm().find("SV\n")), {"no 'SV' line"});
  expect(tiny_svm("1 -1 1:1 2:1 3:1", "1 -1 2:1 1:1 3:1"), {":12:", "feature index 1 after 2"});
  expect(tiny_svm("-0.5 0 2:1", "-0.5 0 2=1"), {":11:", "'2=1' is not index:value"});
  expect(tiny_svm("-1 -0.25 3:2\n", ""), {"3 support vectors for total_sv 4"});
  expect(tiny_svm("-1 -0.25 3:2", "-1 -0.25 7:2"),
         {"uses feature 7 but the run's preprocessing makes 3"});
  expect(tiny_svm("nr_class 3", "nr_class three"), {":4:", "nr_class 'three' is not a finite"});
  expect_error<ExportError>([&] { onnx::libsvm_graph(dir / "absent.libsvm"); },
                            {"absent.libsvm", "cannot be read"});
}

}  // namespace
