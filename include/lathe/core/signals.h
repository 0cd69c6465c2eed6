// Preemption-safe runs: SIGTERM / SIGINT ask the training loop to stop at its next step boundary
// (it writes a checkpoint and exits 143 / 130); a second SIGINT ends the process at once.
#pragma once

#include <string>

namespace lathe {

/// While one is alive, SIGINT and SIGTERM no longer kill the process: the first of them is
/// remembered (stop_signal() returns its number) and the Trainer, which polls it after every
/// optimizer step, stops there. A SIGINT after that ends the process at once with status 130,
/// writing nothing. The handler only stores into a lock-free atomic (and, for the second SIGINT,
/// calls write(2) and _exit(2)), so it is async-signal-safe. The previous handlers come back
/// when it ends.
///
///   lathe::StopSignals stop_signals;       // in main(), around the run
///   ... trainer.fit(...) ...               // ends early once stop_signal() != 0
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
};

/// The signal that asked this process to stop (SIGINT or SIGTERM), or 0.
int stop_signal();

/// "SIGINT", "SIGTERM", or "signal N".
std::string signal_name(int signal);

/// The exit status of a process that stopped because of `signal`: 128 + its number (130 for
/// SIGINT, 143 for SIGTERM), as shells report a process killed by it.
inline int stop_exit_status(int signal) { return 128 + signal; }

}  // namespace lathe
