// Streaming CSV: a file of any size read a chunk of records at a time, in bounded memory.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "lathe/data/csv.h"

namespace lathe::data {

/// Reads a CSV file's records in chunks of at most `chunk_rows`, each a CsvTable with the
/// header's columns and the file's own line numbers, parsed by parse_csv (so a chunk's errors
/// name file:line exactly as read_csv's would). Memory holds one chunk, whatever the file's size;
/// a quoted field may span lines.
///
///   CsvChunkReader reader("big.csv", 4096);
///   for (CsvTable chunk; reader.next(chunk);) use(chunk);
class CsvChunkReader {
 public:
  /// Opens `file` and reads its header; a missing, empty or non-regular file is a DataError.
  CsvChunkReader(const std::filesystem::path& file, int64_t chunk_rows, CsvOptions options = {});
  /// The next chunk of records (at least one) into `out`; false at the end of the file.
  bool next(CsvTable& out);
  const std::vector<std::string>& columns() const { return columns_; }
  /// Bytes consumed so far and the file's size, for a progress bar.
  int64_t bytes_read() const { return bytes_read_; }
  int64_t file_size() const { return file_size_; }

 private:
  /// Appends the lines of one record (a quoted field may span several) to `text`; false at EOF.
  bool read_record(std::string& text);

  std::filesystem::path file_;
  int64_t chunk_rows_;
  CsvOptions options_;
  std::ifstream in_;
  std::string header_text_;  ///< the header record's lines, prepended to every chunk
  int64_t header_lines_ = 0;
  std::vector<std::string> columns_;
  int64_t next_line_ = 1;  ///< the file's line number of the next unread line
  int64_t next_record_ = 1;  ///< the record number of the next unread record (CsvTable::records)
  int64_t bytes_read_ = 0, file_size_ = 0;
};

}  // namespace lathe::data
