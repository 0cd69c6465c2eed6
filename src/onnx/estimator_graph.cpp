// The ai.onnx.ml graphs of lathe's estimators: tree ensembles and SVMs over `features`.
#include "src/onnx/estimator_graph.h"

#include <algorithm>

namespace lathe::onnx::detail {
namespace {

constexpr const char* kMl = "ai.onnx.ml";
const Dim kBatch = std::string("batch");

/// A graph with input `features` float [batch, F] and the ai.onnx.ml domain.
Model features_model(int64_t num_features, const std::string& doc) {
  Model m;
  m.graph.name = "estimator";
  m.graph.inputs.push_back({"features", DType::Float, {kBatch, num_features}});
  m.domain_opsets.emplace_back(kMl, 3);
  m.doc_string = doc;
  return m;
}

std::vector<int64_t> iota(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = i;
  return v;
}

Node ml_node(std::string op, std::vector<std::string> inputs, std::vector<std::string> outputs,
             std::vector<Attribute> attributes) {
  Node n;
  n.name = "estimator/" + op;
  n.op_type = std::move(op);
  n.inputs = std::move(inputs);
  n.outputs = std::move(outputs);
  n.attributes = std::move(attributes);
  n.domain = kMl;
  return n;
}

/// Adds default-domain nodes and constants to a graph.
class Emitter {
 public:
  explicit Emitter(Graph& g) : g_(g) {}
  std::string node(const std::string& op, std::vector<std::string> inputs, std::string output,
                   std::vector<Attribute> attributes = {}) {
    Node n;
    n.op_type = op;
    n.name = "estimator/" + op + "/" + output;
    n.inputs = std::move(inputs);
    n.outputs = {output};
    n.attributes = std::move(attributes);
    g_.nodes.push_back(std::move(n));
    return output;
  }
  std::string floats(const std::string& name, const std::vector<float>& v,
                     std::vector<int64_t> dims) {
    return constant(name, DType::Float, v.data(), v.size() * sizeof(float), std::move(dims));
  }
  std::string ints(const std::string& name, const std::vector<int64_t>& v) {
    return constant(name, DType::Int64, v.data(), v.size() * sizeof(int64_t),
                    {static_cast<int64_t>(v.size())});
  }

 private:
  std::string constant(const std::string& name, DType dtype, const void* data, size_t bytes,
                       std::vector<int64_t> dims) {
    TensorData t;
    t.name = name;
    t.dtype = dtype;
    t.dims = std::move(dims);
    t.raw.assign(static_cast<const char*>(data), bytes);
    g_.initializers.push_back(std::move(t));
    return name;
  }
  Graph& g_;
};

}  // namespace

Model tree_ensemble_model(const TreeEnsemble& e, int64_t num_features, const std::string& doc) {
  Model m = features_model(num_features, doc);
  std::vector<int64_t> tree_ids, node_ids, feature_ids, true_ids, false_ids, missing_true;
  std::vector<std::string> modes;
  std::vector<float> values;
  std::vector<int64_t> leaf_tree, leaf_node, leaf_target;
  std::vector<float> leaf_weight;
  for (const TreeNode& n : e.nodes) {
    tree_ids.push_back(n.tree);
    node_ids.push_back(n.id);
    modes.emplace_back(n.leaf ? "LEAF" : "BRANCH_LT");
    feature_ids.push_back(n.leaf ? 0 : n.feature);
    values.push_back(n.leaf ? 0.0f : n.threshold);
    true_ids.push_back(n.leaf ? 0 : n.true_id);
    false_ids.push_back(n.leaf ? 0 : n.false_id);
    missing_true.push_back(!n.leaf && n.missing_goes_true ? 1 : 0);
    if (n.leaf) {
      leaf_tree.push_back(n.tree);
      leaf_node.push_back(n.id);
      leaf_target.push_back(n.target);
      leaf_weight.push_back(n.weight);
    }
  }
  std::vector<Attribute> a = {
      {"nodes_treeids", tree_ids},       {"nodes_nodeids", node_ids},
      {"nodes_featureids", feature_ids}, {"nodes_modes", modes},
      {"nodes_values", values},          {"nodes_truenodeids", true_ids},
      {"nodes_falsenodeids", false_ids}, {"nodes_missing_value_tracks_true", missing_true},
      {"base_values", e.base_values},    {"post_transform", e.post_transform},
  };
  if (e.classes > 0) {
    a.push_back({"class_treeids", leaf_tree});
    a.push_back({"class_nodeids", leaf_node});
    a.push_back({"class_ids", leaf_target});
    a.push_back({"class_weights", leaf_weight});
    a.push_back({"classlabels_int64s", iota(e.classes)});
    m.graph.nodes.push_back(ml_node("TreeEnsembleClassifier", {"features"},
                                    {"class_id", "probabilities"}, std::move(a)));
    m.graph.outputs.push_back({"class_id", DType::Int64, {kBatch}});
    m.graph.outputs.push_back({"probabilities", DType::Float, {kBatch, e.classes}});
  } else {
    a.push_back({"target_treeids", leaf_tree});
    a.push_back({"target_nodeids", leaf_node});
    a.push_back({"target_ids", leaf_target});
    a.push_back({"target_weights", leaf_weight});
    a.push_back({"n_targets", int64_t{1}});
    a.push_back({"aggregate_function", std::string("SUM")});
    m.graph.nodes.push_back(
        ml_node("TreeEnsembleRegressor", {"features"}, {"prediction"}, std::move(a)));
    m.graph.outputs.push_back({"prediction", DType::Float, {kBatch, int64_t{1}}});
  }
  return m;
}

Model svm_model(const Svm& s, int64_t num_features, const std::string& doc) {
  Model m = features_model(num_features, doc);
  std::vector<Attribute> a = {
      {"kernel_type", s.kernel},
      {"kernel_params", std::vector<float>{s.gamma, s.coef0, s.degree}},
      {"support_vectors", s.support_vectors},
      {"coefficients", s.coefficients},
      {"rho", s.rho},
      {"post_transform", std::string("NONE")},
  };
  if (!s.classifier) {
    a.push_back({"n_supports", s.vectors});
    a.push_back({"one_class", int64_t{0}});
    m.graph.nodes.push_back(ml_node("SVMRegressor", {"features"}, {"prediction"}, std::move(a)));
    m.graph.outputs.push_back({"prediction", DType::Float, {kBatch, int64_t{1}}});
    return m;
  }
  const auto k = static_cast<int64_t>(s.labels.size());
  const int64_t pairs = k * (k - 1) / 2;
  a.push_back({"vectors_per_class", s.vectors_per_class});
  a.push_back({"classlabels_ints", s.labels});
  // The node's scores are LIBSVM's one-vs-one decision values over the file's label order
  // (pair (i, j), i < j, positive = the i-th label); for two classes onnxruntime writes [-d, d].
  // Its own label (one-vs-one votes) is left unused: lathe's class comes from the scores below.
  m.graph.nodes.push_back(
      ml_node("SVMClassifier", {"features"}, {"svm/vote_class", "svm/scores"}, std::move(a)));

  std::vector<int64_t> position(static_cast<size_t>(k));  // class id → its place in the file
  for (int64_t i = 0; i < k; ++i)
    position[static_cast<size_t>(s.labels[static_cast<size_t>(i)])] = i;
  const auto file_pair = [k](int64_t i, int64_t j) {  // LIBSVM's index of pair (i, j), i < j
    return i * k - i * (i + 1) / 2 + (j - i - 1);
  };
  // decision_values (B, P): pair (a, b) of class ids a < b, positive = class a.
  std::vector<int64_t> columns;
  std::vector<float> signs;
  for (int64_t ca = 0; ca < k; ++ca)
    for (int64_t cb = ca + 1; cb < k; ++cb) {
      const int64_t pa = position[static_cast<size_t>(ca)], pb = position[static_cast<size_t>(cb)];
      columns.push_back(k == 2 ? 1 : file_pair(std::min(pa, pb), std::max(pa, pb)));
      signs.push_back(pa < pb ? 1.0f : -1.0f);
    }
  Emitter e(m.graph);
  const std::string picked = e.node("Gather", {"svm/scores", e.ints("svm/columns", columns)},
                                    "svm/id_pairs", {{"axis", int64_t{1}}});
  e.node("Mul", {picked, e.floats("svm/signs", signs, {pairs})}, "decision_values");

  // The class scores lathe's svm gives (scikit-learn's SVC.decision_function): two classes
  // [0, -d]; more, the one-vs-rest votes plus the summed confidences squashed into (-1/3, 1/3):
  // votes + conf / (3 (|conf| + 1)), with conf = D·A and votes = [D >= 0]·A + (0, 1, .., K-1),
  // A[p, a] = 1 and A[p, b] = -1 for pair p = (a, b).
  std::string logits;
  if (k == 2) {
    logits = e.node("MatMul", {"decision_values", e.floats("svm/binary", {0.0f, -1.0f}, {1, 2})},
                    "svm/logits");
  } else {
    std::vector<float> pair_matrix(static_cast<size_t>(pairs * k), 0.0f);  // A (P, K)
    std::vector<float> offsets(static_cast<size_t>(k));
    int64_t p = 0;
    for (int64_t ca = 0; ca < k; ++ca)
      for (int64_t cb = ca + 1; cb < k; ++cb, ++p) {
        pair_matrix[static_cast<size_t>(p * k + ca)] = 1.0f;
        pair_matrix[static_cast<size_t>(p * k + cb)] = -1.0f;
      }
    for (int64_t c = 0; c < k; ++c) offsets[static_cast<size_t>(c)] = static_cast<float>(c);
    const std::string matrix = e.floats("svm/pairs", pair_matrix, {pairs, k});
    const std::string conf = e.node("MatMul", {"decision_values", matrix}, "svm/conf");  // (B, K)
    const std::string wins =
        e.node("Cast",
               {e.node("GreaterOrEqual", {"decision_values", e.floats("svm/zero", {0.0f}, {})},
                       "svm/wins_bool")},
               "svm/wins", {{"to", static_cast<int64_t>(DType::Float)}});
    const std::string votes = e.node(
        "Add",
        {e.node("MatMul", {wins, matrix}, "svm/vote_diff"), e.floats("svm/offsets", offsets, {k})},
        "svm/votes");  // (B, K)
    const std::string squash = e.node(
        "Mul",
        {e.node("Add", {e.node("Abs", {conf}, "svm/abs_conf"), e.floats("svm/one", {1.0f}, {})},
                "svm/abs_conf_1"),
         e.floats("svm/three", {3.0f}, {})},
        "svm/denominator");
    logits = e.node("Add", {votes, e.node("Div", {conf, squash}, "svm/confidence")}, "svm/logits");
  }
  e.node("Softmax", {logits}, "probabilities", {{"axis", int64_t{1}}});
  e.node("ArgMax", {logits}, "class_id", {{"axis", int64_t{1}}, {"keepdims", int64_t{0}}});
  m.graph.outputs.push_back({"class_id", DType::Int64, {kBatch}});
  m.graph.outputs.push_back({"probabilities", DType::Float, {kBatch, k}});
  m.graph.outputs.push_back({"decision_values", DType::Float, {kBatch, pairs}});
  return m;
}

}  // namespace lathe::onnx::detail
