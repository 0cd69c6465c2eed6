// Whole-file reads for the data sources, with an error naming the file and the reason.
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "lathe/core/error.h"
#include "lathe/core/fs.h"

namespace lathe::data::detail {

/// A DataError "FILE: cannot open the WHAT (REASON)" unless `file` is a regular file: a folder,
/// a FIFO or a device (/dev/zero) where a file is expected is refused before anything is read.
inline void require_regular_file(const std::filesystem::path& file, const char* what) {
  const std::string why = not_a_regular_file(file);
  LATHE_CHECK(why.empty(), DataError, "{}: cannot open the {} ({})", file.string(), what, why);
}

/// The bytes of `file`; a DataError "FILE: cannot open the WHAT (no such file | not readable |
/// it is a folder | ...)".
inline std::string read_file(const std::filesystem::path& file, const char* what) {
  require_regular_file(file, what);
  std::ifstream in(file, std::ios::binary);
  LATHE_CHECK(in.good(), DataError, "{}: cannot open the {} (not readable)", file.string(), what);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace lathe::data::detail
