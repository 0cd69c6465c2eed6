// Atomic file writes: temporary file in the same folder, fsync, rename, fsync of the folder.
#pragma once

#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>

namespace lathe {

/// A file that appears at its path only when commit() succeeds; until then the old file (if
/// any) stays untouched, and a crash or an error leaves no half-written file behind. Write
/// errors (a full disk, say) are IoErrors naming the path and the OS reason.
///
///   lathe::AtomicFile f("runs/x/model.safetensors");
///   f.write(header.data(), header.size());
///   f.commit();
class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path path);
  ~AtomicFile();  // removes the temporary file unless committed
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t size);
  void write(std::string_view text) { write(text.data(), text.size()); }
  /// Flushes, fsyncs, renames over the target and fsyncs the folder.
  void commit();

 private:
  std::filesystem::path path_;
  std::filesystem::path tmp_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
};

/// Writes `text` to `path` atomically.
void write_file_atomic(const std::filesystem::path& path, std::string_view text);

/// Copies the file `from` to `to` atomically (an unreadable `from` is an IoError naming both).
void copy_file_atomic(const std::filesystem::path& from, const std::filesystem::path& to);

}  // namespace lathe

namespace lathe {

/// Why `path` cannot be read as a regular file, or an empty string when it can: "no such file",
/// "it is a folder", "it is a FIFO (named pipe)", "it is a device", "it is a socket". Readers
/// call it before opening, so that /dev/zero or a folder given as a data path is an error naming
/// it instead of an endless read.
///
///   if (auto why = lathe::not_a_regular_file(p); !why.empty()) throw DataError(p.string() + ": " +
///   why);
std::string not_a_regular_file(const std::filesystem::path& path);

}  // namespace lathe
