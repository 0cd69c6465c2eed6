// Logging through fmt (levels, one sink: stderr) and the console progress bar.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace lathe::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3, off = 4 };

/// Messages below this level are dropped (default: info; LATHE_LOG_LEVEL=debug|info|warn|error).
void set_level(Level level);
Level level();

/// Writes one line "[lathe] message" (warn/error carry their level) to stderr.
void write(Level level, std::string_view message);

template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::info) write(Level::info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::warn) write(Level::warn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::debug) write(Level::debug, fmt::format(f, std::forward<Args>(args)...));
}

/// True when `stream` is a terminal (progress bars redraw in place only there).
bool is_tty(std::FILE* stream);

/// A one-line progress bar that redraws in place on a terminal and stays silent otherwise
/// (callers print plain per-epoch lines there).
///
///   ProgressBar bar("epoch 1/5", steps);
///   for (...) bar.update(i + 1, fmt::format("loss {:.4f}", loss));
///   bar.finish();
class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, std::FILE* stream = stderr, bool enabled = true);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  /// Sets the count of finished steps and the text shown after the bar (e.g. the loss).
  void update(int64_t done, std::string_view postfix = {});
  /// Clears the line so the caller's summary line replaces it.
  void finish();
  bool active() const { return enabled_; }
  /// Changes the step count (e.g. once it is known after construction).
  void set_total(int64_t total) { total_ = total > 0 ? total : 1; }

 private:
  std::string label_;
  int64_t total_;
  std::FILE* stream_;
  bool enabled_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace lathe::log
