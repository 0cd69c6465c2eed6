// launch_local: fork + exec of N ranks with torchrun's environment, waitpid, failure propagation.
#include "lathe/dist/launch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "lathe/core/error.h"
#include "lathe/core/log.h"

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

  struct sigaction sa{};
  sa.sa_handler = remember_signal;
  struct sigaction old_int{}, old_term{};
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);

  std::vector<pid_t> pids(static_cast<size_t>(n), -1);
  for (int r = 0; r < n; ++r) {
    const pid_t pid = ::fork();
    LATHE_CHECK(pid >= 0, DistError, "launch: fork of rank {} failed: {}", r, std::strerror(errno));
    if (pid == 0) {  // the rank: torchrun's variables, then the program
      ::sigaction(SIGINT, &old_int, nullptr);
      ::sigaction(SIGTERM, &old_term, nullptr);
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(n).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(n).c_str(), 1);
      ::setenv("MASTER_ADDR", options.master_addr.c_str(), 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      ::unsetenv("TORCHELASTIC_USE_AGENT_STORE");
      ::execv(options.program.c_str(), argv.data());
      std::fprintf(stderr, "[lathe] error: rank %d: cannot run %s: %s\n", r,
                   options.program.c_str(), std::strerror(errno));
      ::_exit(127);
    }
    pids[static_cast<size_t>(r)] = pid;
  }
  log::info("launched {} processes on 127.0.0.1:{} (rank 0 is pid {})", n, port, pids[0]);

  using clock = std::chrono::steady_clock;
  int running = n, exit_code = 0, failed_rank = -1;
  clock::time_point failed_at{};
  int stage = 0;  // 0: all fine, 1: a rank failed, 2: SIGTERM sent, 3: SIGKILL sent
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
      const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      if (!ok && failed_rank < 0) {
        failed_rank = rank;
        exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
        failed_at = clock::now();
        stage = 1;
        if (running > 0)
          log::write(log::Level::error,
                     fmt::format("rank {} (pid {}) {}; stopping the other {} rank(s)", rank, pid,
                                 describe_status(status), running));
        else
          log::write(log::Level::error,
                     fmt::format("rank {} (pid {}) {}", rank, pid, describe_status(status)));
      }
      continue;
    }
    if (const int sig = g_forward_signal.exchange(0); sig != 0) {
      signal_rest(sig);
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
