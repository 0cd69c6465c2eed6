// Which implementation runs a kernel of lathe's own that has an ATen twin: chosen by timing both
// on the machine it runs on, once per shape class, remembered for the process and in a file.
#pragma once

#include <c10/util/FunctionRef.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace lathe::kernels {

/// The two implementations of a kernel: lathe's own loops or ATen's.
enum class Side { lathe, aten };

/// LATHE_KERNELS: `automatic` ("auto", the default) measures, the others force a side everywhere.
enum class Mode { automatic, lathe, aten };

/// "lathe" or "aten".
std::string_view side_name(Side side);
/// "auto", "lathe" or "aten".
std::string_view mode_name(Mode mode);

/// Reads a LATHE_KERNELS value. Anything but "auto", "lathe" or "aten" is a ConfigError naming
/// the value and the accepted ones.
Mode parse_mode(std::string_view value);

/// The mode in effect: the environment's LATHE_KERNELS (read once; unset or empty means auto),
/// unless a ScopedMode overrides it. A value parse_mode rejects is a ConfigError.
Mode mode();

/// Forces a mode until it goes out of scope (tests run each side of a kernel this way).
///
///   { lathe::kernels::ScopedMode aten(lathe::kernels::Mode::aten); /* ATen's kernels only */ }
class ScopedMode {
 public:
  explicit ScopedMode(Mode mode);
  ~ScopedMode();
  ScopedMode(const ScopedMode&) = delete;
  ScopedMode& operator=(const ScopedMode&) = delete;

 private:
  int previous_;
};

/// Which side runs `kernel` for one call. A forced mode answers at once. Under auto, the first
/// call of a shape class (the kernel's own coarse description of the call: `shape_class`, plus
/// the thread count) on this machine times both: `trial(side)` runs that side once on the call's
/// arguments, with no effect but the time it takes (no state updated, no random draws), and it
/// is run twice untimed, then alternately up to five times a side within about half a second;
/// the faster minimum wins. The choice is kept for the process and written to the cache file
/// (cache_file()) under this machine's key, so later processes read it instead of measuring.
/// Logged at debug level when made or first read. Thread-safe.
///
///   const Side side = kernels::choose("gelu_tanh", fmt::format("n<=2^{} f+b", k),
///                                     [&](Side s) { s == Side::lathe ? ours(x) : theirs(x); });
Side choose(std::string_view kernel, std::string_view shape_class,
            c10::function_ref<void(Side)> trial);

/// This machine as the cache keys it: the CPU model and the instruction-set flags that matter to
/// the kernels (from /proc/cpuinfo; "unknown CPU" elsewhere), and the LibTorch version.
struct Machine {
  std::string cpu;    ///< "AMD EPYC 9454P 48-Core Processor"
  std::string flags;  ///< "avx avx2 fma avx512f avx512bw avx512vl avx512_bf16 avx512_vnni"
  std::string torch;  ///< "2.11.0"
  std::string key() const;
};
const Machine& machine();

/// The cache file: $XDG_CACHE_HOME/lathe/kernels.json, else ~/.cache/lathe/kernels.json; empty
/// when neither folder can be named (the choices then last for the process only).
std::filesystem::path cache_file();

/// One choice for this machine: the kernel, its shape class (with the thread count), the side
/// and the two minimum times it was made by, in milliseconds.
struct Choice {
  std::string kernel, shape_class;
  Side side = Side::lathe;
  double lathe_ms = 0, aten_ms = 0;
};

/// The choices known for this machine: those this process made or read, and those in the cache
/// file (what `lathe info` shows), sorted by kernel and shape class.
std::vector<Choice> known_choices();

/// The choices this process has used (made, or read from the cache file on first use), sorted;
/// empty under a forced mode (benchmarks print which side ran each case).
std::vector<Choice> process_choices();

namespace detail {
/// Forgets the process's choices and the parsed environment so that the next call reads
/// LATHE_KERNELS and the cache file again (tests).
void reset();
}  // namespace detail

}  // namespace lathe::kernels
