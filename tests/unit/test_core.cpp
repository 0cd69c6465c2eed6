// core: the error family and LATHE_CHECK, atomic files, device selection, seeding, threads.
#include <sys/resource.h>

#include <csignal>

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include "lathe/core/error.h"
#include "lathe/core/fs.h"
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
