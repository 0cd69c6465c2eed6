// Helpers shared by the data tests: a Python parity oracle into a temporary folder, IDX bytes, gzip.
#pragma once

#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/support.h"

namespace lathe::testing {

/// An IDX file: header (type code, dims) followed by `body` bytes.
inline std::string idx_bytes(uint8_t type, const std::vector<uint32_t>& dims,
                             const std::string& body) {
  std::string s = {0, 0, static_cast<char>(type), static_cast<char>(dims.size())};
  for (uint32_t d : dims)
    for (int shift : {24, 16, 8, 0}) s.push_back(static_cast<char>((d >> shift) & 0xFF));
  return s + body;
}

/// `bytes` gzip-compressed (best compression) into `file`.
inline void write_gz(const std::filesystem::path& file, const std::string& bytes) {
  gzFile f = gzopen(file.c_str(), "wb9");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

/// Runs tests/parity/<script> with `dir` as its output folder; fails the test if it fails.
inline void run_oracle(const std::string& script, const TempDir& dir) {
  run_parity(script, dir.path().string());
}

}  // namespace lathe::testing
