// lathe sweep: sweep files and their errors, seeded trials, ASHA against the full grid, and a
// sweep killed with SIGKILL and resumed.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

#include "lathe/config/config.h"
#include "lathe/core/error.h"
#include "lathe/run/sweep.h"
#include "tests/support.h"

using lathe::testing::expect_error;
using lathe::testing::TempDir;


namespace {

/// A sweep file over the demo config at a tiny size, written into `dir`.
std::filesystem::path write_sweep(const TempDir& dir, const std::string& body,
                                  const std::string& name = "s.yaml") {
  const std::string text =
      "base: " + lathe::testing::source_dir() + "/configs/fashion_cnn.yaml\n" +
      "overrides:\n  - data.limit_train=1000\n  - data.limit_test=100\n"
      "  - \"model.channels=[8]\"\n  - model.hidden=32\n  - trainer.progress=none\n"
      "  - trainer.tensorboard=false\n  - trainer.csv=false\n  - run.threads=2\n"
      "dir: " + dir.path().string() + "\n" + body;  // the body starts at line 12
  lathe::testing::write_text(dir / name, text);
  return dir / name;
}

}  // namespace

TEST(Sweep, SameSeedSameTrialsAndGrids) {
  TempDir dir;
  const auto file = write_sweep(dir, R"(search: random
trials: 6
seed: 11
space:
  optim.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-1}
  model.hidden: {type: choice, values: [16, 32]}
  data.batch_size: {type: int, low: 32, high: 128, step: 32}
)");
  const auto a = lathe::run::sample_trials(lathe::run::load_sweep(file));
  ASSERT_EQ(a.size(), 6u);
  EXPECT_EQ(a, lathe::run::sample_trials(lathe::run::load_sweep(file)));
  auto other = lathe::run::load_sweep(file);
  other.seed = 12;
  EXPECT_NE(a, lathe::run::sample_trials(other));
  for (const auto& t : a) {
    const double lr = std::stod(t[0].substr(t[0].find('=') + 1));
    EXPECT_TRUE(lr >= 1e-4 && lr <= 1e-1) << t[0];
    const int bs = std::stoi(t[2].substr(t[2].find('=') + 1));
    EXPECT_TRUE(bs == 32 || bs == 64 || bs == 96 || bs == 128) << t[2];
  }
  const auto grid = write_sweep(dir, R"(search: grid
space:
  optim.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2, grid_points: 3}
  model.hidden: {type: choice, values: [16, 32]}
)", "g.yaml");
  const auto g = lathe::run::sample_trials(lathe::run::load_sweep(grid));
  ASSERT_EQ(g.size(), 6u);
  EXPECT_EQ(g[0], (std::vector<std::string>{"optim.lr=0.0001", "model.hidden=16"}));
  EXPECT_EQ(g[3], (std::vector<std::string>{"optim.lr=0.001", "model.hidden=32"}));
  EXPECT_EQ(lathe::run::asha_rungs(1, 3, 10), (std::vector<int64_t>{1, 3, 9, 10}));
}

TEST(Sweep, FileErrorsNameTheLineAndKey) {
  TempDir dir;
  expect_error<lathe::ConfigError>(
      [&] { lathe::run::load_sweep(write_sweep(dir, "serach: grid\nspace: {optim.lr: {type: choice, values: [1]}}\n")); },
      {"s.yaml:12", "unknown key 'serach'", "did you mean 'search'"});
  expect_error<lathe::ConfigError>(
      [&] { lathe::run::load_sweep(write_sweep(dir, "space:\n  optim.lr: {type: loguniform, low: 0, high: 1}\n")); },
      {"s.yaml:13", "loguniform needs low > 0"});
  expect_error<lathe::ConfigError>(
      [&] { lathe::run::load_sweep(write_sweep(dir, "space:\n  optim.lrr: {type: choice, values: [0.1]}\n")); },
      {"unknown key 'optim.lrr'"});
  const auto f = write_sweep(dir, "search: grid\nspace:\n  optim.lr: {type: uniform, low: 0.1, high: 1}\n");
  expect_error<lathe::ConfigError>([&] { lathe::run::sample_trials(lathe::run::load_sweep(f)); },
                                   {"space.optim.lr is continuous", "grid_points"});
}

TEST(Sweep, AshaFindsTheKnownBestWithFewerEpochsThanTheGrid) {
  TempDir dir;
  // With a few hundred steps, the largest learning rate is clearly the best; the others barely
  // move. Full grid: 4 trials × 4 epochs = 16 epochs.
  const std::string space = R"(metric: val/accuracy
mode: max
search: grid
asha: {min_epochs: 1, reduction_factor: 2}
space:
  optim.lr: {type: choice, values: [0.00001, 0.00003, 0.0001, 0.003]}
)";
  const auto asha = write_sweep(dir, "name: asha\nscheduler: asha\n" + space, "a.yaml");
  const auto full = write_sweep(dir, "name: full\nscheduler: none\n" + space, "f.yaml");
  const auto overrides = std::vector<std::string>{"trainer.max_epochs=4"};
  const auto a = lathe::run::run_sweep(lathe::run::load_sweep(asha, overrides), false);
  const auto g = lathe::run::run_sweep(lathe::run::load_sweep(full, overrides), false);
  ASSERT_GE(a.best, 0);
  ASSERT_GE(g.best, 0);
  EXPECT_EQ(g.trials[static_cast<size_t>(g.best)].params,
            std::vector<std::string>{"optim.lr=0.003"});
  EXPECT_EQ(a.trials[static_cast<size_t>(a.best)].params,
            std::vector<std::string>{"optim.lr=0.003"});
  EXPECT_EQ(g.total_epochs, 16);
  EXPECT_LT(a.total_epochs, g.total_epochs);
  EXPECT_TRUE(std::filesystem::exists(a.folder / "summary.csv"));
  EXPECT_NE(lathe::testing::read_text(a.folder / "best_config.yaml").find("lr: 0.003"),
            std::string::npos);
  int stopped = 0;
  for (const auto& t : a.trials) stopped += t.status == "stopped";
  EXPECT_GE(stopped, 1);  // ASHA stopped at least one weak trial early
}

TEST(Sweep, KilledAndResumedLosesNoFinishedTrial) {
  TempDir dir;
  const auto file = write_sweep(dir, R"(name: k
metric: val/accuracy
mode: max
search: random
trials: 5
seed: 3
scheduler: none
space:
  optim.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
)");
  const std::string lathe = lathe::testing::lathe_binary();
  const std::string cmd = "exec " + lathe + " sweep " + file.string() +
                          " trainer.max_epochs=2 > " + (dir / "k.log").string() + " 2>&1";
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const auto state_file = dir / "k" / "sweep_state.json";
  const auto finished = [&] {
    std::vector<nlohmann::json> done;
    std::error_code ec;
    if (!std::filesystem::exists(state_file, ec)) return done;
    const auto j = nlohmann::json::parse(lathe::testing::read_text(state_file), nullptr, false);
    if (j.is_discarded()) return done;
    for (const auto& t : j["trials"])
      if (t["status"] == "completed") done.push_back(t);
    return done;
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(180);
  int status = 0;
  bool exited = false;
  while (finished().size() < 2 && std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!exited) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  const auto before = finished();
  ASSERT_GE(before.size(), 2u) << lathe::testing::read_text(dir / "k.log");
  ASSERT_LT(before.size(), 5u) << "the sweep ended before it was killed";

  const auto r = lathe::testing::run_command(lathe + " sweep " + file.string() +
                                             " trainer.max_epochs=2 --resume");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto state = nlohmann::json::parse(lathe::testing::read_text(state_file));
  int completed = 0;
  for (const auto& t : state["trials"]) completed += t["status"] == "completed";
  EXPECT_EQ(completed, 5);
  for (const auto& b : before) {  // finished trials kept their results: not rerun
    const auto& after = state["trials"][b["id"].get<size_t>()];
    EXPECT_EQ(after["rungs"], b["rungs"]) << b.dump();
  }
  // A rerun would reproduce the same seeded metrics, so count the executions instead: the
  // resumed sweep starts exactly the trials that had not finished, none of the finished ones.
  size_t executions = 0;
  for (auto at = r.output.find("sweep k: trial "); at != std::string::npos;
       at = r.output.find("sweep k: trial ", at + 1))
    ++executions;
  EXPECT_EQ(executions, 5 - before.size()) << r.output;
  for (const auto& b : before)
    EXPECT_EQ(r.output.find(fmt::format("sweep k: trial {} →", b["id"].get<int64_t>())),
              std::string::npos)
        << "finished trial " << b["id"] << " ran again:\n" << r.output;
}

TEST(Sweep, TrialsRunInParallelOnePerDevice) {
  // Two device slots (both the CPU here; cuda:0 and cuda:1 on a GPU machine): two trials train at
  // once, and every trial still finishes with its result recorded.
  TempDir dir;
  const auto file = write_sweep(dir, R"(name: p
metric: val/accuracy
mode: max
search: grid
scheduler: asha
asha: {min_epochs: 1, reduction_factor: 2}
devices: [cpu, cpu]
space:
  optim.lr: {type: choice, values: [0.0001, 0.001, 0.003, 0.01]}
)");
  const auto r = lathe::run::run_sweep(lathe::run::load_sweep(file, {"trainer.max_epochs=2"}), false);
  ASSERT_EQ(r.trials.size(), 4u);
  int completed = 0;
  for (const auto& t : r.trials) {
    EXPECT_TRUE(t.status == "completed" || t.status == "stopped") << t.status;
    EXPECT_TRUE(t.rungs.count(1)) << "trial " << t.id << " has no rung-1 result";
    completed += t.status == "completed";
  }
  EXPECT_GE(completed, 1);
  EXPECT_LT(r.total_epochs, 8);  // ASHA still stops some trials early
  ASSERT_GE(r.best, 0);
  // Parallel, not merely both finished: two trials' training segments overlap in time.
  bool overlapped = false;
  for (const auto& a : r.trials)
    for (const auto& b : r.trials)
      if (a.id < b.id)
        for (const auto& [a0, a1] : a.segments)
          for (const auto& [b0, b1] : b.segments) overlapped |= a0 < b1 && b0 < a1;
  EXPECT_TRUE(overlapped) << "no two trials trained at the same time";
}

TEST(Sweep, TheShippedFashionSweepLoadsAndEveryTrialIsAValidRun) {
  // configs/sweeps/fashion_lr.yaml as README describes it: 9 random trials, rungs 1/3/6 epochs,
  // and every trial's overrides on top of the base config make a config lathe accepts.
  const std::filesystem::path file =
      lathe::testing::source_dir() + "/configs/sweeps/fashion_lr.yaml";
  const auto sweep = lathe::run::load_sweep(file);
  EXPECT_EQ(sweep.metric, "val/accuracy");
  const auto trials = lathe::run::sample_trials(sweep);
  ASSERT_EQ(trials.size(), 9u);
  EXPECT_EQ(lathe::run::asha_rungs(sweep.min_epochs, sweep.reduction_factor, 6),
            (std::vector<int64_t>{1, 3, 6}));
  for (const auto& trial : trials) {
    std::vector<std::string> overrides = sweep.overrides;
    overrides.insert(overrides.end(), trial.begin(), trial.end());
    const auto cfg = lathe::config::load_config(sweep.base, overrides);
    EXPECT_EQ(cfg.trainer.max_epochs, 6);
    EXPECT_GE(cfg.optim.lr, 1e-4);
    EXPECT_LE(cfg.optim.lr, 1e-2);
  }
}
