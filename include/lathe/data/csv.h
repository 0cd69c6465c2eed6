// CSV reading (RFC 4180: header, quoted fields, embedded quotes and newlines) into a string table.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace lathe::data {

/// How a CSV file is read.
struct CsvOptions {
  char delimiter = ',';
  bool header = true;  ///< the first record names the columns (else c0, c1, ...)
  bool skip_bad_rows =
      false;  ///< skip malformed records (counted in CsvTable::skipped) instead of failing
  /// Cells that mean "missing" (compared after trimming spaces).
  std::vector<std::string> missing = {"", "NA", "N/A", "NaN", "nan", "null", "NULL", "?"};
  /// The line number of the text's first line (errors cite it): 1 for a whole file, more for a
  /// chunk of one (CsvChunkReader).
  int64_t first_line = 1;
  /// The record number of the text's first record: 1 for a whole file, more for a chunk.
  int64_t first_record = 1;
};

/// A CSV file as strings: one row per record, every row as wide as the header.
struct CsvTable {
  std::string origin;  ///< the file (or name) errors cite
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;
  std::vector<int64_t> lines;        ///< the 1-based line each row starts on
  int64_t skipped = 0;               ///< malformed records skipped (skip_bad_rows)
  std::vector<std::string> missing;  ///< the missing-value tokens it was read with
  /// Each row's 1-based record number in the file: records counted as the reader meets them,
  /// header and blank lines not counted, malformed records (skipped or not) counted, so a row
  /// keeps its number when a record before it is skipped.
  std::vector<int64_t> records;
  int64_t records_read = 0;  ///< non-blank records met after the header, malformed ones included

  int64_t num_rows() const { return static_cast<int64_t>(rows.size()); }
  /// Index of column `name`; a DataError listing the columns when there is none.
  int64_t column_index(const std::string& name) const;
  /// Whether cell (row, col) is a missing value.
  bool is_missing(int64_t row, int64_t col) const;
  /// "file:line" of row `row`, for error messages.
  std::string where(int64_t row) const;
  /// The rows at `indices`, in that order.
  CsvTable select(const std::vector<int64_t>& indices) const;
};

/// Reads a CSV file. A record with the wrong number of fields, an unterminated quote or text
/// after a closing quote is a DataError naming the file and line — or, with skip_bad_rows, is
/// skipped and counted (an unterminated quote counts every line it swallowed). A header that
/// names a column twice is a DataError. A folder, FIFO or device is refused before reading.
///
///   CsvTable t = lathe::data::read_csv("iris.csv");
CsvTable read_csv(const std::filesystem::path& file, const CsvOptions& options = {});

/// Same as read_csv, from text; `origin` names it in errors.
CsvTable parse_csv(std::string_view text, std::string origin, const CsvOptions& options = {});

/// Parses a whole cell as a finite number (leading/trailing spaces allowed); false when it is not
/// one. The rule for non-finite cells: `nan` / `NaN` are missing values (CsvOptions::missing);
/// `inf`, `-inf`, `infinity` and numbers beyond a double's range (`1e400`) are not numbers lathe
/// reads — in a column that is otherwise numeric they are a DataError naming the file, line,
/// column and cell (is_non_finite_number tells them apart). A number too small for a double reads
/// as the nearest double (a subnormal, or ±0 for `1e-400`), as Python's float() and pandas read it.
bool parse_number(std::string_view cell, double& out);

/// Whether a whole cell spells an infinite or NaN value (`inf`, `-Infinity`, `nan`, ...) or a
/// number whose magnitude overflows a double (`1e400`, `-2e308`).
bool is_non_finite_number(std::string_view cell);

}  // namespace lathe::data
