// launch_local: fork + exec of N ranks with torchrun's environment, waitpid, failure propagation.
#include "lathe/dist/launch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <utility>

#include "lathe/core/error.h"
#include "lathe/core/log.h"
#include "lathe/core/signals.h"

namespace lathe::dist {
namespace {

std::atomic<int> g_forward_signal{0};

void remember_signal(int sig) { g_forward_signal = sig; }

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return fmt::format("was killed by signal {} ({})", WTERMSIG(status),
                       ::strsignal(WTERMSIG(status)));
  return "stopped";
}

}  // namespace

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  LATHE_CHECK(fd >= 0, DistError, "cannot open a socket to find a free port: {}",
              std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);
  LATHE_CHECK(ok, DistError, "cannot find a free port on 127.0.0.1: {}", std::strerror(errno));
  return ntohs(addr.sin_port);
}

int launch_local(const std::vector<std::string>& args, const LaunchOptions& options) {
  LATHE_CHECK(options.processes >= 1 && !args.empty(), DistError,
              "launch: need at least one process and a command (got {} processes)",
              options.processes);
  const int n = options.processes;
  const int port = options.master_port > 0 ? options.master_port : free_port();
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  struct sigaction sa {};
  sa.sa_handler = remember_signal;
  struct sigaction old_int {
  }, old_term{};
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);

  std::vector<pid_t> pids(static_cast<size_t>(n), -1);
  for (int r = 0; r < n; ++r) {
    // The rank's environment is built before fork: between fork and exec a child of a
    // multi-threaded process may only make async-signal-safe calls (no setenv, no malloc).
    const std::vector<std::pair<std::string, std::string>> vars{
        {"RANK", std::to_string(r)},          {"LOCAL_RANK", std::to_string(r)},
        {"WORLD_SIZE", std::to_string(n)},    {"LOCAL_WORLD_SIZE", std::to_string(n)},
        {"MASTER_ADDR", options.master_addr}, {"MASTER_PORT", std::to_string(port)},
        {"LATHE_LOCAL_LAUNCHER", "1"}};  // the launcher speaks for the run (resume line)
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string entry = *e;
      const std::string key = entry.substr(0, entry.find('='));
      bool replaced = key == "TORCHELASTIC_USE_AGENT_STORE";  // our own store, not torchrun's
      for (const auto& [k, v] : vars) replaced = replaced || k == key;
      if (!replaced) env.push_back(entry);
    }
    for (const auto& [k, v] : vars) env.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    const std::string exec_failed =
        fmt::format("[lathe] error: rank {}: cannot run {}\n", r, options.program);

    const pid_t launcher = ::getpid();
    const pid_t pid = ::fork();
    LATHE_CHECK(pid >= 0, DistError, "launch: fork of rank {} failed: {}", r, std::strerror(errno));
    if (pid == 0) {  // the rank; it gets SIGTERM when the launcher dies (even by SIGKILL)
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != launcher) ::_exit(1);  // died before prctl took effect
      // A process group of its own: a terminal's Ctrl-C reaches the launcher only, which passes
      // it on once (a rank that got it twice would stop at once, without its checkpoint).
      ::setpgid(0, 0);
      ::sigaction(SIGINT, &old_int, nullptr);
      ::sigaction(SIGTERM, &old_term, nullptr);
      ::execve(options.program.c_str(), argv.data(), envp.data());
      [[maybe_unused]] const auto w = ::write(2, exec_failed.data(), exec_failed.size());
      ::_exit(127);
    }
    pids[static_cast<size_t>(r)] = pid;
  }
  log::info("launched {} processes on 127.0.0.1:{} (rank 0 is pid {})", n, port, pids[0]);

  using clock = std::chrono::steady_clock;
  int running = n, exit_code = 0, failed_rank = -1;
  clock::time_point failed_at{};
  int stage = 0;  // 0: all fine, 1: a rank failed, 2: SIGTERM sent, 3: SIGKILL sent
  int forwarded = 0;  // the last SIGINT / SIGTERM passed on to the ranks
  const auto signal_rest = [&](int sig) {
    for (const pid_t p : pids)
      if (p > 0) ::kill(p, sig);
  };
  while (running > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      int rank = -1;
      for (int r = 0; r < n; ++r)
        if (pids[static_cast<size_t>(r)] == pid) rank = r;
      if (rank < 0) continue;
      pids[static_cast<size_t>(rank)] = -1;
      --running;
      // After a SIGINT / SIGTERM passed on, a rank that stopped with 130 / 143 did as asked.
      const bool stopped = forwarded != 0 && WIFEXITED(status) &&
                           (WEXITSTATUS(status) == 128 + SIGINT ||
                            WEXITSTATUS(status) == 128 + SIGTERM);
      const bool ok = (WIFEXITED(status) && WEXITSTATUS(status) == 0) || stopped;
      if (ok) continue;
      // Every failure is named: the first one reaped is not always the cause (a rank killed by
      // a signal and a peer that noticed it may end within the same milliseconds).
      std::string line = fmt::format("rank {} (pid {}) {}", rank, pid, describe_status(status));
      if (failed_rank < 0) {
        failed_rank = rank;
        exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
        failed_at = clock::now();
        stage = 1;
        if (running > 0) line += fmt::format("; stopping the other {} rank(s)", running);
      }
      log::write(log::Level::error, line);
      continue;
    }
    if (const int sig = g_forward_signal.exchange(0); sig != 0) {
      signal_rest(sig);
      if (forwarded == 0) log::info("passed {} on to the ranks", signal_name(sig));
      forwarded = sig;
      if (exit_code == 0) exit_code = 128 + sig;
    }
    const double since = std::chrono::duration<double>(clock::now() - failed_at).count();
    if (stage == 1 && since > options.grace_s) {
      signal_rest(SIGTERM);
      stage = 2;
    } else if (stage == 2 && since > options.grace_s + 5.0) {
      signal_rest(SIGKILL);
      stage = 3;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  return exit_code;
}

}  // namespace lathe::dist
