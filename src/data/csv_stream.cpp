// CsvChunkReader: record boundaries found line by line (tracking quotes), chunks parsed by parse_csv.
#include "lathe/data/csv_stream.h"

#include <string_view>

#include "lathe/core/error.h"
#include "lathe/core/fs.h"

namespace lathe::data {
namespace {

/// Where a record stands after a line: inside a quoted field (the record goes on) or not. Follows
/// parse_csv's rule: a quote opens a field only as its first non-blank character; "" inside a
/// quoted field is a quote.
struct QuoteState {
  bool quoted = false;
  bool field_blank = true;  ///< nothing but spaces in the current field so far
  bool after_quote = false;

  void scan(const std::string& line, char delim) {
    for (size_t i = 0; i < line.size(); ++i) {
      const char c = line[i];
      if (quoted) {
        if (c != '"') continue;
        if (i + 1 < line.size() && line[i + 1] == '"') {
          ++i;
        } else {
          quoted = false;
          after_quote = true;
        }
      } else if (c == delim) {
        field_blank = true;
        after_quote = false;
      } else if (c == '"' && field_blank && !after_quote) {
        quoted = true;
        field_blank = false;
      } else if (c != ' ' && c != '\t') {
        field_blank = false;
      }
    }
    if (!quoted) *this = {};  // the record ends with the line
  }
};

bool blank_line(const std::string& line) {
  return line.find_first_not_of(" \t\r\n") == std::string::npos;
}

}  // namespace

CsvChunkReader::CsvChunkReader(const std::filesystem::path& file, int64_t chunk_rows,
                               CsvOptions options)
    : file_(file), chunk_rows_(std::max<int64_t>(chunk_rows, 1)), options_(std::move(options)) {
  const std::string why = not_a_regular_file(file);
  LATHE_CHECK(why.empty(), DataError, "{}: cannot read this CSV file: {}", file.string(), why);
  in_.open(file, std::ios::binary);
  LATHE_CHECK(in_.good(), DataError, "{}: cannot open this CSV file", file.string());
  file_size_ = static_cast<int64_t>(std::filesystem::file_size(file));
  char bom[3] = {};
  in_.read(bom, 3);  // a UTF-8 byte-order mark is not part of the first column's name
  if (in_.gcount() == 3 && std::string_view(bom, 3) == "\xEF\xBB\xBF") {
    bytes_read_ = 3;
  } else {
    in_.clear();
    in_.seekg(0);
  }
  if (!options_.header) return;
  std::string text;
  int64_t start = next_line_;
  do {  // blank lines before the header are skipped
    start = next_line_;
    text.clear();
    LATHE_CHECK(read_record(text), DataError, "{}: empty CSV file (no header, no records)",
                file.string());
  } while (blank_line(text));
  header_lines_ = next_line_ - start;
  header_text_ = text;
  CsvOptions header_only = options_;
  header_only.first_line = start;
  columns_ = parse_csv(header_text_, file.string(), header_only).columns;
}

bool CsvChunkReader::read_record(std::string& text) {
  QuoteState state;
  bool any = false;
  for (std::string line; std::getline(in_, line);) {
    bytes_read_ = in_.eof() ? file_size_ : bytes_read_ + static_cast<int64_t>(line.size()) + 1;
    ++next_line_;
    any = true;
    state.scan(line, options_.delimiter);
    text += line;
    text += '\n';
    if (!state.quoted) return true;
  }
  return any;  // an unterminated quote runs to the end of the file: parse_csv reports it
}

bool CsvChunkReader::next(CsvTable& out) {
  const int64_t first = next_line_;
  std::string text = header_text_;
  int64_t records = 0;
  while (records < chunk_rows_ && read_record(text)) ++records;
  if (records == 0) return false;
  CsvOptions opts = options_;
  opts.first_line = first - header_lines_;
  opts.first_record = next_record_;
  out = parse_csv(text, file_.string(), opts);
  next_record_ += out.records_read;
  if (out.num_rows() == 0) {  // only blank lines or skipped records: read on, keeping the count
    const int64_t skipped = out.skipped;
    const bool more = next(out);
    out.skipped += skipped;
    return more;
  }
  return true;
}

}  // namespace lathe::data
