// StopSignals: SIGINT / SIGTERM handlers that only set an atomic flag (the second SIGINT exits).
#include "lathe/core/signals.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>

namespace lathe {
namespace {

std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler needs a lock-free flag");

struct sigaction g_old_int {}, g_old_term{};

void on_stop_signal(int sig) {
  int none = 0;
  if (g_stop_signal.compare_exchange_strong(none, sig)) return;  // the first: stop after the step
  if (sig != SIGINT) return;  // a repeated SIGTERM changes nothing
  static const char kMessage[] = "[lathe] second SIGINT: stopping now, without a checkpoint\n";
  [[maybe_unused]] const auto w = ::write(2, kMessage, sizeof(kMessage) - 1);
  ::_exit(stop_exit_status(SIGINT));
}

}  // namespace

StopSignals::StopSignals() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  ::sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // reads and writes in progress continue
  ::sigaction(SIGINT, &sa, &g_old_int);
  ::sigaction(SIGTERM, &sa, &g_old_term);
}

StopSignals::~StopSignals() {
  ::sigaction(SIGINT, &g_old_int, nullptr);
  ::sigaction(SIGTERM, &g_old_term, nullptr);
}

int stop_signal() { return g_stop_signal.load(); }

std::string signal_name(int signal) {
  if (signal == SIGINT) return "SIGINT";
  if (signal == SIGTERM) return "SIGTERM";
  return "signal " + std::to_string(signal);
}

}  // namespace lathe
