// Logging to stderr and the in-place progress bar.
#include "lathe/core/log.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>

namespace lathe::log {
namespace {

Level level_from_env() {
  const char* v = std::getenv("LATHE_LOG_LEVEL");
  if (v == nullptr) return Level::info;
  const std::string_view s(v);
  if (s == "debug") return Level::debug;
  if (s == "warn") return Level::warn;
  if (s == "error") return Level::error;
  if (s == "off") return Level::off;
  return Level::info;
}

std::atomic<Level>& current() {
  static std::atomic<Level> level{level_from_env()};
  return level;
}

}  // namespace

void set_level(Level l) { current().store(l); }
Level level() { return current().load(); }

void write(Level l, std::string_view message) {
  const char* tag = l == Level::warn ? "warning: " : l == Level::error ? "error: " : "";
  fmt::print(stderr, "[lathe] {}{}\n", tag, message);
  std::fflush(stderr);
}

bool is_tty(std::FILE* stream) { return ::isatty(::fileno(stream)) == 1; }

ProgressBar::ProgressBar(std::string label, int64_t total, std::FILE* stream, bool enabled)
    : label_(std::move(label)),
      total_(std::max<int64_t>(total, 1)),
      stream_(stream),
      enabled_(enabled && is_tty(stream)),
      start_(std::chrono::steady_clock::now()) {}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::update(int64_t done, std::string_view postfix) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  // Redraw at most 10 times a second, and always on the last step.
  if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  constexpr int width = 30;
  const double frac = std::clamp(static_cast<double>(done) / static_cast<double>(total_), 0.0, 1.0);
  const int filled = static_cast<int>(frac * width);
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done) / rate : 0.0;
  fmt::print(stream_, "\r\033[K{} [{:=<{}}{:<{}}] {}/{} {:.1f} it/s eta {:.0f}s {}", label_, "",
             filled, filled < width ? ">" : "", width - filled, done, total_, rate, eta, postfix);
  std::fflush(stream_);
}

void ProgressBar::finish() {
  if (!enabled_) return;
  fmt::print(stream_, "\r\033[K");
  std::fflush(stream_);
  enabled_ = false;
}

}  // namespace lathe::log
