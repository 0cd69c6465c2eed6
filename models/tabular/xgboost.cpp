// XGBoostEstimator: XGBoost's C API driven round by round; every library failure becomes a
// lathe error that says what lathe was doing, with XGBoost's own words after it.
#include "models/tabular/xgboost.h"

#include <xgboost/c_api.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lathe/core/error.h"
#include "lathe/core/fs.h"
#include "lathe/core/log.h"

namespace lathe::models {
namespace {

/// Throws ErrorType "<what>; <advice> (XGBoost: <its message>)" when an XGBoost call failed.
template <typename ErrorType>
void check_xgb(int status, const std::string& what, const std::string& advice) {
  if (status == 0) return;
  throw ErrorType(fmt::format("{}; {} (XGBoost: {})", what, advice, XGBGetLastError()));
}

/// Routes XGBoost's own log lines to lathe's debug log, once.
void quiet_library() {
  static const bool done = [] {
    XGBRegisterLogCallback([](const char* line) { log::debug("xgboost: {}", line); });
    return true;
  }();
  (void)done;
}

/// A DMatrix over (N, F) float32 rows; freed on scope exit.
class DMatrix {
 public:
  explicit DMatrix(const at::Tensor& x) {
    const at::Tensor rows = x.to(at::kFloat).cpu().contiguous();  // (N, F)
    LATHE_CHECK(rows.dim() == 2, ModelError,
                "xgboost: expected a table of records (N, F), got a tensor with {} dimensions",
                rows.dim());
    check_xgb<ModelError>(
        XGDMatrixCreateFromMat(rows.data_ptr<float>(), static_cast<bst_ulong>(rows.size(0)),
                               static_cast<bst_ulong>(rows.size(1)), NAN, &handle),
        fmt::format("xgboost: could not take the table of {} records × {} features", rows.size(0),
                    rows.size(1)),
        "check that the features are finite numbers");
  }
  ~DMatrix() {
    if (handle != nullptr) XGDMatrixFree(handle);
  }
  DMatrix(const DMatrix&) = delete;
  DMatrix& operator=(const DMatrix&) = delete;
  void set(const char* field, const std::vector<float>& values) {
    check_xgb<ModelError>(XGDMatrixSetFloatInfo(handle, field, values.data(),
                                                static_cast<bst_ulong>(values.size())),
                          fmt::format("xgboost: could not set the records' {}s", field),
                          "this is a bug in lathe; please report it");
  }
  DMatrixHandle handle = nullptr;
};

std::string format_param(double v) { return fmt::format("{}", v); }

}  // namespace

XGBoostEstimator::XGBoostEstimator(XGBoostOptions options) : options_(std::move(options)) {
  quiet_library();
  const auto& o = options_;
  LATHE_CHECK(o.mode() == "gbtree" || o.mode() == "forest", ConfigError,
              "xgboost: mode '{}' is not one of gbtree, forest", o.mode());
  LATHE_CHECK(o.n_estimators() >= 1, ConfigError, "model.n_estimators = {}: give 1 or more",
              o.n_estimators());
  LATHE_CHECK(o.learning_rate() > 0, ConfigError, "model.learning_rate = {}: give a value above 0",
              o.learning_rate());
  LATHE_CHECK(o.max_depth() >= 0, ConfigError, "model.max_depth = {}: give 0 (no limit, with "
              "tree_method hist) or more", o.max_depth());
  const std::pair<const char*, double> fractions[] = {{"subsample", o.subsample()},
                                                       {"colsample_bytree", o.colsample_bytree()},
                                                       {"colsample_bynode", o.colsample_bynode()}};
  for (const auto& [key, v] : fractions)
    LATHE_CHECK(v > 0 && v <= 1, ConfigError, "model.{} = {}: give a fraction in (0, 1]", key, v);
  LATHE_CHECK(o.tree_method() == "hist" || o.tree_method() == "exact" ||
                  o.tree_method() == "approx",
              ConfigError, "model.tree_method '{}' is not one of hist, exact, approx",
              o.tree_method());
  LATHE_CHECK(o.device() == "cpu" || o.device() == "cuda", ConfigError,
              "model.device '{}' is not one of cpu, cuda", o.device());
  if (o.device() == "cuda") {
    const char* info = nullptr;
    XGBuildInfo(&info);
    const auto build = nlohmann::json::parse(info != nullptr ? info : "{}", nullptr, false);
    const bool cuda = build.is_object() && build.value("USE_CUDA", false);
    LATHE_CHECK(cuda, ConfigError,
                "model.device = cuda, but the XGBoost lathe links (libxgboost {}) is built without "
                "CUDA; set model.device: cpu, or build lathe against an XGBoost built with "
                "USE_CUDA",
                library_version());
  }
}

XGBoostEstimator::~XGBoostEstimator() {
  if (booster_ != nullptr) XGBoosterFree(booster_);
}

std::string XGBoostEstimator::library_version() {
  int major = 0, minor = 0, patch = 0;
  XGBoostVersion(&major, &minor, &patch);
  return fmt::format("{}.{}.{}", major, minor, patch);
}

void XGBoostEstimator::set_params(void* booster, const FitTask& task) const {
  const auto& o = options_;
  const bool forest = o.mode() == "forest";
  std::vector<std::pair<std::string, std::string>> params = {
      {"booster", "gbtree"},
      {"verbosity", "0"},
      {"seed", std::to_string(task.seed)},
      {"seed_per_iteration", "1"},
      {"eta", format_param(forest ? 1.0 : o.learning_rate())},
      {"max_depth", std::to_string(o.max_depth())},
      {"min_child_weight", format_param(o.min_child_weight())},
      {"subsample", format_param(o.subsample())},
      {"colsample_bytree", format_param(o.colsample_bytree())},
      {"colsample_bynode", format_param(o.colsample_bynode())},
      {"lambda", format_param(o.reg_lambda())},
      {"alpha", format_param(o.reg_alpha())},
      {"gamma", format_param(o.gamma())},
      {"max_bin", std::to_string(o.max_bin())},
      {"tree_method", o.device() == "cuda" ? "gpu_hist" : o.tree_method()},
      {"num_parallel_tree", std::to_string(forest ? o.n_estimators() : 1)},
  };
  if (o.device() == "cuda") params.emplace_back("gpu_id", "0");
  if (task.threads > 0) params.emplace_back("nthread", std::to_string(task.threads));
  if (task.kind == "classification") {
    if (task.num_classes > 2) {
      params.emplace_back("objective", "multi:softprob");
      params.emplace_back("num_class", std::to_string(task.num_classes));
    } else {
      params.emplace_back("objective", "binary:logistic");
    }
  } else {
    const std::string loss = task.loss.empty() ? "mse" : task.loss;
    LATHE_CHECK(loss == "mse" || loss == "l1", ConfigError,
                "task.loss = {}: xgboost fits regression with mse (reg:squarederror) or l1 "
                "(reg:absoluteerror); choose one of them",
                loss);
    params.emplace_back("objective", loss == "mse" ? "reg:squarederror" : "reg:absoluteerror");
  }
  for (const auto& [k, v] : params)
    check_xgb<ConfigError>(XGBoosterSetParam(booster, k.c_str(), v.c_str()),
                           fmt::format("xgboost: parameter {} = {} was refused", k, v),
                           "check the model's options");
}

void XGBoostEstimator::fit(const at::Tensor& x, const at::Tensor& y, const FitTask& task,
                           const RoundHook& after_round) {
  LATHE_CHECK(task.kind == "classification" || task.kind == "regression", ConfigError,
              "xgboost fits tables for classification or regression, not task {}", task.kind);
  LATHE_CHECK(x.size(0) == y.size(0) && x.size(0) > 0, ModelError,
              "xgboost: {} records but {} targets; fit needs one target per record", x.size(0),
              y.size(0));
  DMatrix train(x);
  const at::Tensor t = y.to(at::kFloat).cpu().contiguous().reshape({-1});  // (N)
  train.set("label", std::vector<float>(t.data_ptr<float>(), t.data_ptr<float>() + t.numel()));
  if (!task.class_weights.empty()) {  // sklearn's class_weight as instance weights
    const at::Tensor ids = y.to(at::kLong).cpu().contiguous().reshape({-1});
    std::vector<float> w(static_cast<size_t>(ids.numel()));
    for (size_t i = 0; i < w.size(); ++i)
      w[i] = static_cast<float>(task.class_weights.at(static_cast<size_t>(ids.data_ptr<int64_t>()[i])));
    train.set("weight", w);
  }
  // A model already here (a checkpoint) continues: a booster that caches this training matrix,
  // with the run's parameters, then the saved trees (what xgboost.train(xgb_model=...) does).
  const std::string earlier = booster_ != nullptr ? to_json() : std::string();
  BoosterHandle booster = nullptr;
  DMatrixHandle cache[] = {train.handle};
  check_xgb<ModelError>(XGBoosterCreate(cache, 1, &booster), "xgboost: could not create a booster",
                        "this is a bug in lathe; please report it");
  try {
    set_params(booster, task);
    if (!earlier.empty())
      check_xgb<CheckpointError>(
          XGBoosterLoadModelFromBuffer(booster, earlier.data(), earlier.size()),
          "xgboost: could not continue from the checkpoint's trees",
          "resume from another checkpoint, or start the run afresh");
  } catch (...) {
    XGBoosterFree(booster);
    throw;
  }
  if (booster_ != nullptr) XGBoosterFree(booster_);
  booster_ = booster;
  if (task.kind == "classification")  // the hook predicts after each round: layout first
    read_layout(task.num_classes > 2 ? "multi:softprob" : "binary:logistic", task.num_classes);
  else
    read_layout("reg:squarederror", 1);
  const int64_t total = options_.mode() == "forest" ? 1 : options_.n_estimators();
  for (int64_t round = rounds(); round < total; ++round) {
    check_xgb<TrainError>(
        XGBoosterUpdateOneIter(booster_, static_cast<int>(round), train.handle),
        fmt::format("xgboost: boosting round {} failed", round + 1),
        "check the targets (class ids below the number of classes, finite values)");
    if (after_round && !after_round(round + 1)) break;
  }
}

void XGBoostEstimator::read_layout(const std::string& objective, int64_t num_class) {
  if (objective.rfind("multi:", 0) == 0) {
    layout_ = "multi";
    num_class_ = num_class;
  } else if (objective.rfind("binary:", 0) == 0) {
    layout_ = "binary";
    num_class_ = 2;
  } else {
    layout_ = "reg";
    num_class_ = 0;
  }
}

int64_t XGBoostEstimator::rounds() const {
  if (booster_ == nullptr) return 0;
  int n = 0;
  check_xgb<ModelError>(XGBoosterBoostedRounds(booster_, &n), "xgboost: could not count the rounds",
                        "this is a bug in lathe; please report it");
  return n;
}

void XGBoostEstimator::keep_rounds(int64_t rounds) {
  LATHE_CHECK(booster_ != nullptr, ModelError, "xgboost: keep_rounds before fit or load");
  if (rounds >= this->rounds()) return;
  BoosterHandle sliced = nullptr;
  check_xgb<ModelError>(XGBoosterSlice(booster_, 0, static_cast<int>(rounds), 1, &sliced),
                        fmt::format("xgboost: could not keep the first {} rounds", rounds),
                        "this is a bug in lathe; please report it");
  XGBoosterFree(booster_);
  booster_ = sliced;
}

at::Tensor XGBoostEstimator::predict(const at::Tensor& x) const {
  LATHE_CHECK(booster_ != nullptr, ModelError,
              "xgboost: predict before the model was fitted or loaded");
  DMatrix data(x);
  const char* config =
      R"({"type": 1, "training": false, "iteration_begin": 0, "iteration_end": 0, "strict_shape": false})";
  const bst_ulong* shape = nullptr;
  bst_ulong dim = 0;
  const float* out = nullptr;
  check_xgb<ModelError>(XGBoosterPredictFromDMatrix(booster_, data.handle, config, &shape, &dim, &out),
                        fmt::format("xgboost: prediction on {} records failed", x.size(0)),
                        "check that the records have the features the model was trained on");
  const int64_t n = x.size(0);
  int64_t total = 1;
  for (bst_ulong i = 0; i < dim; ++i) total *= static_cast<int64_t>(shape[i]);
  const at::Tensor margins = at::from_blob(const_cast<float*>(out), {total}, at::kFloat).clone();
  if (layout_ == "multi") return margins.reshape({n, num_class_});  // (N, K)
  if (layout_ == "binary")                                           // (N, 2): [0, margin]
    return at::stack({at::zeros({n}, at::kFloat), margins.reshape({n})}, 1);
  return margins.reshape({n, 1});  // (N, 1)
}

std::string XGBoostEstimator::to_json() const {
  LATHE_CHECK(booster_ != nullptr, ModelError, "xgboost: no model to write before fit or load");
  bst_ulong len = 0;
  const char* buf = nullptr;
  check_xgb<ModelError>(XGBoosterSaveModelToBuffer(booster_, R"({"format": "json"})", &len, &buf),
                        "xgboost: could not write the model as JSON",
                        "this is a bug in lathe; please report it");
  return std::string(buf, len);
}

void XGBoostEstimator::save(const std::filesystem::path& file) const {
  write_file_atomic(file, to_json());
}

void XGBoostEstimator::load(const std::filesystem::path& file) {
  if (const auto why = not_a_regular_file(file); !why.empty())
    throw CheckpointError(fmt::format("{}: {}; an xgboost run keeps its model there (model.json)",
                                      file.string(), why));
  std::ifstream in(file, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  const std::string body = text.str();
  const auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  const auto bad = [&](const std::string& why) {
    return CheckpointError(fmt::format(
        "{}: not an XGBoost JSON model ({}); the file is damaged or from elsewhere: retrain the "
        "run, or restore the file from the run's checkpoints/",
        file.string(), why));
  };
  if (j.is_discarded()) throw bad("not valid JSON: truncated or not text");
  if (!j.is_object() || !j.contains("learner") || !j["learner"].is_object() ||
      !j.contains("version"))
    throw bad("no 'learner' object and 'version'");
  const auto& learner = j["learner"];
  const auto member = [&](const nlohmann::json& o, const char* key) -> const nlohmann::json& {
    if (!o.is_object() || !o.contains(key)) throw bad(fmt::format("no '{}'", key));
    return o[key];
  };
  const auto& objective = member(member(learner, "objective"), "name");
  const auto& params = member(learner, "learner_model_param");
  const auto& num_class = member(params, "num_class");
  if (!objective.is_string() || !num_class.is_string())
    throw bad("objective.name and learner_model_param.num_class must be strings");
  member(member(learner, "gradient_booster"), "model");
  int64_t classes = 0;
  try {
    classes = std::stoll(num_class.get<std::string>());
  } catch (const std::exception&) {
    throw bad("learner_model_param.num_class is not a number");
  }
  BoosterHandle booster = nullptr;
  check_xgb<CheckpointError>(XGBoosterCreate(nullptr, 0, &booster),
                             fmt::format("{}: could not create a booster to load it", file.string()),
                             "this is a bug in lathe; please report it");
  if (XGBoosterLoadModelFromBuffer(booster, body.data(), body.size()) != 0) {
    const std::string why = XGBGetLastError();
    XGBoosterFree(booster);
    throw CheckpointError(fmt::format(
        "{}: XGBoost could not read this model; the file is damaged or from an XGBoost other "
        "than lathe's {}: retrain the run, or restore the file (XGBoost: {})",
        file.string(), library_version(), why));
  }
  if (booster_ != nullptr) XGBoosterFree(booster_);
  booster_ = booster;
  read_layout(objective.get<std::string>(), classes);
}

std::vector<double> XGBoostEstimator::feature_importance(int64_t num_features) const {
  LATHE_CHECK(booster_ != nullptr, ModelError, "xgboost: no model before fit or load");
  bst_ulong n = 0, dim = 0;
  const char** names = nullptr;
  const bst_ulong* shape = nullptr;
  const float* scores = nullptr;
  check_xgb<ModelError>(XGBoosterFeatureScore(booster_, R"({"importance_type": "total_gain"})", &n,
                                              &names, &dim, &shape, &scores),
                        "xgboost: could not compute the feature importance",
                        "this is a bug in lathe; please report it");
  // Features are named f0, f1, ...; those no split uses are absent. Multi-class scores come per
  // class (n, K): their sum is the feature's total gain.
  const bst_ulong per = n == 0 ? 1 : [&] {
    bst_ulong total = 1;
    for (bst_ulong i = 0; i < dim; ++i) total *= shape[i];
    return total / n;
  }();
  std::vector<double> out(static_cast<size_t>(num_features), 0.0);
  for (bst_ulong i = 0; i < n; ++i) {
    const std::string name = names[i];
    if (name.size() < 2 || name[0] != 'f') continue;
    const auto index = static_cast<size_t>(std::stoll(name.substr(1)));
    if (index >= out.size()) continue;
    for (bst_ulong c = 0; c < per; ++c) out[index] += scores[i * per + c];
  }
  return out;
}

}  // namespace lathe::models
