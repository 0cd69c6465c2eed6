// SvmEstimator: LIBSVM's C-SVC / epsilon-SVR with scikit-learn's gamma rules and decision-value
// layout; model files are checked line by line before LIBSVM's own reader sees them.
#include "models/tabular/svm.h"

#include <libsvm/svm.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "lathe/core/error.h"
#include "lathe/core/fs.h"

namespace lathe::models {
namespace {

const std::map<std::string, int>& kernels() {
  static const std::map<std::string, int> k = {
      {"linear", LINEAR}, {"poly", POLY}, {"rbf", RBF}, {"sigmoid", SIGMOID}};
  return k;
}

/// One record as LIBSVM nodes: every feature (zeros too, so sums run as over a dense row),
/// indices 1..F, then the terminator.
void append_row(std::vector<svm_node>& nodes, const double* row, int64_t features) {
  for (int64_t f = 0; f < features; ++f) nodes.push_back({static_cast<int>(f + 1), row[f]});
  nodes.push_back({-1, 0.0});
}

/// A number that must be the whole token.
bool parse_number(const std::string& token, double& out) {
  if (token.empty()) return false;
  char* end = nullptr;
  out = std::strtod(token.c_str(), &end);
  return end == token.c_str() + token.size() && std::isfinite(out);
}

bool parse_int(const std::string& token, int64_t& out) {
  if (token.empty()) return false;
  char* end = nullptr;
  out = std::strtoll(token.c_str(), &end, 10);
  return end == token.c_str() + token.size();
}

}  // namespace

SvmEstimator::SvmEstimator(SvmOptions options) : options_(std::move(options)) {
  svm_set_print_string_function([](const char*) {});  // LIBSVM's progress dots stay quiet
  const auto& o = options_;
  LATHE_CHECK(kernels().count(o.kernel()) != 0, ConfigError,
              "model.kernel '{}' is not one of linear, poly, rbf, sigmoid", o.kernel());
  LATHE_CHECK(o.C() > 0, ConfigError, "model.C = {}: give a value above 0", o.C());
  LATHE_CHECK(o.epsilon() >= 0, ConfigError, "model.epsilon = {}: give 0 or more", o.epsilon());
  LATHE_CHECK(o.tol() > 0, ConfigError, "model.tol = {}: give a value above 0", o.tol());
  LATHE_CHECK(o.degree() >= 0, ConfigError, "model.degree = {}: give 0 or more", o.degree());
  LATHE_CHECK(o.cache_size() > 0, ConfigError, "model.cache_size = {}: give MB above 0",
              o.cache_size());
  double g = 0;
  LATHE_CHECK(o.gamma() == "scale" || o.gamma() == "auto" || (parse_number(o.gamma(), g) && g > 0),
              ConfigError, "model.gamma = {}: give scale, auto or a number above 0", o.gamma());
}

SvmEstimator::~SvmEstimator() { free_model(); }

void SvmEstimator::free_model() {
  if (model_ != nullptr) svm_free_and_destroy_model(&model_);
  model_ = nullptr;
  train_nodes_.clear();
}

int SvmEstimator::library_version() { return libsvm_version; }

void SvmEstimator::fit(const at::Tensor& x, const at::Tensor& y, const FitTask& task,
                       const RoundHook& after_round) {
  (void)after_round;  // one solve: no rounds
  LATHE_CHECK(task.kind == "classification" || task.kind == "regression", ConfigError,
              "svm fits tables for classification or regression, not task {}", task.kind);
  at::Tensor rows = x.to(at::kDouble).cpu().contiguous();  // (N, F)
  LATHE_CHECK(rows.dim() == 2 && rows.size(0) == y.size(0) && rows.size(0) > 0, ModelError,
              "svm: {} records but {} targets; fit needs a table (N, F) and one target per record",
              rows.size(0), y.size(0));
  const int64_t n = rows.size(0), features = rows.size(1);
  at::Tensor targets = y.to(at::kDouble).cpu().contiguous().reshape({-1});  // (N)
  if (task.kind == "classification") {
    // LIBSVM groups the records by class in the order the classes first appear; scikit-learn's
    // copy in class-id order. Records sorted by class (stably) make both solve the same problems
    // in the same order, so the solutions agree beyond the solver's tolerance.
    const at::Tensor order = std::get<1>(targets.sort(std::optional<bool>(true), 0, false));  // (N)
    rows = rows.index_select(0, order).contiguous();
    targets = targets.index_select(0, order).contiguous();
  }
  free_model();
  train_nodes_.reserve(static_cast<size_t>(n * (features + 1)));
  for (int64_t i = 0; i < n; ++i)
    append_row(train_nodes_, rows.data_ptr<double>() + i * features, features);
  std::vector<svm_node*> row_ptrs(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) row_ptrs[static_cast<size_t>(i)] = &train_nodes_[static_cast<size_t>(i * (features + 1))];
  std::vector<double> labels(targets.data_ptr<double>(), targets.data_ptr<double>() + n);
  svm_problem problem{static_cast<int>(n), labels.data(), row_ptrs.data()};

  const auto& o = options_;
  svm_parameter p{};
  p.svm_type = task.kind == "classification" ? C_SVC : EPSILON_SVR;
  p.kernel_type = kernels().at(o.kernel());
  p.degree = static_cast<int>(o.degree());
  if (o.gamma() == "scale") {  // sklearn: 1 / (F · X.var()), 1 when the table is constant
    const double var = rows.var(/*unbiased=*/false).item<double>();
    p.gamma = var != 0 ? 1.0 / (static_cast<double>(features) * var) : 1.0;
  } else if (o.gamma() == "auto") {
    p.gamma = 1.0 / static_cast<double>(features);
  } else {
    parse_number(o.gamma(), p.gamma);
  }
  p.coef0 = o.coef0();
  p.cache_size = o.cache_size();
  p.eps = o.tol();
  p.C = o.C();
  p.p = o.epsilon();
  p.shrinking = o.shrinking() ? 1 : 0;
  p.probability = 0;
  std::vector<int> weight_label;
  std::vector<double> weight;
  if (task.kind == "classification") {
    std::vector<bool> seen(static_cast<size_t>(task.num_classes), false);
    for (const double l : labels) {
      LATHE_CHECK(l >= 0 && l < static_cast<double>(task.num_classes), ModelError,
                  "svm: class id {} outside the {} classes", l, task.num_classes);
      seen[static_cast<size_t>(l)] = true;
    }
    for (size_t c = 0; c < seen.size(); ++c)
      LATHE_CHECK(seen[c], ModelError,
                  "svm: class {} has no record in the training split; an SVC learns only the "
                  "classes it sees: use more data or a smaller data.val_fraction / test_fraction",
                  c);
    for (size_t c = 0; c < task.class_weights.size(); ++c) {
      weight_label.push_back(static_cast<int>(c));
      weight.push_back(task.class_weights[c]);
    }
    p.nr_weight = static_cast<int>(weight.size());
    p.weight_label = weight_label.empty() ? nullptr : weight_label.data();
    p.weight = weight.empty() ? nullptr : weight.data();
  }
  if (const char* why = svm_check_parameter(&problem, &p); why != nullptr)
    throw ConfigError(fmt::format("svm: LIBSVM refuses these options: {}; change the model's options",
                                  why));
  model_ = svm_train(&problem, &p);
  LATHE_CHECK(model_ != nullptr, TrainError, "svm: LIBSVM's solver gave no model");
  model_->param.weight_label = nullptr;  // the vectors above go away; the model never reads them
  model_->param.weight = nullptr;
  model_->param.nr_weight = 0;
  max_index_ = features;
}

at::Tensor SvmEstimator::decision_values(const at::Tensor& x) const {
  LATHE_CHECK(model_ != nullptr, ModelError, "svm: predict before the model was fitted or loaded");
  const at::Tensor rows = x.to(at::kDouble).cpu().contiguous();  // (N, F)
  LATHE_CHECK(rows.dim() == 2 && rows.size(1) >= max_index_, ModelError,
              "svm: the records have {} features, the model was trained on {}",
              rows.dim() == 2 ? rows.size(1) : 0, max_index_);
  const int64_t n = rows.size(0), features = rows.size(1);
  const bool classify = model_->param.svm_type == C_SVC;
  const int k = model_->nr_class;
  const int64_t pairs = classify ? int64_t{k} * (k - 1) / 2 : 1;
  // LIBSVM orders classes by first appearance in the training data; sklearn by id. position[c]
  // is class id c's place in LIBSVM's order.
  std::vector<int> position(static_cast<size_t>(k), 0);
  if (classify)
    for (int i = 0; i < k; ++i) {
      const int id = model_->label[i];
      LATHE_CHECK(id >= 0 && id < k, ModelError,
                  "svm: the model's class labels are not 0..{} (label {} found)", k - 1, id);
      position[static_cast<size_t>(id)] = i;
    }
  const auto pair_index = [k](int a, int b) {  // LIBSVM's index of its pair (a, b), a < b
    return a * k - a * (a + 1) / 2 + (b - a - 1);
  };
  at::Tensor out = at::empty({n, pairs}, at::kDouble);  // (N, P)
  std::vector<svm_node> nodes;
  std::vector<double> dec(static_cast<size_t>(pairs));
  for (int64_t r = 0; r < n; ++r) {
    nodes.clear();
    append_row(nodes, rows.data_ptr<double>() + r * features, features);
    const double value = svm_predict_values(model_, nodes.data(), dec.data());
    double* o = out.data_ptr<double>() + r * pairs;
    if (!classify) {
      o[0] = value;
      continue;
    }
    int64_t at_pair = 0;
    for (int i = 0; i < k; ++i)
      for (int j = i + 1; j < k; ++j) {
        const int pi = position[static_cast<size_t>(i)], pj = position[static_cast<size_t>(j)];
        o[at_pair++] = pi < pj ? dec[static_cast<size_t>(pair_index(pi, pj))]
                               : -dec[static_cast<size_t>(pair_index(pj, pi))];
      }
  }
  return out;
}

at::Tensor SvmEstimator::predict(const at::Tensor& x) const {
  const at::Tensor dec = decision_values(x);  // (N, P)
  const int64_t n = dec.size(0);
  if (model_->param.svm_type != C_SVC) return dec.to(at::kFloat).reshape({n, 1});
  const int k = model_->nr_class;
  if (k == 2)  // sklearn's decision_function: -dec (positive: class 1)
    return at::stack({at::zeros({n}, at::kDouble), -dec.select(1, 0)}, 1).to(at::kFloat);
  // sklearn's _ovr_decision_function(dec < 0, -dec, K): votes + conf / (3 (|conf| + 1))
  at::Tensor votes = at::zeros({n, k}, at::kDouble), conf = at::zeros({n, k}, at::kDouble);
  int64_t p = 0;
  for (int i = 0; i < k; ++i)
    for (int j = i + 1; j < k; ++j, ++p) {
      const at::Tensor d = dec.select(1, p);  // (N)
      conf.select(1, i).add_(d);
      conf.select(1, j).sub_(d);
      votes.select(1, i).add_((d >= 0).to(at::kDouble));
      votes.select(1, j).add_((d < 0).to(at::kDouble));
    }
  return (votes + conf / (3 * (conf.abs() + 1))).to(at::kFloat);  // (N, K)
}

double SvmEstimator::fitted_gamma() const {
  LATHE_CHECK(model_ != nullptr, ModelError, "svm: no model before fit or load");
  return model_->param.gamma;
}

void SvmEstimator::save(const std::filesystem::path& file) const {
  LATHE_CHECK(model_ != nullptr, ModelError, "svm: no model to write before fit or load");
  // svm_save_model writes a path; it goes to a temporary beside the file, then atomically over it.
  const auto tmp = file.parent_path() / (file.filename().string() + ".libsvm-tmp");
  LATHE_CHECK(svm_save_model(tmp.string().c_str(), model_) == 0, IoError,
              "{}: could not write the LIBSVM model (disk full or the folder not writable?)",
              tmp.string());
  std::ifstream in(tmp, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  in.close();
  std::filesystem::remove(tmp);
  write_file_atomic(file, text.str());
}

void SvmEstimator::load(const std::filesystem::path& file) {
  if (const auto why = not_a_regular_file(file); !why.empty())
    throw CheckpointError(fmt::format("{}: {}; an svm run keeps its model there (model.libsvm)",
                                      file.string(), why));
  // LIBSVM's reader trusts its input (counts size its arrays): every line is checked first.
  std::ifstream in(file, std::ios::binary);
  int64_t line_no = 0;
  const auto bad = [&](const std::string& why) {
    return CheckpointError(fmt::format(
        "{}:{}: not a LIBSVM model ({}); the file is damaged or from elsewhere: retrain the run",
        file.string(), line_no, why));
  };
  std::string type, kernel;
  int64_t nr_class = 0, total_sv = -1, rho = 0, labels = 0, nr_sv_sum = -1;
  bool in_svs = false;
  int64_t svs = 0, max_index = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    std::istringstream words(line);
    std::vector<std::string> w;
    for (std::string t; words >> t;) w.push_back(t);
    if (!in_svs) {
      if (w.empty()) throw bad("an empty line in the header");
      const std::string& key = w[0];
      const auto one_int = [&](int64_t lo, int64_t hi) {
        int64_t v = 0;
        if (w.size() != 2 || !parse_int(w[1], v) || v < lo || v > hi)
          throw bad(fmt::format("{} needs one whole number in [{}, {}]", key, lo, hi));
        return v;
      };
      const auto numbers = [&](size_t count) {
        if (w.size() != count + 1) throw bad(fmt::format("{} needs {} numbers", key, count));
        for (size_t i = 1; i < w.size(); ++i) {
          double v = 0;
          if (!parse_number(w[i], v)) throw bad(fmt::format("{}: '{}' is not a number", key, w[i]));
        }
      };
      if (key == "svm_type") {
        if (w.size() != 2 || (w[1] != "c_svc" && w[1] != "epsilon_svr"))
          throw bad("svm_type must be c_svc or epsilon_svr");
        type = w[1];
      } else if (key == "kernel_type") {
        if (w.size() != 2 || (w[1] != "linear" && w[1] != "polynomial" && w[1] != "rbf" &&
                              w[1] != "sigmoid"))
          throw bad("kernel_type must be linear, polynomial, rbf or sigmoid");
        kernel = w[1];
      } else if (key == "degree") {
        one_int(0, 1000);
      } else if (key == "gamma" || key == "coef0") {
        numbers(1);
      } else if (key == "nr_class") {
        nr_class = one_int(2, 100000);
      } else if (key == "total_sv") {
        total_sv = one_int(1, 100000000);
      } else if (key == "rho") {
        if (nr_class == 0) throw bad("rho before nr_class");
        rho = nr_class * (nr_class - 1) / 2;
        numbers(static_cast<size_t>(rho));
      } else if (key == "label" || key == "nr_sv") {
        if (nr_class == 0) throw bad(key + " before nr_class");
        if (w.size() != static_cast<size_t>(nr_class) + 1)
          throw bad(fmt::format("{} needs {} whole numbers", key, nr_class));
        int64_t sum = 0;
        for (size_t i = 1; i < w.size(); ++i) {
          int64_t v = 0;
          if (!parse_int(w[i], v) || v < 0 || (key == "label" && v >= nr_class))
            throw bad(fmt::format("{}: '{}' is not a class id or count", key, w[i]));
          sum += v;
        }
        if (key == "label") labels = nr_class;
        else nr_sv_sum = sum;
      } else if (key == "SV") {
        if (w.size() != 1) throw bad("SV stands alone on its line");
        if (type.empty() || kernel.empty() || nr_class == 0 || total_sv < 0 || rho == 0)
          throw bad("the header lacks svm_type, kernel_type, nr_class, total_sv or rho");
        if (type == "c_svc" && (labels == 0 || nr_sv_sum != total_sv))
          throw bad("a c_svc model needs label and nr_sv (summing to total_sv)");
        in_svs = true;
      } else {
        const bool text = std::all_of(key.begin(), key.end(), [](unsigned char c) {
          return c > 32 && c < 127;
        });
        throw bad(text ? fmt::format("unknown header key '{}'", key)
                       : std::string("a header line that is not text"));
      }
      continue;
    }
    // A support vector: nr_class - 1 coefficients, then index:value with rising indices.
    ++svs;
    if (svs > total_sv) throw bad(fmt::format("more than total_sv = {} support vectors", total_sv));
    if (w.size() < static_cast<size_t>(nr_class - 1))
      throw bad(fmt::format("a support vector needs {} coefficients", nr_class - 1));
    int64_t last = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      double v = 0;
      if (i < static_cast<size_t>(nr_class - 1)) {
        if (!parse_number(w[i], v)) throw bad(fmt::format("coefficient '{}' is not a number", w[i]));
        continue;
      }
      const auto colon = w[i].find(':');
      int64_t index = 0;
      if (colon == std::string::npos || !parse_int(w[i].substr(0, colon), index) ||
          index <= last || index > 10000000 || !parse_number(w[i].substr(colon + 1), v))
        throw bad(fmt::format("'{}' is not index:value with a rising index", w[i]));
      last = index;
    }
    max_index = std::max(max_index, last);
  }
  if (!in_svs) throw bad("no SV section: truncated");
  if (svs != total_sv)
    throw bad(fmt::format("{} support vectors, but total_sv says {}: truncated", svs, total_sv));
  svm_model* loaded = svm_load_model(file.string().c_str());
  LATHE_CHECK(loaded != nullptr, CheckpointError,
              "{}: LIBSVM could not read this model; retrain the run", file.string());
  free_model();
  model_ = loaded;
  max_index_ = max_index;
}

}  // namespace lathe::models
