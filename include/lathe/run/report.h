// The run report: one self-contained HTML page (inline SVG plots, no network) with a run's
// config, loss / metric / learning-rate curves, confusion matrix and per-class scores or a
// residual plot, checkpoints and test metrics; and the test predictions it is drawn from.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <c10/core/Device.h>
#include <torch/nn/modules/container/any.h>

#include "lathe/data/tensor_data.h"
#include "lathe/train/task.h"

namespace lathe::run {

/// Writes <run>/test_predictions.json from one pass of `model` over `test`: for classification
/// the class names and every record's true and predicted class (y_true, y_pred); for regression
/// the true and predicted values of the first `max_records` records (outputs per record in
/// "outputs"). Language models write nothing (their report has the curves). `precision` is the
/// trainer's (resolved): bf16 / fp16 run under autocast.
void write_test_predictions(torch::nn::AnyModule& model, const train::Task& task,
                            data::BatchSource& test, c10::Device device,
                            const std::string& precision, const std::vector<std::string>& classes,
                            const std::filesystem::path& file, int64_t max_records = 5000);

/// The same file from a model's outputs over the test split, computed already: logits (N, K)
/// (the class is their argmax) or values (N, D), and the targets (N) or (N, D).
void write_test_predictions(const at::Tensor& outputs, const at::Tensor& targets,
                            const std::string& kind, const std::vector<std::string>& classes,
                            const std::filesystem::path& file, int64_t max_records = 5000);

/// Per-class precision, recall, F1 and support from true and predicted class ids (scikit-learn's
/// precision_recall_fscore_support, zero_division = 0), and the confusion matrix (rows: true).
struct ClassReport {
  std::vector<std::vector<int64_t>> confusion;  ///< (K, K)
  std::vector<double> precision, recall, f1;
  std::vector<int64_t> support;
  double macro_precision = 0, macro_recall = 0, macro_f1 = 0, accuracy = 0;
};
ClassReport class_report(const std::vector<int64_t>& y_true, const std::vector<int64_t>& y_pred,
                         int64_t num_classes);

/// The report of the run folder `run_dir` as HTML text: made from its files only (config.yaml,
/// metrics.jsonl, test_metrics.json, test_predictions.json, classes.txt, checkpoints/, run.json),
/// so it works on any run, finished or not. Every plot is an inline <svg> inside an element
/// with an id "plot-..." (report_plot_ids lists them); an inline script sets
/// data-plots="ok" on <body> when every one is present.
std::string render_report(const std::filesystem::path& run_dir);
/// The ids of the plots render_report draws for this run, in page order.
std::vector<std::string> report_plot_ids(const std::filesystem::path& run_dir);
/// render_report written atomically to `output` (default <run>/report.html); returns the path.
std::filesystem::path write_report(const std::filesystem::path& run_dir,
                                   const std::filesystem::path& output = {});

/// Text made safe inside HTML elements and attribute values (& < > " ').
std::string html_escape(const std::string& text);

}  // namespace lathe::run
