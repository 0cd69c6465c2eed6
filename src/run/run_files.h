// Reading the files of a run folder (shared by the run area's sources; not a public header).
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "lathe/core/error.h"

namespace lathe::run::detail {

/// The whole file as text; an IoError naming it when it cannot be opened.
inline std::string read_text(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  LATHE_CHECK(in.good(), IoError, "{}: cannot open for reading", file.string());
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace lathe::run::detail
