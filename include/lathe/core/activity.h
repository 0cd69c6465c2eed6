// lathe::Doing: what lathe is doing (and on which file), recorded when an exception unwinds.
#pragma once

#include <string>
#include <vector>

namespace lathe {

/// Names what lathe is doing, and on which file, for as long as it lives. When an exception
/// unwinds through it, the activity is recorded, so that the CLI can say what a library error
/// (a c10::Error, a std::bad_alloc, ...) interrupted instead of printing it bare.
///
///   const lathe::Doing doing(fmt::format("reading the weights file {}", path.string()));
class Doing {
 public:
  explicit Doing(std::string what);
  ~Doing();
  Doing(const Doing&) = delete;
  Doing& operator=(const Doing&) = delete;

 private:
  std::string what_;
  int uncaught_;
};

/// The activities that the last exceptions on this thread unwound through, innermost first;
/// clears them.
std::vector<std::string> take_failed_activities();

}  // namespace lathe
