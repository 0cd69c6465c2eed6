// RFC 4180 CSV parser with line tracking, bad-record errors or skipping, and number parsing.
#include "lathe/data/csv.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <string>

#include "lathe/core/error.h"
#include "lathe/core/log.h"
#include "read_file.h"

namespace lathe::data {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

/// One record as parsed: its fields, the line it starts on, or what is wrong with it.
struct Record {
  std::vector<std::string> fields;
  int64_t line = 0;
  int64_t lines = 1;  ///< how many lines it spans (an unterminated quote: to the end of the file)
  std::string error;  ///< empty when well-formed
};

/// Reads records one at a time from `text`, tracking line numbers across quoted newlines.
class RecordReader {
 public:
  RecordReader(std::string_view text, char delim, int64_t first_line)
      : s_(text), delim_(delim), line_(first_line) {
    if (s_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;  // UTF-8 byte-order mark
  }

  bool done() const { return pos_ >= s_.size(); }

  Record next() {
    Record r;
    r.line = line_;
    std::string field;
    bool quoted = false, after_quote = false;
    for (;;) {
      if (pos_ >= s_.size()) {
        // The last line counted is the last one holding text (not the empty one after a final
        // newline).
        const int64_t last =
            !s_.empty() && (s_.back() == '\n' || s_.back() == '\r') && line_ > r.line ? line_ - 1
                                                                                      : line_;
        r.lines = last - r.line + 1;
        if (quoted)
          r.error = fmt::format(
              "unterminated quoted field: a '\"' opened in this record is never closed, so it "
              "swallows the rest of the file (lines {} to {})",
              r.line, last);
        r.fields.push_back(std::move(field));
        return r;
      }
      const char c = s_[pos_++];
      if (quoted) {
        if (c == '"') {
          if (pos_ < s_.size() && s_[pos_] == '"') {
            field.push_back('"');
            ++pos_;
          } else {
            quoted = false;
            after_quote = true;
          }
        } else {
          if (c == '\n') ++line_;
          field.push_back(c);
        }
        continue;
      }
      if (c == delim_) {
        r.fields.push_back(std::move(field));
        field.clear();
        after_quote = false;
      } else if (c == '\n' || c == '\r') {
        if (c == '\r' && pos_ < s_.size() && s_[pos_] == '\n') ++pos_;
        r.lines = line_ - r.line + 1;
        ++line_;
        r.fields.push_back(std::move(field));
        return r;
      } else if (c == '"' && trim(field).empty() && !after_quote) {
        field.clear();
        quoted = true;
      } else if (after_quote) {
        if (c != ' ' && c != '\t' && r.error.empty())
          r.error = fmt::format(
              "unexpected '{}' after a closing quote (write \"\" for a quote "
              "inside a quoted field)",
              c);
      } else {
        field.push_back(c);
      }
    }
  }

 private:
  std::string_view s_;
  char delim_;
  size_t pos_ = 0;
  int64_t line_;
};

bool blank(const Record& r) { return r.fields.size() == 1 && trim(r.fields[0]).empty(); }

/// A whole cell as a double: false when it spells no number. A magnitude beyond a double's range
/// reads as ±inf and one below it as ±0 (from_chars reports both as out of range and leaves the
/// value unset; strtod rounds them as IEEE 754 does).
bool to_double(std::string_view cell, double& out) {
  cell = trim(cell);
  if (cell.empty()) return false;
  if (cell.front() == '+') cell.remove_prefix(1);
  const auto [end, ec] = std::from_chars(cell.data(), cell.data() + cell.size(), out);
  if (end != cell.data() + cell.size()) return false;
  if (ec == std::errc()) return true;
  if (ec != std::errc::result_out_of_range) return false;
  out = std::strtod(std::string(cell).c_str(), nullptr);  // ±HUGE_VAL, or ±0 / a subnormal
  return true;
}

}  // namespace

bool parse_number(std::string_view cell, double& out) {
  double v = 0;
  if (!to_double(cell, v) || !std::isfinite(v)) return false;
  out = v;
  return true;
}

bool is_non_finite_number(std::string_view cell) {
  double v = 0;
  return to_double(cell, v) && !std::isfinite(v);
}

int64_t CsvTable::column_index(const std::string& name) const {
  const auto it = std::find(columns.begin(), columns.end(), name);
  if (it != columns.end()) return it - columns.begin();
  std::string all;
  for (const auto& c : columns) all += (all.empty() ? "" : ", ") + c;
  throw DataError(fmt::format("{}: no column '{}'; the columns are: {}", origin, name, all));
}

bool CsvTable::is_missing(int64_t row, int64_t col) const {
  const std::string_view cell = trim(rows[static_cast<size_t>(row)][static_cast<size_t>(col)]);
  return std::find(missing.begin(), missing.end(), cell) != missing.end();
}

std::string CsvTable::where(int64_t row) const {
  return fmt::format("{}:{}", origin, lines[static_cast<size_t>(row)]);
}

CsvTable CsvTable::select(const std::vector<int64_t>& indices) const {
  CsvTable out{origin, columns, {}, {}, skipped, missing, {}, records_read};
  out.rows.reserve(indices.size());
  out.lines.reserve(indices.size());
  out.records.reserve(indices.size());
  for (int64_t i : indices) {
    out.rows.push_back(rows[static_cast<size_t>(i)]);
    out.lines.push_back(lines[static_cast<size_t>(i)]);
    if (!records.empty()) out.records.push_back(records[static_cast<size_t>(i)]);
  }
  return out;
}

CsvTable parse_csv(std::string_view text, std::string origin, const CsvOptions& options) {
  CsvTable t;
  t.origin = std::move(origin);
  t.missing = options.missing;
  RecordReader reader(text, options.delimiter, options.first_line);
  while (!reader.done() && options.header) {
    Record head = reader.next();
    if (blank(head)) continue;
    LATHE_CHECK(head.error.empty(), DataError, "{}:{}: malformed header: {}", t.origin, head.line,
                head.error);
    for (auto& f : head.fields) {
      const std::string name(trim(f));
      const auto it = std::find(t.columns.begin(), t.columns.end(), name);
      LATHE_CHECK(it == t.columns.end(), DataError,
                  "{}:{}: the header names column '{}' twice (columns {} and {}); column names "
                  "must be unique",
                  t.origin, head.line, name, it - t.columns.begin() + 1, t.columns.size() + 1);
      t.columns.push_back(name);
    }
    break;
  }
  std::string first_error;
  while (!reader.done()) {
    Record r = reader.next();
    if (blank(r)) continue;
    const int64_t record = options.first_record + t.records_read++;
    if (t.columns.empty())
      for (size_t i = 0; i < r.fields.size(); ++i) t.columns.push_back(fmt::format("c{}", i));
    if (r.error.empty() && r.fields.size() != t.columns.size())
      r.error = fmt::format("expected {} fields (as in the {}), got {}", t.columns.size(),
                            options.header ? "header" : "first record", r.fields.size());
    if (!r.error.empty()) {
      const std::string msg = fmt::format("{}:{}: malformed record: {}", t.origin, r.line, r.error);
      LATHE_CHECK(options.skip_bad_rows, DataError,
                  "{} (fix the file, or set data.skip_bad_records: true to skip such records)",
                  msg);
      if (first_error.empty()) first_error = msg;
      // An unterminated quote swallowed every record after it: count each line it took.
      t.skipped += r.error.rfind("unterminated", 0) == 0 ? r.lines : 1;
      continue;
    }
    t.rows.push_back(std::move(r.fields));
    t.lines.push_back(r.line);
    t.records.push_back(record);
  }
  LATHE_CHECK(!t.columns.empty(), DataError, "{}: empty CSV file (no header, no records)",
              t.origin);
  if (t.skipped > 0)
    log::warn("{}: skipped {} malformed record(s); the first: {}", t.origin, t.skipped,
              first_error);
  return t;
}

CsvTable read_csv(const std::filesystem::path& file, const CsvOptions& options) {
  return parse_csv(detail::read_file(file, "CSV file"), file.string(), options);
}

}  // namespace lathe::data
