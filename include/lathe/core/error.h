// lathe::Error and its family: every failure lathe reports, with what / where / what to do.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace lathe {

/// Base of every error lathe throws. The message says what went wrong, where (file, line, key,
/// tensor or module path) and, when there is one, what to do about it.
///
///   try { lathe::config::load_config("run.yaml", {}); }
///   catch (const lathe::Error& e) { fmt::print(stderr, "{}\n", e.what()); }
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
  /// A short name of the family member ("config error", "data error", ...), used by the CLI.
  virtual const char* kind() const noexcept { return "error"; }
};

#define LATHE_DEFINE_ERROR(Name, label)                                 \
  class Name : public Error {                                           \
   public:                                                              \
    explicit Name(const std::string& message) : Error(message) {}       \
    const char* kind() const noexcept override { return label; }        \
  }

/// A run config that is malformed: unknown key, wrong type, missing field, bad override.
LATHE_DEFINE_ERROR(ConfigError, "config error");
/// Input data that cannot be read or is malformed (file, line or record index in the message).
LATHE_DEFINE_ERROR(DataError, "data error");
/// A weights or checkpoint file that is missing, truncated or does not fit the model.
LATHE_DEFINE_ERROR(CheckpointError, "checkpoint error");
/// A model that cannot be built (unknown name, inconsistent options, bad input shape).
LATHE_DEFINE_ERROR(ModelError, "model error");
/// Training that cannot go on (a non-finite loss, an optimizer misconfiguration).
LATHE_DEFINE_ERROR(TrainError, "training error");
/// A file-system operation that failed (write, rename, fsync), with the path and the OS reason.
LATHE_DEFINE_ERROR(IoError, "i/o error");
/// An ONNX export that cannot be done (unsupported operation, failed validation).
LATHE_DEFINE_ERROR(ExportError, "export error");

/// Data-parallel training that cannot go on: a rendezvous that fails, a rank that died or stalled
/// past dist.timeout_s (the message names this rank, the operation and the timeout).
LATHE_DEFINE_ERROR(DistError, "distributed error");

#undef LATHE_DEFINE_ERROR

}  // namespace lathe

/// LATHE_CHECK(cond, ErrorType, "format {}", args...): throw ErrorType with a formatted message
/// when cond is false.
///
///   LATHE_CHECK(n > 0, lathe::DataError, "{}: empty dataset", path.string());
#define LATHE_CHECK(cond, ErrorType, ...)                \
  do {                                                   \
    if (!(cond)) throw ErrorType(fmt::format(__VA_ARGS__)); \
  } while (false)
