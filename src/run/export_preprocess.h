// `lathe export --preprocess`: the graph pass that puts a run's own preprocessing in front of its
// exported model (raw pixels or raw table columns in) and class names after it (label out).
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "lathe/config/config.h"
#include "lathe/onnx/ir.h"

namespace lathe::run::detail {

/// What the pass needs of the run besides its config.
struct RunPreprocessing {
  std::string run;                   ///< the run folder, for messages
  std::filesystem::path tabular;     ///< its preprocessing.json (csv runs)
  std::vector<std::string> classes;  ///< its classes.txt in id order (classification)
  /// The numeric columns' input type: float, or double for tree runs, whose thresholds are
  /// training values that a float32 cell can land on the other side of.
  onnx::DType numeric = onnx::DType::Float;
};

/// The graph pass for `cfg`'s run, over a model exported from its zoo signature (one input):
///  - idx / image_folder runs: input `pixels` uint8 [batch, H, W, C] at the run's side → Cast,
///    Transpose to NCHW, / 255, (x - mean) / std → the model's `images`;
///  - csv runs: one input per raw feature column, named after it — float [batch, 1] (`numeric`;
///    NaN for a missing cell) for numeric columns, string [batch, 1] for categorical ones — through the
///    fitted imputation, clipping and scaling (in double, as predict computes them) and
///    ai.onnx.ml LabelEncoder (training categories; lathe's missing-value tokens → the fitted
///    fill; unseen → all zeros for one-hot, -1 for label encoding), concatenated in the model's
///    feature order → the model's `features`;
///  - classification adds outputs `label` (string [batch], ArgMax → LabelEncoder over the class
///    names) and `probabilities` (Softmax) before the model's logits; an estimator's graph
///    (lathe/onnx/estimators.h) decides the class itself, and its `class_id` becomes `label`;
///    regression keeps `prediction` (predict does not rescale targets, nor does the graph).
/// Text runs are a ConfigError naming the run: ONNX has no tokenizer operator.
std::function<void(onnx::Model&)> preprocessing_pass(const config::RunConfig& cfg,
                                                     const RunPreprocessing& run);

}  // namespace lathe::run::detail
