// The ai.onnx.ml graphs of lathe's estimators, from plain descriptions of a tree ensemble or an
// SVM that the file readers (xgboost_graph.cpp, libsvm_graph.cpp) fill after checking the file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lathe/onnx/ir.h"

namespace lathe::onnx::detail {

/// One node of one tree. A split sends x[feature] < threshold to true_id (BRANCH_LT) and a
/// missing (NaN) x[feature] to true_id when missing_goes_true; a leaf adds `weight` to output
/// `target` (the class, or 0).
struct TreeNode {
  int64_t tree = 0;
  int64_t id = 0;
  bool leaf = false;
  int64_t feature = 0;
  float threshold = 0;
  int64_t true_id = 0;
  int64_t false_id = 0;
  bool missing_goes_true = false;
  int64_t target = 0;
  float weight = 0;
};

/// A sum of trees: base_values (margin space, one per output) plus the leaves reached, then
/// post_transform ("LOGISTIC" for binary, "SOFTMAX", "NONE").
struct TreeEnsemble {
  std::vector<TreeNode> nodes;
  std::vector<float> base_values;
  std::string post_transform = "NONE";
  /// Classes (2 for binary: one margin, both probabilities out); 0 for a regressor.
  int64_t classes = 0;
};

/// TreeEnsembleClassifier → class_id, probabilities; or TreeEnsembleRegressor → prediction.
Model tree_ensemble_model(const TreeEnsemble& e, int64_t num_features, const std::string& doc);

/// A LIBSVM model in ONNX's terms: decision values are Σ coef·K(sv, x) + rho (ONNX adds rho,
/// LIBSVM subtracts it, so rho here is LIBSVM's negated).
struct Svm {
  bool classifier = true;
  std::string kernel;  ///< "LINEAR", "POLY", "RBF", "SIGMOID"
  float gamma = 0, coef0 = 0, degree = 0;
  std::vector<float> support_vectors;  ///< [vectors, num_features], dense
  int64_t vectors = 0;
  /// Classifier: [K-1, vectors] (LIBSVM's sv_coef); regressor: [vectors].
  std::vector<float> coefficients;
  std::vector<float> rho;
  std::vector<int64_t> vectors_per_class;  ///< classifier, in `labels` order
  std::vector<int64_t> labels;             ///< classifier: the class ids in the model file's order
};

/// SVMClassifier → decision_values (one-vs-one, class-id pairs) → lathe's class scores →
/// class_id and probabilities (their softmax); or SVMRegressor → prediction.
Model svm_model(const Svm& s, int64_t num_features, const std::string& doc);

}  // namespace lathe::onnx::detail
