// Test helpers shared by the GoogleTest suites: temporary folders, error-message checks, commands.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

namespace lathe::testing {

/// A fresh folder under the system temp dir, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("lathe-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

inline void write_text(const std::filesystem::path& file, const std::string& text) {
  std::ofstream out(file, std::ios::binary);
  out << text;
}

inline std::string read_text(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// Runs `fn`, expects an exception of type E whose message contains every one of `parts`.
template <class E, class Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected an exception, none was thrown";
  } catch (const E& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos)
        << "message lacks '" << p << "': " << msg;
  }
}

/// Result of a shell command: exit status and everything it printed (stdout and stderr).
struct CommandResult {
  int status = -1;
  std::string output;
};

inline CommandResult run_command(const std::string& command) {
  CommandResult r;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buf{};
  size_t n = 0;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  const int raw = ::pclose(pipe);
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return r;
}

/// A path the build gives the tests (LATHE_SOURCE_DIR, LATHE_BINARY, LATHE_PYTHON): from the
/// environment when set, else from lathe_test_paths.txt in the working folder, which ctest sets
/// to build/<preset>/tests (tests/CMakeLists.txt writes the file).
inline std::string env_path(const char* name) {
  if (const char* v = std::getenv(name); v != nullptr && *v != '\0') return v;
  std::ifstream in("lathe_test_paths.txt");
  const std::string prefix = std::string(name) + "=";
  for (std::string line; std::getline(in, line);)
    if (line.rfind(prefix, 0) == 0) return line.substr(prefix.size());
  ADD_FAILURE() << name << " is unknown: run the tests through ctest, from build/<preset>/tests, "
                << "or export " << name;
  return {};
}
inline std::string source_dir() { return env_path("LATHE_SOURCE_DIR"); }
inline std::string lathe_binary() { return env_path("LATHE_BINARY"); }
inline std::string python() { return env_path("LATHE_PYTHON"); }

/// Runs the Python oracle tests/parity/<script> with `args` in the project venv; records a test
/// failure (with the script's output) when it fails, and returns what it printed.
inline std::string run_parity(const std::string& script, const std::string& args) {
  const auto r = run_command(python() + " " + source_dir() + "/tests/parity/" + script + " " + args);
  EXPECT_EQ(r.status, 0) << script << " " << args << " failed:\n" << r.output;
  return r.output;
}

/// Starts `command` through sh in the background with its output in `log`; returns its pid.
inline pid_t start_command(const std::string& command, const std::filesystem::path& log) {
  const std::string cmd = "exec " + command + " > " + log.string() + " 2>&1";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

/// Polls every 5 ms until `ready()` (true), or the child `pid` exits (false; *status holds its
/// status), or `seconds` pass (false).
inline bool wait_until(pid_t pid, const std::function<bool()>& ready, int* status,
                       int seconds = 120) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (ready()) return true;
    if (::waitpid(pid, status, WNOHANG) == pid) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

/// True once the run folder's metrics.jsonl holds a step row: the run is training.
inline bool training(const std::filesystem::path& run) {
  return read_text(run / "metrics.jsonl").find("\"kind\":\"step\"") != std::string::npos;
}

/// True once the run folder's metrics.jsonl holds a row of optimizer step `step` (with
/// trainer.log_every_n_steps=1 every step logs one): a moment that does not depend on load.
inline bool logged_step(const std::filesystem::path& run, int64_t step) {
  return read_text(run / "metrics.jsonl").find(",\"step\":" + std::to_string(step) + ",") !=
         std::string::npos;
}

/// Runs `command` (a `lathe train` of the run folder `run`) to its end with its output in `log`;
/// returns its exit status and how long it trained: seconds from its first step row to its end.
inline std::pair<int, double> run_timed(const std::string& command,
                                        const std::filesystem::path& run,
                                        const std::filesystem::path& log) {
  const pid_t pid = start_command(command, log);
  int status = 0;
  const bool started = wait_until(pid, [&] { return training(run); }, &status, 300);
  const auto t0 = std::chrono::steady_clock::now();
  if (started) ::waitpid(pid, &status, 0);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, started ? seconds : 0.0};
}

/// The command a stopped run printed after "to resume: " (lathe train ... --resume ...), with
/// its leading `lathe` made this build's binary; empty when the output has none.
inline std::string resume_command(const std::string& output) {
  const std::string tag = "to resume: lathe train ";
  const auto at = output.find(tag);
  if (at == std::string::npos) return {};
  const auto start = at + std::string("to resume: lathe").size();
  return lathe_binary() + output.substr(start, output.find('\n', start) - start);
}

/// Where Debian's dataset-fashion-mnist puts its IDX files (installed by scripts/bootstrap.sh).
inline const char* kFashionMnist = "/usr/share/datasets/fashion-mnist";

}  // namespace lathe::testing
