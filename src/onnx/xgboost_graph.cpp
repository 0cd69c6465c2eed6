// An XGBoost booster's JSON model (model.json) → an ai.onnx.ml TreeEnsembleClassifier or
// TreeEnsembleRegressor over the `features` input.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lathe/core/error.h"
#include "lathe/onnx/estimators.h"
#include "src/onnx/estimator_graph.h"

namespace lathe::onnx {
namespace {

using nlohmann::json;

/// What a booster's objective makes of the summed trees.
enum class Output { binary, multiclass, regression };

/// The objectives lathe exports: name → what the margins become.
struct ObjectiveSpec {
  const char* name;
  Output output;
};
constexpr ObjectiveSpec kObjectives[] = {
    {"binary:logistic", Output::binary},       {"multi:softprob", Output::multiclass},
    {"multi:softmax", Output::multiclass},     {"reg:squarederror", Output::regression},
    {"reg:absoluteerror", Output::regression},
};

/// Reads one model file and says what is wrong with it, naming the file and the JSON path.
class Reader {
 public:
  explicit Reader(std::filesystem::path file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw ExportError(fmt::format(
        "{}: {}; lathe exports the JSON model XGBoost's save_model writes (model.json of an "
        "xgboost or random_forest run)",
        file_.string(), what));
  }

  json load() const {
    std::ifstream in(file_, std::ios::binary);
    if (!in) fail("cannot be read");
    std::stringstream text;
    text << in.rdbuf();
    json j = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) fail("is not valid JSON");
    return j;
  }

  const json& at(const json& parent, const std::string& key, const std::string& where) const {
    if (!parent.is_object() || !parent.contains(key))
      fail(fmt::format("{} has no '{}'", where, key));
    return parent.at(key);
  }

  /// A scalar XGBoost writes as a string ("5E-1", "3") or as a number; 3.x writes base_score as
  /// a bracketed list ("[5E-1]", "[0.1,0.2,0.3]"). Returns every number in it.
  std::vector<double> numbers(const json& v, const std::string& where) const {
    std::string text;
    if (v.is_number()) return {v.get<double>()};
    if (v.is_array()) {
      std::vector<double> out;
      for (const auto& e : v) {
        if (!e.is_number()) fail(fmt::format("{} holds a non-number", where));
        out.push_back(e.get<double>());
      }
      return out;
    }
    if (!v.is_string()) fail(fmt::format("{} is not a number", where));
    text = v.get<std::string>();
    if (!text.empty() && text.front() == '[' && text.back() == ']')
      text = text.substr(1, text.size() - 2);
    std::vector<double> out;
    std::stringstream parts(text);
    for (std::string part; std::getline(parts, part, ',');) {
      size_t used = 0;
      double x = 0;
      try {
        x = std::stod(part, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || part.find_first_not_of(" \t", used) != std::string::npos)
        fail(fmt::format("{} is '{}', not a number", where, v.get<std::string>()));
      out.push_back(x);
    }
    if (out.empty()) fail(fmt::format("{} is empty", where));
    return out;
  }

  int64_t integer(const json& v, const std::string& where) const {
    const std::vector<double> n = numbers(v, where);
    if (n.size() != 1 || n[0] != std::floor(n[0]) || std::abs(n[0]) > 1e15)
      fail(fmt::format("{} is not an integer", where));
    return static_cast<int64_t>(n[0]);
  }

  /// A per-node array of the tree: numbers (or booleans, for default_left), `count` of them.
  std::vector<double> node_array(const json& tree, const char* key, size_t count,
                                 const std::string& where) const {
    const json& a = at(tree, key, where);
    if (!a.is_array()) fail(fmt::format("{}.{} is not an array", where, key));
    if (a.size() != count)
      fail(fmt::format("{}.{} has {} entries for {} nodes", where, key, a.size(), count));
    std::vector<double> out;
    out.reserve(count);
    for (const auto& e : a) {
      if (e.is_boolean())
        out.push_back(e.get<bool>() ? 1.0 : 0.0);
      else if (e.is_number())
        out.push_back(e.get<double>());
      else
        fail(fmt::format("{}.{} holds a non-number", where, key));
    }
    return out;
  }

 private:
  std::filesystem::path file_;
};

}  // namespace

Model xgboost_graph(const std::filesystem::path& model_json, int64_t num_features) {
  const Reader r(model_json);
  const json root = r.load();
  const json& learner = r.at(root, "learner", "the model");
  const json& params = r.at(learner, "learner_model_param", "learner");
  const json& booster = r.at(learner, "gradient_booster", "learner");
  const std::string booster_name = r.at(booster, "name", "learner.gradient_booster").is_string()
                                       ? booster.at("name").get<std::string>()
                                       : "";
  if (booster_name != "gbtree")
    r.fail(fmt::format("learner.gradient_booster.name is '{}'; lathe exports gbtree boosters",
                       booster_name));
  const json& objective = r.at(r.at(learner, "objective", "learner"), "name", "learner.objective");
  const std::string objective_name = objective.is_string() ? objective.get<std::string>() : "";
  const ObjectiveSpec* spec = nullptr;
  std::vector<std::string> known;
  for (const auto& o : kObjectives) {
    known.emplace_back(o.name);
    if (objective_name == o.name) spec = &o;
  }
  if (spec == nullptr)
    r.fail(fmt::format("objective '{}' has no ONNX export in lathe (exported: {})", objective_name,
                       fmt::join(known, ", ")));

  const int64_t file_features =
      r.integer(r.at(params, "num_feature", "learner.learner_model_param"),
                "learner.learner_model_param.num_feature");
  if (file_features < 1) r.fail(fmt::format("num_feature is {}", file_features));
  if (num_features == 0) num_features = file_features;
  if (num_features != file_features)
    r.fail(fmt::format("the booster was fitted on {} features but the run's preprocessing makes {}",
                       file_features, num_features));
  if (params.contains("num_target") &&
      r.integer(params.at("num_target"), "learner.learner_model_param.num_target") > 1)
    r.fail("the booster has several targets; lathe exports single-target boosters");
  const int64_t num_class = r.integer(r.at(params, "num_class", "learner.learner_model_param"),
                                      "learner.learner_model_param.num_class");
  const int64_t classes = spec->output == Output::binary       ? 2
                          : spec->output == Output::regression ? 1
                                                               : num_class;
  if (spec->output == Output::multiclass && num_class < 2)
    r.fail(fmt::format("objective {} with num_class {}", objective_name, num_class));
  const int64_t groups = spec->output == Output::multiclass ? classes : 1;  // margins per record

  // base_score is stored in the objective's output space; the trees add to its margin.
  std::vector<double> base = r.numbers(r.at(params, "base_score", "learner.learner_model_param"),
                                       "learner.learner_model_param.base_score");
  if (base.size() == 1) base.assign(static_cast<size_t>(groups), base[0]);
  if (static_cast<int64_t>(base.size()) != groups)
    r.fail(fmt::format("base_score has {} values for {} outputs", base.size(), groups));
  std::vector<float> base_margin;
  for (double b : base) {
    if (!std::isfinite(b)) r.fail("base_score is not finite");
    if (spec->output == Output::binary) {
      if (!(b > 0 && b < 1))
        r.fail(fmt::format("base_score {} of binary:logistic is not in (0, 1)", b));
      base_margin.push_back(static_cast<float>(std::log(b / (1 - b))));
    } else {
      base_margin.push_back(static_cast<float>(b));
    }
  }

  const json& model = r.at(booster, "model", "learner.gradient_booster");
  const json& trees = r.at(model, "trees", "learner.gradient_booster.model");
  const json& tree_info = r.at(model, "tree_info", "learner.gradient_booster.model");
  if (!trees.is_array() || trees.empty()) r.fail("the booster has no trees");
  if (!tree_info.is_array() || tree_info.size() != trees.size())
    r.fail(fmt::format("tree_info has {} entries for {} trees",
                       tree_info.is_array() ? tree_info.size() : 0, trees.size()));

  detail::TreeEnsemble ensemble;
  for (size_t t = 0; t < trees.size(); ++t) {
    const std::string where = fmt::format("tree {}", t);
    const json& tree = trees[t];
    const int64_t group = r.integer(tree_info[t], fmt::format("tree_info[{}]", t));
    if (group < 0 || group >= groups)
      r.fail(fmt::format("tree_info[{}] is {}; the booster has {} output(s)", t, group, groups));
    if (tree.contains("tree_param") && tree["tree_param"].contains("size_leaf_vector") &&
        r.integer(tree["tree_param"]["size_leaf_vector"], where + ".size_leaf_vector") > 1)
      r.fail(where + " has vector leaves; lathe exports scalar-leaf trees");
    const json& left_json = r.at(tree, "left_children", where);
    if (!left_json.is_array() || left_json.empty()) r.fail(where + " has no nodes");
    const size_t n = left_json.size();
    const auto left = r.node_array(tree, "left_children", n, where);
    const auto right = r.node_array(tree, "right_children", n, where);
    const auto feature = r.node_array(tree, "split_indices", n, where);
    const auto value = r.node_array(tree, "split_conditions", n, where);
    const auto default_left = r.node_array(tree, "default_left", n, where);
    if (tree.contains("split_type")) {
      const auto split_type = r.node_array(tree, "split_type", n, where);
      for (size_t i = 0; i < n; ++i)
        if (split_type[i] != 0)
          r.fail(
              fmt::format("{} node {} is a categorical split; lathe exports numeric splits "
                          "(one-hot or label-encode categories in preprocessing)",
                          where, i));
    }
    // Every node is reached once from node 0: no cycles, no shared or dangling children.
    std::vector<int> seen(n, 0);
    std::vector<size_t> stack{0};
    seen[0] = 1;
    while (!stack.empty()) {
      const size_t i = stack.back();
      stack.pop_back();
      const bool leaf = left[i] == -1 && right[i] == -1;
      detail::TreeNode node;
      node.tree = static_cast<int64_t>(t);
      node.id = static_cast<int64_t>(i);
      if (!std::isfinite(value[i]))
        r.fail(fmt::format("{} node {} has a non-finite split_conditions value", where, i));
      if (leaf) {
        node.leaf = true;
        node.weight = static_cast<float>(value[i]);  // XGBoost keeps a leaf's value there
        node.target = group;
      } else {
        for (double child : {left[i], right[i]}) {
          if (child < 1 || child >= static_cast<double>(n) || child != std::floor(child))
            r.fail(
                fmt::format("{} node {} has child {} (the tree has {} nodes)", where, i, child, n));
          if (seen[static_cast<size_t>(child)]++)
            r.fail(fmt::format("{} node {} is reached twice", where, child));
          stack.push_back(static_cast<size_t>(child));
        }
        if (feature[i] < 0 || feature[i] >= static_cast<double>(num_features) ||
            feature[i] != std::floor(feature[i]))
          r.fail(fmt::format("{} node {} splits on feature {}; the booster has {} features", where,
                             i, feature[i], num_features));
        node.feature = static_cast<int64_t>(feature[i]);
        node.threshold = static_cast<float>(value[i]);
        node.true_id = static_cast<int64_t>(left[i]);  // x < threshold goes left
        node.false_id = static_cast<int64_t>(right[i]);
        node.missing_goes_true = default_left[i] != 0;
      }
      ensemble.nodes.push_back(node);
    }
    for (size_t i = 0; i < n; ++i)
      if (!seen[i]) r.fail(fmt::format("{} node {} is not reached from the root", where, i));
  }
  ensemble.base_values = base_margin;
  switch (spec->output) {
    case Output::binary:
      ensemble.post_transform = "LOGISTIC";
      break;
    case Output::multiclass:
      ensemble.post_transform = "SOFTMAX";
      break;
    case Output::regression:
      ensemble.post_transform = "NONE";
      break;
  }
  ensemble.classes = spec->output == Output::regression ? 0 : classes;
  return detail::tree_ensemble_model(
      ensemble, num_features,
      fmt::format("XGBoost {} booster, {} trees", objective_name, trees.size()));
}

}  // namespace lathe::onnx
