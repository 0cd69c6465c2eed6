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
  std::ifstream in(file, std::ios::binary | std::ios::ate);
  LATHE_CHECK(in.good(), DataError, "{}: cannot open the {} (not readable)", file.string(), what);
  const std::streamoff size = in.tellg();
  if (size <= 0) {  // a file whose size is not known ahead (procfs): read to its end
    in.seekg(0);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  std::string bytes(static_cast<size_t>(size), '\0');  // one read into the final string
  in.seekg(0);
  in.read(bytes.data(), size);
  bytes.resize(static_cast<size_t>(in.gcount()));
  return bytes;
}

}  // namespace lathe::data::detail
