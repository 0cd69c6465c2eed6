// AtomicFile: temporary + fsync + rename, so a file on disk is never left half-written.
#include "lathe/core/fs.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "lathe/core/error.h"

namespace lathe {
namespace {
std::string os_reason(int err) {
  if (err == ENOSPC) return "no space left on the device (the previous file, if any, is kept)";
  return std::strerror(err);
}
}  // namespace

AtomicFile::AtomicFile(std::filesystem::path path) : path_(std::move(path)) {
  const auto dir = path_.has_parent_path() ? path_.parent_path() : std::filesystem::path(".");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  LATHE_CHECK(!ec, IoError, "{}: cannot create the folder: {}", dir.string(), ec.message());
  tmp_ = dir / fmt::format(".{}.tmp.{}", path_.filename().string(), ::getpid());
  file_ = std::fopen(tmp_.c_str(), "wb");
  LATHE_CHECK(file_ != nullptr, IoError, "{}: cannot create a temporary file to write {}: {}",
              tmp_.string(), path_.string(), os_reason(errno));
}

AtomicFile::~AtomicFile() {
  if (file_ != nullptr) std::fclose(file_);
  if (!committed_) {
    std::error_code ec;
    std::filesystem::remove(tmp_, ec);
  }
}

void AtomicFile::write(const void* data, size_t size) {
  LATHE_CHECK(file_ != nullptr && !committed_, IoError, "{}: write after commit", path_.string());
  if (size == 0) return;
  if (std::fwrite(data, 1, size, file_) != size) {
    throw IoError(fmt::format("{}: write failed: {}", path_.string(), os_reason(errno)));
  }
}

void AtomicFile::commit() {
  LATHE_CHECK(file_ != nullptr && !committed_, IoError, "{}: committed twice", path_.string());
  const bool flushed = std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
  const int err = errno;
  std::fclose(file_);
  file_ = nullptr;
  LATHE_CHECK(flushed, IoError, "{}: write failed: {}", path_.string(), os_reason(err));
  LATHE_CHECK(std::rename(tmp_.c_str(), path_.c_str()) == 0, IoError,
              "{}: cannot rename the finished temporary file into place: {}", path_.string(),
              os_reason(errno));
  committed_ = true;
  const auto dir = path_.has_parent_path() ? path_.parent_path() : std::filesystem::path(".");
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);  // make the rename itself durable
    ::close(fd);
  }
}

void write_file_atomic(const std::filesystem::path& path, std::string_view text) {
  AtomicFile f(path);
  f.write(text);
  f.commit();
}

void copy_file_atomic(const std::filesystem::path& from, const std::filesystem::path& to) {
  std::ifstream in(from, std::ios::binary);
  LATHE_CHECK(in.good(), IoError, "{}: cannot read it to copy it to {}", from.string(),
              to.string());
  std::ostringstream bytes;
  bytes << in.rdbuf();
  write_file_atomic(to, bytes.str());
}

}  // namespace lathe

namespace lathe {

std::string not_a_regular_file(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);  // follows links
  switch (st.type()) {
    case fs::file_type::regular:
      return {};
    case fs::file_type::not_found:
      return "no such file";
    case fs::file_type::directory:
      return "it is a folder, not a file";
    case fs::file_type::fifo:
      return "it is a FIFO (named pipe), not a regular file";
    case fs::file_type::character:
    case fs::file_type::block:
      return "it is a device, not a regular file";
    case fs::file_type::socket:
      return "it is a socket, not a regular file";
    default:
      return ec ? fmt::format("cannot inspect it: {}", ec.message()) : "not a regular file";
  }
}

}  // namespace lathe
