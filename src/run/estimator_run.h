// run_estimator: the path of a run whose model is an Estimator (xgboost, random_forest, svm):
// the same data, files and metrics as a Trainer run, the fit done by the model's library.
#pragma once

#include <string>

#include "lathe/config/config.h"
#include "lathe/run/run.h"

namespace lathe::run::detail {

/// Trains the estimator run `cfg` describes (train_from_config calls it for estimator entries of
/// the model table) and writes runs/<name>/ as a Trainer run does: config.yaml, classes.txt,
/// preprocessing.json, metrics.jsonl / metrics.csv (one row per boosting round), the model in
/// its library's format (model.json or model.libsvm), feature_importance.json (trees),
/// test_metrics.json, test_predictions.json, run.json and report.html. Boosted models write
/// checkpoints/round-NNNNNN/ every checkpoint.every_n_epochs rounds; `resume` ("auto", a
/// checkpoint folder or a run folder) continues boosting from one. trainer.early_stopping
/// (monitor, patience in rounds, min_delta) stops boosting and keeps the best round.
RunResult run_estimator(config::RunConfig cfg, const std::string& resume);

/// The checkpoint folder `spec` means for an estimator run: "auto" = the newest
/// <run_dir>/checkpoints/round-*; else a round folder, or a run folder (its newest).
std::filesystem::path resolve_estimator_resume(const std::string& spec,
                                               const std::filesystem::path& run_dir);

}  // namespace lathe::run::detail
