// ONNX graphs for the models that are not torch modules: an XGBoost booster (model.json) as an
// ai.onnx.ml TreeEnsembleClassifier / TreeEnsembleRegressor, a LIBSVM model (model.libsvm) as an
// ai.onnx.ml SVMClassifier / SVMRegressor. Torch-free: they read the library's own file.
#pragma once

#include <cstdint>
#include <filesystem>

#include "lathe/onnx/export.h"
#include "lathe/onnx/ir.h"

namespace lathe::onnx {

/// Every estimator graph takes `features`: float [batch, F], the preprocessed features in the
/// order the model was fitted on (NaN = missing; the trees send it the booster's default way).
/// Its outputs are what `lathe predict` gives for the run:
///  - classification: `class_id` int64 [batch] (0..K-1) and `probabilities` float [batch, K] in
///    class-id order (the trees' probabilities; for an SVM the softmax of its class scores,
///    below), and for an SVM also `decision_values` float [batch, K(K-1)/2]: LIBSVM's
///    one-vs-one values for the class-id pairs (a, b), a < b, in order, positive = class a;
///  - regression: `prediction` float [batch, 1].
/// Both readers throw ExportError naming the file (and line) and what is wrong with it.

/// An XGBoost booster in its JSON model format (XGBoost 1.x's and 3.x's): gbtree with
/// objective binary:logistic (TreeEnsembleClassifier, post_transform LOGISTIC, both classes'
/// probabilities), multi:softprob / multi:softmax (SOFTMAX over tree_info's classes) or
/// reg:squarederror / reg:absoluteerror (TreeEnsembleRegressor). Random forests
/// (num_parallel_tree > 1) are the same trees summed. Splits are XGBoost's `x < threshold`
/// (BRANCH_LT), missing values follow default_left, base_score enters as base_values in margin
/// space; every tree in the file counts (as XGBoost's predict with its default iteration range).
/// `num_features` is the width of `features`; 0 takes the booster's num_feature (a disagreement
/// is an ExportError).
///
///   lathe::onnx::Model m = lathe::onnx::xgboost_graph("runs/wine_xgb/model.json", 13);
Model xgboost_graph(const std::filesystem::path& model_json, int64_t num_features = 0);

/// A LIBSVM model in svm_save_model's text format: c_svc / nu_svc (SVMClassifier, then lathe's
/// class scores from its decision values: scikit-learn's SVC.decision_function, [0, -d] for two
/// classes, one-vs-one votes plus confidences for more; the labels must be the class ids 0..K-1
/// in any order; a probability model in the file is not used, as predict does not use it) or
/// epsilon_svr / nu_svr (SVMRegressor); kernels linear, polynomial, rbf and sigmoid. Support
/// vectors are sparse in the file with LIBSVM's 1-based feature indices; `num_features` is the
/// width of `features` (0 takes the largest index the support vectors use).
///
///   lathe::onnx::Model m = lathe::onnx::libsvm_graph("runs/wine_svm/model.libsvm", 13);
Model libsvm_graph(const std::filesystem::path& model_libsvm, int64_t num_features = 0);

/// Writes a model built without tracing (an estimator graph): metadata, doc string and graph
/// passes from `options` as export_model applies them, then ONNX's checker and strict shape
/// inference, then an atomic write. fp16 and int8 are ExportErrors (they rewrite traced graphs).
ExportReport write_model(Model model, const std::filesystem::path& path,
                         const ExportOptions& options = {});

}  // namespace lathe::onnx
