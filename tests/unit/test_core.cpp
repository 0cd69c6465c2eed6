// core: the error family and LATHE_CHECK, atomic files, device selection, seeding, threads, the
// kernel chooser.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include "lathe/core/error.h"
#include "lathe/core/fs.h"
#include "lathe/core/kernel_choice.h"
#include "lathe/core/log.h"
#include "lathe/core/runtime.h"
#include "tests/support.h"

using lathe::testing::expect_error;
using lathe::testing::TempDir;

TEST(Error, CheckFormatsAndKeepsTheFamily) {
  expect_error<lathe::DataError>(
      [] { LATHE_CHECK(1 + 1 == 3, lathe::DataError, "{}: line {} is bad", "a.csv", 7); },
      {"a.csv: line 7 is bad"});
  try {
    LATHE_CHECK(false, lathe::ConfigError, "x");
  } catch (const lathe::Error& e) {  // caught through the base
    EXPECT_STREQ(e.kind(), "config error");
  }
  EXPECT_NO_THROW(LATHE_CHECK(true, lathe::DataError, "never"));
}

TEST(AtomicFile, CommitReplacesAbandonKeepsTheOld) {
  TempDir dir;
  const auto file = dir / "sub" / "f.txt";
  lathe::write_file_atomic(file, "one");
  EXPECT_EQ(lathe::testing::read_text(file), "one");
  {
    lathe::AtomicFile f(file);
    f.write("two, half written");
    // destroyed without commit: as if an error struck mid-write
  }
  EXPECT_EQ(lathe::testing::read_text(file), "one");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir / "sub"), {}), 1);  // no temp
  lathe::write_file_atomic(file, "three");
  EXPECT_EQ(lathe::testing::read_text(file), "three");
}

TEST(AtomicFile, UnwritableFolderIsAnIoError) {
  expect_error<lathe::IoError>([] { lathe::write_file_atomic("/proc/lathe-test/x", "x"); },
                               {"/proc/lathe-test"});
}

TEST(AtomicFile, FailedWriteIsAnIoErrorThatKeepsThePreviousFile) {
  // A file-size limit makes write(2) fail the way a full disk does (EFBIG instead of ENOSPC):
  // the same error path, without needing a full file system on the test machine.
  TempDir dir;
  const auto file = dir / "kept.txt";
  lathe::write_file_atomic(file, "previous");
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit small = old;
  small.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  const std::string big(1 << 20, 'x');
  expect_error<lathe::IoError>([&] { lathe::write_file_atomic(file, big); },
                               {"kept.txt", "write failed"});
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_EQ(lathe::testing::read_text(file), "previous");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);  // no temp
}

TEST(Runtime, DeviceSelection) {
  EXPECT_EQ(lathe::select_device("cpu"), c10::Device(c10::kCPU));
  if (torch::cuda::is_available()) {
    EXPECT_EQ(lathe::select_device("auto"), c10::Device(c10::kCUDA, 0));
    EXPECT_EQ(lathe::select_device("cuda:0"), c10::Device(c10::kCUDA, 0));
  } else {
    EXPECT_EQ(lathe::select_device("auto"), c10::Device(c10::kCPU));
    expect_error<lathe::ConfigError>([] { lathe::select_device("cuda"); },
                                     {"run.device", "CUDA is not available"});
  }
  expect_error<lathe::ConfigError>([] { lathe::select_device("tpu"); },
                                   {"'tpu' is not a device", "auto, cpu, cuda or cuda:N"});
}

TEST(Runtime, OneSeedReproducesDraws) {
  lathe::seed_everything(123);
  const at::Tensor a = at::randn({5});
  lathe::seed_everything(123);
  EXPECT_TRUE(at::randn({5}).equal(a));
  lathe::seed_everything(124);
  EXPECT_FALSE(at::randn({5}).equal(a));
}

TEST(Runtime, ThreadsAndInfo) {
  EXPECT_EQ(lathe::setup_threads(1), 1);
  EXPECT_GE(lathe::setup_threads(0), 1);
  expect_error<lathe::ConfigError>([] { lathe::setup_threads(-2); }, {"run.threads"});
  const auto info = lathe::runtime_info();
  EXPECT_EQ(info.torch_version.rfind("2.11", 0), 0u) << info.torch_version;
  EXPECT_EQ(info.cuda_available, torch::cuda::is_available());
  EXPECT_EQ(info.cuda_devices.size(), torch::cuda::is_available() ? torch::cuda::device_count() : 0u);
}

TEST(Log, ProgressBarIsSilentOffATerminal) {
  TempDir dir;
  std::FILE* f = std::fopen((dir / "out").c_str(), "w");
  {
    lathe::log::ProgressBar bar("epoch 1/1", 10, f);
    EXPECT_FALSE(bar.active());
    for (int i = 1; i <= 10; ++i) bar.update(i, "loss 1.0");
  }
  std::fclose(f);
  EXPECT_EQ(lathe::testing::read_text(dir / "out"), "");
}

// The kernel chooser (lathe/core/kernel_choice.h): LATHE_KERNELS, timing both sides once per
// shape class, the process's memory and the cache file (written, read back, a corrupt one ignored
// with a warning).
TEST(KernelChoice, ModesTimingAndTheCacheFile) {
  namespace k = lathe::kernels;
  TempDir dir;
  const char* old_xdg = std::getenv("XDG_CACHE_HOME");
  const std::string saved_xdg = old_xdg ? old_xdg : "";
  ::setenv("XDG_CACHE_HOME", dir.path().c_str(), 1);
  ::unsetenv("LATHE_KERNELS");
  k::detail::reset();
  EXPECT_EQ(k::cache_file(), dir / "lathe" / "kernels.json");

  // The modes by name; anything else is a ConfigError naming the accepted ones.
  EXPECT_EQ(k::parse_mode("auto"), k::Mode::automatic);
  EXPECT_EQ(k::parse_mode("lathe"), k::Mode::lathe);
  EXPECT_EQ(k::parse_mode("aten"), k::Mode::aten);
  expect_error<lathe::ConfigError>([] { k::parse_mode("fast"); },
                                   {"LATHE_KERNELS=fast", "auto", "lathe", "aten"});
  ::setenv("LATHE_KERNELS", "ATen", 1);
  k::detail::reset();
  expect_error<lathe::ConfigError>([] { k::mode(); }, {"LATHE_KERNELS=ATen", "accepted"});
  ::setenv("LATHE_KERNELS", "aten", 1);
  k::detail::reset();
  int calls = 0;
  const auto count = [&](k::Side) { ++calls; };
  EXPECT_EQ(k::choose("test_kernel", "forced", count), k::Side::aten);
  {
    const k::ScopedMode lathe(k::Mode::lathe);  // overrides the environment
    EXPECT_EQ(k::choose("test_kernel", "forced", count), k::Side::lathe);
  }
  EXPECT_EQ(calls, 0);  // a forced side times nothing
  ::unsetenv("LATHE_KERNELS");
  k::detail::reset();
  EXPECT_EQ(k::mode(), k::Mode::automatic);

  // Auto: the slower side (lathe's sleeps 3 ms a call) loses; timed once, then remembered.
  std::vector<k::Side> seen;
  const auto trial = [&](k::Side s) {
    seen.push_back(s);
    if (s == k::Side::lathe) std::this_thread::sleep_for(std::chrono::milliseconds(3));
  };
  const lathe::log::Level level = lathe::log::level();
  lathe::log::set_level(lathe::log::Level::debug);
  testing::internal::CaptureStderr();
  EXPECT_EQ(k::choose("test_kernel", "n=8", trial), k::Side::aten);
  const std::string logged = testing::internal::GetCapturedStderr();
  EXPECT_NE(logged.find("kernel test_kernel (n=8, "), std::string::npos) << logged;
  EXPECT_NE(logged.find("aten runs (timed on this machine: lathe "), std::string::npos) << logged;
  const size_t timed = seen.size();
  EXPECT_GE(timed, 4u);  // an untimed call a side, then at least one timed round
  EXPECT_EQ(std::count(seen.begin(), seen.end(), k::Side::lathe),
            std::count(seen.begin(), seen.end(), k::Side::aten));
  testing::internal::CaptureStderr();
  EXPECT_EQ(k::choose("test_kernel", "n=8", trial), k::Side::aten);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");  // logged once
  lathe::log::set_level(level);
  EXPECT_EQ(seen.size(), timed);
  // Another shape class is timed on its own: here ATen's is the slow one.
  const auto slow_aten = [](k::Side s) {
    if (s == k::Side::aten) std::this_thread::sleep_for(std::chrono::milliseconds(3));
  };
  EXPECT_EQ(k::choose("test_kernel", "n=16", slow_aten), k::Side::lathe);

  // The file holds both under this machine's key; a new process (reset) reads them, times nothing.
  const auto file = lathe::testing::read_text(k::cache_file());
  EXPECT_NE(file.find(k::machine().cpu), std::string::npos) << file;
  EXPECT_NE(file.find("test_kernel | n=8"), std::string::npos) << file;
  k::detail::reset();
  const auto choices = k::known_choices();
  ASSERT_EQ(choices.size(), 2u);
  EXPECT_EQ(choices[0].side, k::Side::lathe);  // "n=16, ..." sorts before "n=8, ..."
  EXPECT_EQ(choices[1].side, k::Side::aten);
  EXPECT_GT(choices[1].lathe_ms, choices[1].aten_ms);
  EXPECT_EQ(k::choose("test_kernel", "n=8", count), k::Side::aten);
  EXPECT_EQ(calls, 0);

  // A corrupt file: a warning, the kernels timed again, the file rewritten whole.
  lathe::write_file_atomic(k::cache_file(), "{\"format\": 1, \"machines\": [tru");
  k::detail::reset();
  testing::internal::CaptureStderr();
  EXPECT_EQ(k::choose("test_kernel", "n=8", trial), k::Side::aten);
  const std::string warned = testing::internal::GetCapturedStderr();
  EXPECT_NE(warned.find("not a kernel-choice file lathe can read"), std::string::npos) << warned;
  EXPECT_GT(seen.size(), timed);
  k::detail::reset();
  EXPECT_EQ(k::known_choices().size(), 1u);

  if (saved_xdg.empty())
    ::unsetenv("XDG_CACHE_HOME");
  else
    ::setenv("XDG_CACHE_HOME", saved_xdg.c_str(), 1);
  k::detail::reset();
}
