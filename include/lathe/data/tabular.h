// Tabular preprocessing: imputation, outlier clipping, scaling, one-hot / label encoding, fitted
// on the training rows of a CsvTable and saved as JSON so every later use applies the same steps.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lathe/data/csv.h"

namespace lathe::data {

/// The steps for one column (or, as TabularSpec::all, for every column).
struct ColumnSteps {
  /// auto (numeric when every present cell is a number) | numeric | categorical | ignore
  std::string kind = "auto";
  /// none (a missing cell is an error) | drop (the row) | mean | median | most_frequent | constant
  std::string impute = "none";
  /// the constant's value (default 0, or "missing_value" for categories)
  std::string fill;
  /// none | zscore (clip to mean ± k·std) | iqr (clip to [q1 - k·iqr, q3 + k·iqr])
  std::string outliers = "none";
  /// k; 0 = 3 for zscore, 1.5 for iqr
  double outlier_k = 0;
  /// none | standard ((x - mean) / std) | minmax (to [0, 1])
  std::string scale = "none";
  /// categorical columns: onehot (unknown → all zeros) | label (unknown → -1)
  std::string encode = "onehot";
  /// The keys set for this column itself (by with()); the others come from the global steps,
  /// which apply to the columns they fit: a categorical column takes most_frequent for a global
  /// mean / median and no global scale or outliers.
  std::set<std::string> given;

  /// This with one "key=value" change (kind, impute, fill, outliers, outlier_k, scale, encode);
  /// a bad key or value is a ConfigError naming `where`.
  ColumnSteps with(const std::string& key_value, const std::string& where) const;
  /// Checks every value; ConfigError naming `where` and the allowed values.
  void validate(const std::string& where) const;
};

/// What to predict and how to prepare each column.
struct TabularSpec {
  std::string target;                          ///< the target column (required)
  std::string task = "auto";                   ///< auto | classification | regression
  ColumnSteps all;                             ///< the steps of every input column...
  std::map<std::string, ColumnSteps> columns;  ///< ...unless overridden here, by column name
};

/// A transformed table: inputs (N, F) float32, targets (N) int64 class ids or float32 values,
/// and the source rows kept (rows with impute=drop missing values are left out).
struct TabularData {
  at::Tensor inputs;
  at::Tensor targets;
  std::vector<int64_t> rows;
};

/// The fitted transform. Fit on the training split only, then apply to every split; to_json /
/// save and from_json / load carry it to eval, predict and export unchanged.
///
///   auto prep = TabularPreprocessor::fit(table.select(split.train), spec);
///   TabularData train = prep.transform(table.select(split.train));
///   prep.save(run_dir / "preprocessing.json");
class TabularPreprocessor {
 public:
  /// Fits every step on `train`'s rows; a DataError names file:line for a bad cell.
  static TabularPreprocessor fit(const CsvTable& train, const TabularSpec& spec);
  /// Applies the fitted steps to `table` (which must have the fitted columns, in any order).
  /// Without `with_targets` the target column may be absent (it is ignored when present) and
  /// `targets` stays undefined: new records to predict.
  TabularData transform(const CsvTable& table, bool with_targets = true) const;

  /// "classification" or "regression".
  const std::string& task() const { return task_; }
  /// The class names in id order (classification), else empty.
  const std::vector<std::string>& classes() const { return classes_; }
  /// One name per output feature: "col", or "col=category" for one-hot columns.
  std::vector<std::string> feature_names() const;
  int64_t num_features() const { return static_cast<int64_t>(feature_names().size()); }

  std::string to_json() const;
  static TabularPreprocessor from_json(const std::string& json, const std::string& origin);
  /// Written atomically.
  void save(const std::filesystem::path& file) const;
  static TabularPreprocessor load(const std::filesystem::path& file);

  /// One input column as fitted.
  struct Column {
    std::string name;
    bool numeric = true;
    ColumnSteps steps;
    double fill_number = 0;               ///< numeric imputation value
    std::string fill_category;            ///< categorical imputation value
    double clip_lo = 0, clip_hi = 0;      ///< outlier bounds (when outliers != none)
    double shift = 0, divide = 1;         ///< scaling: (x - shift) / divide
    std::vector<std::string> categories;  ///< sorted (categorical)
  };
  const std::vector<Column>& columns() const { return columns_; }

 private:
  std::string target_;
  std::string task_;
  bool target_numeric_ = false;
  std::vector<std::string> classes_;
  std::vector<Column> columns_;
};

/// The task a target column suggests: classification for text or at most 20 distinct integer
/// values, else regression.
std::string infer_task(const CsvTable& table, const std::string& target);

/// The class id of every row's target in `table` (sorted distinct values → 0..K-1), for
/// stratified splitting before anything is fitted: (N) int64.
at::Tensor target_strata(const CsvTable& table, const std::string& target);

}  // namespace lathe::data
