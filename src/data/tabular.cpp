// Tabular preprocessing: per-column fitting on the training rows, transform, JSON round trip.
#include "lathe/data/tabular.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include <nlohmann/json.hpp>
#include <ATen/ops/empty.h>

#include "lathe/core/error.h"
#include "lathe/core/fs.h"
#include "read_file.h"

namespace lathe::data {
namespace {

std::string trimmed(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

std::string one_of(const std::string& value, std::initializer_list<const char*> allowed,
                   const std::string& key, const std::string& where) {
  std::string list;
  for (const char* a : allowed) {
    if (value == a) return value;
    list += (list.empty() ? "" : ", ") + std::string(a);
  }
  throw ConfigError(fmt::format("{}: {} = '{}' is not one of: {}", where, key, value, list));
}

/// numpy's default (linear) quantile of sorted values.
double quantile(const std::vector<double>& sorted, double q) {
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (pos - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

/// Population standard deviation (ddof = 0), as scikit-learn's StandardScaler.
double std_of(const std::vector<double>& v, double mean) {
  double s = 0;
  for (double x : v) s += (x - mean) * (x - mean);
  return std::sqrt(s / static_cast<double>(v.size()));
}

/// The most frequent value; ties go to the smallest (scikit-learn's SimpleImputer).
template <class T>
T most_frequent(const std::vector<T>& v) {
  std::map<T, int64_t> counts;
  for (const auto& x : v) ++counts[x];
  auto best = counts.begin();
  for (auto it = counts.begin(); it != counts.end(); ++it)
    if (it->second > best->second) best = it;
  return best->first;
}

/// The number a canonical class key spells. Not std::stod: it throws on subnormal values such
/// as 5e-324 (the CSV fuzzer found that), and keys come from parsed numbers, so this never fails.
double key_number(const std::string& key) {
  double v = 0;
  std::from_chars(key.data(), key.data() + key.size(), v);
  return v;
}

/// A numeric cell in canonical form, so "1", "1.0" and " 1" name the same class.
/// "0" and "-0" are one class: negative zero is written as 0.
std::string canonical_number(double v) { return fmt::format("{}", v == 0 ? 0.0 : v); }

/// What is wrong with `cell` in a numeric column: it spells no number, or one that is not finite
/// (inf, or beyond a double's range such as 1e400).
std::string not_a_number(const std::string& where, const std::string& column,
                         const std::string& cell) {
  if (!is_non_finite_number(cell))
    return fmt::format("{}: column '{}' is numeric but holds '{}'", where, column, cell);
  return fmt::format(
      "{}: column '{}' is numeric but holds '{}', which is not a finite number (a double holds "
      "magnitudes up to 1.8e308; write a missing value such as NA, or a finite number)",
      where, column, cell);
}

bool column_is_numeric(const CsvTable& t, int64_t col) {
  bool any = false;
  double v = 0;
  int64_t non_finite = -1;  // the first inf cell, reported only when the column is numeric
  for (int64_t r = 0; r < t.num_rows(); ++r) {
    if (t.is_missing(r, col)) continue;
    const std::string& cell = t.rows[static_cast<size_t>(r)][static_cast<size_t>(col)];
    if (!parse_number(cell, v)) {
      if (!is_non_finite_number(cell)) return false;
      if (non_finite < 0) non_finite = r;
      continue;
    }
    any = true;
  }
  LATHE_CHECK(non_finite < 0 || !any, DataError, "{}",
              not_a_number(t.where(non_finite), t.columns[static_cast<size_t>(col)],
                           t.rows[static_cast<size_t>(non_finite)][static_cast<size_t>(col)]));
  return any;
}

/// Class key of one target cell (canonical number or trimmed text).
std::string class_key(const CsvTable& t, int64_t row, int64_t col, bool numeric) {
  const std::string& cell = t.rows[static_cast<size_t>(row)][static_cast<size_t>(col)];
  LATHE_CHECK(!t.is_missing(row, col), DataError,
              "{}: the target column '{}' is missing here; every record needs a target",
              t.where(row), t.columns[static_cast<size_t>(col)]);
  if (!numeric) return trimmed(cell);
  double v = 0;
  LATHE_CHECK(parse_number(cell, v), DataError, "{}: target column '{}': '{}' is not a number",
              t.where(row), t.columns[static_cast<size_t>(col)], cell);
  return canonical_number(v);
}

/// Distinct class keys sorted as scikit-learn sorts labels (numerically for numbers).
std::vector<std::string> sorted_classes(std::set<std::string> keys, bool numeric) {
  std::vector<std::string> out(keys.begin(), keys.end());
  if (numeric)
    std::sort(out.begin(), out.end(), [](const std::string& a, const std::string& b) {
      return key_number(a) < key_number(b);
    });
  return out;
}

}  // namespace

ColumnSteps ColumnSteps::with(const std::string& key_value, const std::string& where) const {
  const auto eq = key_value.find('=');
  LATHE_CHECK(eq != std::string::npos, ConfigError,
              "{}: column step '{}' must be key=value (e.g. impute=median)", where, key_value);
  const std::string key = trimmed(key_value.substr(0, eq)),
                    value = trimmed(key_value.substr(eq + 1));
  ColumnSteps out = *this;
  if (key == "kind")
    out.kind = value;
  else if (key == "impute")
    out.impute = value;
  else if (key == "fill")
    out.fill = value;
  else if (key == "outliers")
    out.outliers = value;
  else if (key == "scale")
    out.scale = value;
  else if (key == "encode")
    out.encode = value;
  else if (key == "outlier_k") {
    LATHE_CHECK(parse_number(value, out.outlier_k) && out.outlier_k >= 0, ConfigError,
                "{}: outlier_k = '{}' must be a non-negative number", where, value);
  } else {
    throw ConfigError(
        fmt::format("{}: unknown column step '{}'; known: kind, impute, fill, "
                    "outliers, outlier_k, scale, encode",
                    where, key));
  }
  out.validate(where);
  out.given.insert(key);
  return out;
}

void ColumnSteps::validate(const std::string& where) const {
  one_of(kind, {"auto", "numeric", "categorical", "ignore"}, "kind", where);
  one_of(impute, {"none", "drop", "mean", "median", "most_frequent", "constant"}, "impute", where);
  one_of(outliers, {"none", "zscore", "iqr"}, "outliers", where);
  one_of(scale, {"none", "standard", "minmax"}, "scale", where);
  one_of(encode, {"onehot", "label"}, "encode", where);
}

std::string infer_task(const CsvTable& table, const std::string& target) {
  const int64_t col = table.column_index(target);
  if (!column_is_numeric(table, col)) return "classification";
  std::set<std::string> keys;
  for (int64_t r = 0; r < table.num_rows() && keys.size() <= 20; ++r) {
    const std::string k = class_key(table, r, col, true);
    if (k.find_first_of(".e") != std::string::npos) return "regression";  // not an integer
    keys.insert(k);
  }
  return keys.size() <= 20 ? "classification" : "regression";
}

at::Tensor target_strata(const CsvTable& table, const std::string& target) {
  const int64_t col = table.column_index(target);
  const bool numeric = column_is_numeric(table, col);
  std::vector<std::string> keys;
  for (int64_t r = 0; r < table.num_rows(); ++r) keys.push_back(class_key(table, r, col, numeric));
  const auto classes = sorted_classes({keys.begin(), keys.end()}, numeric);
  at::Tensor out = at::empty({table.num_rows()}, at::TensorOptions().dtype(at::kLong));  // (N)
  auto* p = out.data_ptr<int64_t>();
  for (size_t r = 0; r < keys.size(); ++r)
    p[r] = std::lower_bound(classes.begin(), classes.end(), keys[r],
                            [&](const std::string& a, const std::string& b) {
                              return numeric ? key_number(a) < key_number(b) : a < b;
                            }) -
           classes.begin();
  return out;
}

TabularPreprocessor TabularPreprocessor::fit(const CsvTable& train, const TabularSpec& spec) {
  LATHE_CHECK(!spec.target.empty(), ConfigError,
              "{}: no target column given (set data.target to one of the columns)", train.origin);
  LATHE_CHECK(train.num_rows() > 0, DataError, "{}: no training rows to fit the preprocessing on",
              train.origin);
  for (const auto& [name, steps] : spec.columns) {
    LATHE_CHECK(name != spec.target, ConfigError,
                "column steps for '{}', the target column: the target is encoded by the task",
                name);
    train.column_index(name);  // names an unknown column
  }
  one_of(spec.task, {"auto", "classification", "regression"}, "task", train.origin);
  TabularPreprocessor p;
  p.target_ = spec.target;
  const int64_t tcol = train.column_index(spec.target);
  p.target_numeric_ = column_is_numeric(train, tcol);
  std::set<std::string> keys;
  for (int64_t r = 0; r < train.num_rows(); ++r)
    keys.insert(class_key(train, r, tcol, p.target_numeric_));
  p.task_ = spec.task == "auto" ? infer_task(train, spec.target) : spec.task;
  LATHE_CHECK(p.task_ == "classification" || p.target_numeric_, DataError,
              "{}: regression needs a numeric target, but column '{}' holds text", train.origin,
              spec.target);
  if (p.task_ == "classification") p.classes_ = sorted_classes(keys, p.target_numeric_);

  for (int64_t c = 0; c < static_cast<int64_t>(train.columns.size()); ++c) {
    const std::string& name = train.columns[static_cast<size_t>(c)];
    if (c == tcol) continue;
    Column col;
    col.name = name;
    const auto it = spec.columns.find(name);
    col.steps = it != spec.columns.end() ? it->second : spec.all;
    col.steps.validate(fmt::format("{}: column '{}'", train.origin, name));
    if (col.steps.kind == "ignore") continue;
    const bool looks_numeric = column_is_numeric(train, c);
    col.numeric = col.steps.kind == "numeric" || (col.steps.kind == "auto" && looks_numeric);
    const std::string& impute = col.steps.impute;

    if (col.numeric) {
      std::vector<double> present;
      for (int64_t r = 0; r < train.num_rows(); ++r) {
        if (train.is_missing(r, c)) {
          LATHE_CHECK(impute != "none", DataError,
                      "{}: column '{}' has a missing value; choose how to handle it "
                      "(impute: drop, mean, median, most_frequent or constant)",
                      train.where(r), name);
          continue;
        }
        double v = 0;
        const std::string& cell = train.rows[static_cast<size_t>(r)][static_cast<size_t>(c)];
        LATHE_CHECK(parse_number(cell, v), DataError, "{}", not_a_number(train.where(r), name, cell));
        present.push_back(v);
      }
      LATHE_CHECK(!present.empty(), DataError, "{}: column '{}' has no values in the training rows",
                  train.origin, name);
      std::vector<double> sorted = present;
      std::sort(sorted.begin(), sorted.end());
      if (impute == "mean")
        col.fill_number = mean_of(present);
      else if (impute == "median")
        col.fill_number = quantile(sorted, 0.5);
      else if (impute == "most_frequent")
        col.fill_number = most_frequent(present);
      else if (impute == "constant")
        LATHE_CHECK(col.steps.fill.empty() || parse_number(col.steps.fill, col.fill_number),
                    ConfigError, "column '{}': fill = '{}' must be a number for a numeric column",
                    name, col.steps.fill);
      // The later steps see the imputed training column (as in a scikit-learn Pipeline).
      std::vector<double> values = present;
      if (impute != "drop" && impute != "none")
        values.resize(values.size() + static_cast<size_t>(train.num_rows()) - present.size(),
                      col.fill_number);
      if (col.steps.outliers != "none") {
        const bool z = col.steps.outliers == "zscore";
        const double k = col.steps.outlier_k > 0 ? col.steps.outlier_k : (z ? 3.0 : 1.5);
        if (z) {
          const double m = mean_of(values), s = std_of(values, m);
          col.clip_lo = m - k * s;
          col.clip_hi = m + k * s;
        } else {
          std::vector<double> s = values;
          std::sort(s.begin(), s.end());
          const double q1 = quantile(s, 0.25), q3 = quantile(s, 0.75);
          col.clip_lo = q1 - k * (q3 - q1);
          col.clip_hi = q3 + k * (q3 - q1);
        }
        for (double& v : values) v = std::clamp(v, col.clip_lo, col.clip_hi);
      }
      if (col.steps.scale == "standard") {
        col.shift = mean_of(values);
        const double s = std_of(values, col.shift);
        col.divide = s > 0 ? s : 1.0;  // a constant column stays 0, as in scikit-learn
      } else if (col.steps.scale == "minmax") {
        const auto [lo, hi] = std::minmax_element(values.begin(), values.end());
        col.shift = *lo;
        col.divide = *hi > *lo ? *hi - *lo : 1.0;
      }
    } else {
      // The global numeric strategies fit numeric columns; a categorical column takes
      // most_frequent and no scaling or clipping unless its own steps say otherwise.
      if ((impute == "mean" || impute == "median") && col.steps.given.count("impute") == 0)
        col.steps.impute = "most_frequent";
      if (col.steps.given.count("scale") == 0) col.steps.scale = "none";
      if (col.steps.given.count("outliers") == 0) col.steps.outliers = "none";
      LATHE_CHECK(
          impute == "none" || impute == "drop" || impute == "most_frequent" || impute == "constant",
          ConfigError,
          "{}: column '{}' is categorical: impute = '{}' needs numbers (use "
          "most_frequent, constant or drop in data.columns)",
          train.origin, name, impute);
      LATHE_CHECK(
          col.steps.scale == "none" && col.steps.outliers == "none", ConfigError,
          "{}: column '{}' is categorical: scale and outliers apply to numeric columns only "
          "(remove them from its data.columns entry)",
          train.origin, name);
      std::vector<std::string> present;
      for (int64_t r = 0; r < train.num_rows(); ++r) {
        if (train.is_missing(r, c)) {
          LATHE_CHECK(impute != "none", DataError,
                      "{}: column '{}' has a missing value; choose how to handle it "
                      "(impute: drop, most_frequent or constant)",
                      train.where(r), name);
          continue;
        }
        present.push_back(trimmed(train.rows[static_cast<size_t>(r)][static_cast<size_t>(c)]));
      }
      LATHE_CHECK(!present.empty(), DataError, "{}: column '{}' has no values in the training rows",
                  train.origin, name);
      if (impute == "most_frequent") col.fill_category = most_frequent(present);
      if (impute == "constant")
        col.fill_category = col.steps.fill.empty() ? "missing_value" : col.steps.fill;
      std::set<std::string> cats(present.begin(), present.end());
      if (impute == "constant" && present.size() < static_cast<size_t>(train.num_rows()))
        cats.insert(col.fill_category);
      col.categories.assign(cats.begin(), cats.end());
    }
    p.columns_.push_back(std::move(col));
  }
  return p;
}

TabularData TabularPreprocessor::transform(const CsvTable& t, bool with_targets) const {
  std::vector<int64_t> index;
  for (const auto& col : columns_) index.push_back(t.column_index(col.name));
  const int64_t tcol = with_targets ? t.column_index(target_) : -1;
  const int64_t width = num_features();

  TabularData out;
  std::vector<float> feats;
  std::vector<double> targets;
  std::vector<float> row(static_cast<size_t>(width));
  for (int64_t r = 0; r < t.num_rows(); ++r) {
    const auto& cells = t.rows[static_cast<size_t>(r)];
    bool dropped = false;
    size_t f = 0;
    for (size_t k = 0; k < columns_.size() && !dropped; ++k) {
      const Column& col = columns_[k];
      const int64_t c = index[k];
      const bool missing = t.is_missing(r, c);
      if (missing && col.steps.impute == "drop") {
        dropped = true;
        break;
      }
      LATHE_CHECK(!missing || col.steps.impute != "none", DataError,
                  "{}: column '{}' has a missing value, and the preprocessing fitted on the "
                  "training rows does not impute it",
                  t.where(r), col.name);
      if (col.numeric) {
        double v = col.fill_number;
        if (!missing)
          LATHE_CHECK(parse_number(cells[static_cast<size_t>(c)], v), DataError, "{}",
                      not_a_number(t.where(r), col.name, cells[static_cast<size_t>(c)]));
        if (col.steps.outliers != "none") v = std::clamp(v, col.clip_lo, col.clip_hi);
        row[f++] = static_cast<float>((v - col.shift) / col.divide);
        continue;
      }
      const std::string v = missing ? col.fill_category : trimmed(cells[static_cast<size_t>(c)]);
      const auto it = std::lower_bound(col.categories.begin(), col.categories.end(), v);
      const bool known = it != col.categories.end() && *it == v;
      const auto id = it - col.categories.begin();
      if (col.steps.encode == "label") {
        row[f++] = known ? static_cast<float>(id) : -1.0f;
      } else {
        for (size_t j = 0; j < col.categories.size(); ++j)
          row[f + j] = known && static_cast<int64_t>(j) == id ? 1.0f : 0.0f;
        f += col.categories.size();
      }
    }
    if (dropped) continue;
    if (with_targets && task_ == "classification") {
      const std::string key = class_key(t, r, tcol, target_numeric_);
      const auto it = std::find(classes_.begin(), classes_.end(), key);
      LATHE_CHECK(it != classes_.end(), DataError,
                  "{}: target '{}' is a class the training rows do not have ({} known classes); "
                  "split with stratification or drop the record",
                  t.where(r), key, classes_.size());
      targets.push_back(static_cast<double>(it - classes_.begin()));
    } else if (with_targets) {
      double v = 0;
      LATHE_CHECK(!t.is_missing(r, tcol) && parse_number(cells[static_cast<size_t>(tcol)], v),
                  DataError, "{}: target column '{}': '{}' is not a number", t.where(r), target_,
                  cells[static_cast<size_t>(tcol)]);
      targets.push_back(v);
    }
    feats.insert(feats.end(), row.begin(), row.end());
    out.rows.push_back(r);
  }
  const auto n = static_cast<int64_t>(out.rows.size());
  out.inputs = at::empty({n, width}, at::TensorOptions().dtype(at::kFloat));  // (N, F)
  std::copy(feats.begin(), feats.end(), out.inputs.data_ptr<float>());
  if (!with_targets) return out;
  const bool cls = task_ == "classification";
  out.targets = at::empty({n}, at::TensorOptions().dtype(cls ? at::kLong : at::kFloat));  // (N)
  for (int64_t i = 0; i < n; ++i) {
    if (cls)
      out.targets.data_ptr<int64_t>()[i] = static_cast<int64_t>(targets[static_cast<size_t>(i)]);
    else
      out.targets.data_ptr<float>()[i] = static_cast<float>(targets[static_cast<size_t>(i)]);
  }
  return out;
}

std::vector<std::string> TabularPreprocessor::feature_names() const {
  std::vector<std::string> names;
  for (const auto& col : columns_) {
    if (col.numeric || col.steps.encode == "label")
      names.push_back(col.name);
    else
      for (const auto& cat : col.categories) names.push_back(col.name + "=" + cat);
  }
  return names;
}

std::string TabularPreprocessor::to_json() const {
  nlohmann::ordered_json j;
  j["format"] = "lathe.tabular/1";
  j["target"] = target_;
  j["task"] = task_;
  j["target_numeric"] = target_numeric_;
  j["classes"] = classes_;
  j["columns"] = nlohmann::ordered_json::array();
  for (const auto& c : columns_) {
    nlohmann::ordered_json o;
    o["name"] = c.name;
    o["numeric"] = c.numeric;
    o["impute"] = c.steps.impute;
    o["outliers"] = c.steps.outliers;
    o["scale"] = c.steps.scale;
    o["encode"] = c.steps.encode;
    if (c.numeric) {
      o["fill"] = c.fill_number;
      o["clip"] = {c.clip_lo, c.clip_hi};
      o["shift"] = c.shift;
      o["divide"] = c.divide;
    } else {
      o["fill"] = c.fill_category;
      o["categories"] = c.categories;
    }
    j["columns"].push_back(std::move(o));
  }
  j["features"] = feature_names();
  return j.dump(2) + "\n";
}

TabularPreprocessor TabularPreprocessor::from_json(const std::string& text,
                                                   const std::string& origin) {
  try {
    const auto j = nlohmann::json::parse(text);
    LATHE_CHECK(j.value("format", "") == "lathe.tabular/1", DataError,
                "{}: not a lathe tabular preprocessing file (format '{}', expected "
                "'lathe.tabular/1')",
                origin, j.value("format", ""));
    TabularPreprocessor p;
    p.target_ = j.at("target").get<std::string>();
    p.task_ = j.at("task").get<std::string>();
    p.target_numeric_ = j.at("target_numeric").get<bool>();
    p.classes_ = j.at("classes").get<std::vector<std::string>>();
    for (const auto& o : j.at("columns")) {
      Column c;
      c.name = o.at("name").get<std::string>();
      c.numeric = o.at("numeric").get<bool>();
      c.steps.impute = o.at("impute").get<std::string>();
      c.steps.outliers = o.at("outliers").get<std::string>();
      c.steps.scale = o.at("scale").get<std::string>();
      c.steps.encode = o.at("encode").get<std::string>();
      c.steps.validate(fmt::format("{}: column '{}'", origin, c.name));
      if (c.numeric) {
        c.fill_number = o.at("fill").get<double>();
        c.clip_lo = o.at("clip").at(0).get<double>();
        c.clip_hi = o.at("clip").at(1).get<double>();
        c.shift = o.at("shift").get<double>();
        c.divide = o.at("divide").get<double>();
      } else {
        c.fill_category = o.at("fill").get<std::string>();
        c.categories = o.at("categories").get<std::vector<std::string>>();
      }
      p.columns_.push_back(std::move(c));
    }
    return p;
  } catch (const nlohmann::json::exception& e) {
    throw DataError(fmt::format("{}: malformed preprocessing JSON: {}", origin, e.what()));
  }
}

void TabularPreprocessor::save(const std::filesystem::path& file) const {
  write_file_atomic(file, to_json());
}

TabularPreprocessor TabularPreprocessor::load(const std::filesystem::path& file) {
  return from_json(detail::read_file(file, "preprocessing file"), file.string());
}

}  // namespace lathe::data
