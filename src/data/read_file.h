// Whole-file reads for the data sources, with an error naming the file and the reason.
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "lathe/core/error.h"

namespace lathe::data::detail {

/// The bytes of `file`; a DataError "FILE: cannot open the WHAT (no such file | not readable)".
inline std::string read_file(const std::filesystem::path& file, const char* what) {
  std::ifstream in(file, std::ios::binary);
  LATHE_CHECK(in.good(), DataError, "{}: cannot open the {} ({})", file.string(), what,
              std::filesystem::exists(file) ? "not readable" : "no such file");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace lathe::data::detail
