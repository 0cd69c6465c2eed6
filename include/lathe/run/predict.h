// lathe predict: a finished run's model on new records (images, table rows, texts) with the
// run's own fitted preprocessing, streamed a batch at a time, written as CSV or JSONL.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

namespace lathe::run {

/// How `predict` runs.
struct PredictOptions {
  std::filesystem::path weights;  ///< default: RUN/model.safetensors
  int64_t batch_size = 0;         ///< records per forward pass; 0 = the run's data.eval_batch_size
  std::string device;             ///< cpu | cuda | cuda:N | auto; empty = the run's run.device
  int64_t top_k = 1;              ///< classification: the k most probable classes per record
  bool progress = false;          ///< a progress bar on stderr (redrawn only on a terminal)
};

/// One record's answer.
struct Prediction {
  std::string id;                     ///< the image's path, the CSV record's number, the line
  std::vector<std::string> labels;    ///< classification: top_k class names, most probable first
  std::vector<double> probabilities;  ///< their softmax probabilities
  double value = 0;                   ///< regression: the predicted value
};

/// What a predict call did.
struct PredictSummary {
  std::string task;      ///< classification | regression
  int64_t records = 0;   ///< records answered
  int64_t skipped = 0;   ///< records the run's rules leave out (impute=drop rows, bad CSV rows)
};

/// Receives the answers a batch at a time, in input order.
using PredictionSink = std::function<void(const std::vector<Prediction>&)>;

/// Runs the model of the finished run in `run_dir` on `inputs`, prepared as the run's data was
/// for evaluation, and hands every answer to `sink`:
///  - image runs (idx, image_folder): image files (PNG, JPEG), folders (searched recursively,
///    sorted) and glob patterns; idx runs read images as their channels, resize to the run's side
///    when they differ and normalise with the run's mean / std; image_folder runs apply its
///    evaluation transforms (shorter side, centre crop, mean / std). The id is the path.
///  - csv runs: CSV files in the training file's raw form (the target column may be absent; if
///    present it is ignored) through the run's preprocessing.json (imputation, clipping, scaling,
///    encoding fitted on its training split). Read `batch_size` rows at a time: memory stays
///    bounded whatever the file's size. The id is the record's 1-based number in the file as
///    the reader counts records: the header and blank lines are not records, a malformed record
///    is one (skipped with data.skip_bad_records, its number is not given to the next), so an
///    answer keeps its record's number; prefixed by the file ("file:7") when there are several.
///  - text_csv runs: a .csv file with the run's text column (id: the record's number, as for csv
///    runs), or any other file read as one text per non-blank line (id: the line number),
///    tokenized with the run's vocabulary.
/// Errors are lathe::Errors naming the file (and line, column) and what to do; a language-model
/// run is refused (lathe generate samples from those).
///
///   lathe::run::predict("runs/wine_mlp", {"new_wines.csv"}, {}, [](const auto& batch) { ... });
PredictSummary predict(const std::filesystem::path& run_dir, const std::vector<std::string>& inputs,
                       const PredictOptions& options, const PredictionSink& sink);

/// Writes predictions as CSV (a header, then one row per record: id,label,probability — or
/// label_1,probability_1,... with top_k > 1 — or id,value for regression) or as JSON lines
/// ({"id": ..., "label": ..., "probability": ...}, with top_k > 1 a "top" list of
/// {"label", "probability"}; regression {"id": ..., "value": ...}).
class PredictionWriter {
 public:
  PredictionWriter(std::ostream& out, bool jsonl, int64_t top_k);
  void write(const std::vector<Prediction>& batch);

 private:
  std::ostream& out_;
  bool jsonl_;
  int64_t top_k_;
  bool header_done_ = false;
};

}  // namespace lathe::run
