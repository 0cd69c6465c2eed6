// dist: the distributed sampler's shards, c10d collectives and the bucketed gradient all-reduce
// between real processes on loopback (Gloo), and the CLI end to end — 2 processes train the
// weights 1 process does, a dead rank stops the others with a clear error, checkpoints resume
// at another world size.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <thread>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>
#include <nlohmann/json.hpp>

#include "lathe/ckpt/safetensors.h"
#include "lathe/core/error.h"
#include "lathe/core/runtime.h"
#include "lathe/data/shard.h"
#include "lathe/data/tensor_data.h"
#include "lathe/dist/grad_sync.h"
#include "lathe/dist/launch.h"
#include "lathe/dist/process_group.h"
#include "lathe/optim/fused_adamw.h"
#include "lathe/train/metrics.h"
#include "tests/support.h"
#include <gtest/gtest-spi.h>

using lathe::testing::TempDir;
namespace dist = lathe::dist;
namespace data = lathe::data;

namespace {

std::vector<int64_t> as_vector(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

/// True inside a rank started by Dist.* below. The ranks run only their DistWorker.* case
/// (--gtest_filter), and ctest does not register DistWorker.* (tests/CMakeLists.txt), so a
/// DistWorker case skips only when someone runs this binary by hand without a filter.
bool in_worker() { return std::getenv("LATHE_DIST_TEST_WORKER") != nullptr; }

/// In a rank: after its tests, writes how many ran to $LATHE_DIST_TEST_RAN/rank-<RANK>, so the
/// parent can tell a passing rank from one whose filter matched nothing (GoogleTest exits 0
/// then, and runs no environment: no file at all).
class RanMarker : public ::testing::Environment {
 public:
  void TearDown() override {
    const char* dir = std::getenv("LATHE_DIST_TEST_RAN");
    const char* rank = std::getenv("RANK");
    if (dir == nullptr || rank == nullptr) return;
    lathe::testing::write_text(std::filesystem::path(dir) / (std::string("rank-") + rank),
                               std::to_string(::testing::UnitTest::GetInstance()->test_to_run_count()));
  }
};
[[maybe_unused]] auto* const ran_marker = ::testing::AddGlobalTestEnvironment(new RanMarker);

/// Runs this test binary's DistWorker.<name> case as `ranks` processes; each rank's gtest result
/// is its exit status. A rank that ran no test (a renamed case) fails it too.
int run_workers(const std::string& name, int ranks) {
  TempDir ran;
  ::setenv("LATHE_DIST_TEST_WORKER", "1", 1);
  ::setenv("LATHE_DIST_TEST_RAN", ran.path().c_str(), 1);
  int rc = dist::launch_local({"test_dist", "--gtest_filter=DistWorker." + name},
                              {.processes = ranks, .grace_s = 1.0});
  ::unsetenv("LATHE_DIST_TEST_WORKER");
  ::unsetenv("LATHE_DIST_TEST_RAN");
  for (int r = 0; r < ranks; ++r) {
    const auto file = ran / ("rank-" + std::to_string(r));
    const std::string count = std::filesystem::exists(file) ? lathe::testing::read_text(file) : "";
    if (count != "1") {
      ADD_FAILURE() << "rank " << r << " of DistWorker." << name << " ran "
                    << (count.empty() ? "no" : count) << " test(s), expected 1";
      rc = rc == 0 ? 1 : rc;
    }
  }
  return rc;
}

std::shared_ptr<dist::ProcessGroup> worker_group() {
  return dist::ProcessGroup::from_env(c10::kCPU, std::chrono::seconds(20));
}

}  // namespace

// ---- the distributed sampler (no processes) -----------------------------------------------------

TEST(Shard, DisjointCoveringPaddedShards) {
  const int64_t n = 10, world = 3;
  const at::Tensor order = at::randperm(n, at::TensorOptions().dtype(at::kLong));
  std::multiset<int64_t> seen;
  for (int64_t r = 0; r < world; ++r) {
    const auto part = as_vector(data::shard_order(order, {r, world}));
    EXPECT_EQ(static_cast<int64_t>(part.size()), 4);  // ceil(10 / 3): every rank the same count
    EXPECT_EQ(data::shard_size(n, {r, world}), 4);
    seen.insert(part.begin(), part.end());
  }
  for (int64_t i = 0; i < n; ++i) EXPECT_GE(seen.count(i), 1u) << "record " << i << " missing";
  EXPECT_EQ(seen.size(), 12u);  // two records padded: the order's first two, read twice
  EXPECT_EQ(seen.count(order[0].item<int64_t>()), 2u);
  EXPECT_EQ(seen.count(order[1].item<int64_t>()), 2u);

  std::set<int64_t> exact;  // evaluation: no padding, each record exactly once
  size_t total = 0;
  for (int64_t r = 0; r < world; ++r) {
    const auto part = as_vector(data::shard_order(order, {r, world, /*pad=*/false}));
    EXPECT_EQ(static_cast<int64_t>(part.size()), data::shard_size(n, {r, world, false}));
    total += part.size();
    exact.insert(part.begin(), part.end());
  }
  EXPECT_EQ(total, 10u);
  EXPECT_EQ(exact.size(), 10u);
  EXPECT_THROW(data::shard_order(order, {3, 3}), lathe::DataError);
}

TEST(Shard, LoadersReshuffleEachEpochAlikeOnEveryRank) {
  const int64_t n = 64, world = 2;
  data::TensorDataset d{at::arange(n, at::kLong).unsqueeze(1), at::arange(n, at::kLong)};
  const auto epoch_records = [&](int64_t rank, int64_t epoch) {
    data::TensorLoader loader(d, 8, /*shuffle=*/true, /*seed=*/7);
    loader.set_shard({rank, world});
    loader.set_epoch(epoch);
    std::vector<int64_t> out;
    for (int64_t i = 0; i < loader.num_batches(); ++i) {
      const auto b = as_vector(loader.batch(i).targets);
      out.insert(out.end(), b.begin(), b.end());
    }
    return out;
  };
  const auto r0e0 = epoch_records(0, 0), r1e0 = epoch_records(1, 0);
  EXPECT_EQ(r0e0, epoch_records(0, 0));  // a pure function of (seed, epoch, rank)
  EXPECT_EQ(r0e0.size(), 32u);
  std::set<int64_t> all(r0e0.begin(), r0e0.end());
  all.insert(r1e0.begin(), r1e0.end());
  EXPECT_EQ(all.size(), 64u);            // disjoint and covering
  EXPECT_NE(r0e0, epoch_records(0, 1));  // reshuffled in the next epoch
  // Every rank draws the same full order: batch k of all ranks = batch k of one process with
  // the global batch, which is what makes 2 processes train like 1.
  data::TensorLoader single(d, 16, true, 7);
  single.set_epoch(0);
  for (int64_t k = 0; k < 4; ++k) {
    auto global = as_vector(single.batch(k).targets);
    std::vector<int64_t> both(r0e0.begin() + 8 * k, r0e0.begin() + 8 * (k + 1));
    both.insert(both.end(), r1e0.begin() + 8 * k, r1e0.begin() + 8 * (k + 1));
    std::sort(global.begin(), global.end());
    std::sort(both.begin(), both.end());
    EXPECT_EQ(global, both) << "batch " << k;
  }
}

// ---- collectives and gradient sync between real processes ---------------------------------------

TEST(DistWorker, Collectives) {
  if (!in_worker()) GTEST_SKIP() << "runs as a rank of Dist.CollectivesAndGradientSync";
  auto group = worker_group();
  const int rank = group->rank();
  ASSERT_EQ(group->size(), 2);
  at::Tensor t = at::full({3}, rank + 1.0);
  group->all_reduce(t);
  EXPECT_TRUE(t.equal(at::full({3}, 3.0)));
  at::Tensor b = at::full({2, 2}, static_cast<double>(rank));
  group->broadcast(b, 1);
  EXPECT_TRUE(b.equal(at::ones({2, 2}, at::kDouble)));
  // Ranks with different row counts, one with none: (Σ rows, row size) in rank order.
  const at::Tensor mine = rank == 0 ? at::arange(6, at::kFloat).view({3, 2}) : at::empty({0, 2});
  const at::Tensor all = group->all_gather_cat(mine);
  EXPECT_TRUE(all.equal(at::arange(6, at::kFloat).view({3, 2})));
  // The stop flag's agreement (the Trainer's, after every step): the largest value of any rank.
  EXPECT_EQ(group->max_over_ranks(rank == 1 ? 15 : 0), 15);
  EXPECT_EQ(group->max_over_ranks(0), 0);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 500; ++i) group->max_over_ranks(0);
  const double us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
      500;
  if (rank == 0)
    std::printf("[ metric   ] stop-flag all-reduce (MAX, gloo, 2 ranks on loopback): %.0f us\n", us);

  // A detailed classification meter over both ranks' records equals one meter over all of them.
  lathe::seed_everything(5);
  const at::Tensor logits = at::randn({20, 3}), labels = at::randint(3, {20}, at::kLong);
  lathe::train::ClassificationMeter whole(true, 2), part(true, 2);
  whole.update(logits, labels, at::scalar_tensor(0.5));
  const int64_t lo = rank == 0 ? 0 : 12, len = rank == 0 ? 12 : 8;
  part.update(logits.narrow(0, lo, len), labels.narrow(0, lo, len), at::scalar_tensor(0.5));
  part.reduce({[&](at::Tensor& x) { group->all_reduce(x); },
               [&](const at::Tensor& x) { return group->all_gather_cat(x); }});
  const auto want = whole.compute(), got = part.compute();
  for (const auto& [k, v] : want) EXPECT_NEAR(got.at(k), v, 1e-9) << k;
  EXPECT_EQ(part.count(), 20);
}

TEST(DistWorker, GradientSync) {
  if (!in_worker()) GTEST_SKIP() << "runs as a rank of Dist.CollectivesAndGradientSync";
  auto group = worker_group();
  const int rank = group->rank();
  lathe::seed_everything(11);
  const at::Tensor x = at::randn({8, 5}), y = at::randn({8, 2});  // the same on both ranks
  torch::nn::Sequential net(torch::nn::Linear(5, 16), torch::nn::Tanh(), torch::nn::Linear(16, 2));
  if (rank == 1) {  // different weights: broadcast_module must make them rank 0's
    torch::NoGradGuard no_grad;
    for (auto& p : net->parameters()) p.add_(1.0);
  }
  dist::broadcast_module(*group, *net);
  // Reference: the gradient of the whole batch, in this process alone.
  net->zero_grad();
  (net->forward(x) - y).square().mean().backward();
  std::vector<at::Tensor> want;
  for (auto& p : net->parameters()) want.push_back(p.grad().clone());
  net->zero_grad(/*set_to_none=*/true);

  // Tiny buckets (one per tensor), so most start during backward; two micro-batches of 2 rows
  // per rank, the first accumulated locally, the second synced.
  dist::GradientSync sync(group, *net, /*bucket_mb=*/1e-6);
  EXPECT_EQ(sync.num_buckets(), 4u);
  for (int micro = 0; micro < 2; ++micro) {
    const at::Tensor xs = x.narrow(0, rank * 4 + micro * 2, 2),
                     ys = y.narrow(0, rank * 4 + micro * 2, 2);
    sync.before_backward(/*sync=*/micro == 1);
    ((net->forward(xs) - ys).square().mean() / 2.0).backward();
  }
  sync.before_step();
  EXPECT_GE(sync.overlapped_buckets(), 3);  // started from the hooks, before backward returned
  const auto params = net->parameters();
  for (size_t i = 0; i < params.size(); ++i)
    EXPECT_TRUE(at::allclose(params[i].grad(), want[i], 1e-5, 1e-6)) << "parameter " << i;
}

TEST(DistWorker, ChannelsLastFusedAdamW) {
  if (!in_worker()) GTEST_SKIP() << "runs as a rank of Dist.CollectivesAndGradientSync";
  auto group = worker_group();
  const int rank = group->rank();
  lathe::seed_everything(13);
  torch::nn::Sequential net(torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 4, 3)),
                            torch::nn::Flatten(), torch::nn::Linear(4 * 4 * 4, 2));
  {
    torch::NoGradGuard no_grad;  // channels-last weights, as trainer.channels_last sets them
    for (auto& p : net->parameters())
      if (p.dim() == 4) p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
  }
  dist::broadcast_module(*group, *net);
  lathe::optim::FusedAdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
  dist::GradientSync sync(group, *net, /*bucket_mb=*/1e-6);
  const at::Tensor x = at::randn({4, 3, 6, 6}).contiguous(at::MemoryFormat::ChannelsLast);
  for (int step = 0; step < 2; ++step) {
    opt.zero_grad(/*set_to_none=*/true);  // the averaged gradient is a new tensor each step
    sync.before_backward(/*sync=*/true);
    net->forward(x.narrow(0, rank * 2, 2)).square().mean().backward();
    sync.before_step();
    const at::Tensor w = net->parameters().front();
    EXPECT_EQ(w.grad().strides(), w.strides()) << "step " << step;
    opt.step();  // the fused kernel gets parameter, gradient and state laid out alike
  }
  // Both ranks hold the same weights.
  for (auto& p : net->parameters()) {
    at::Tensor mine = p.detach().clone(), sum = p.detach().clone();
    group->all_reduce(sum);
    EXPECT_TRUE(at::allclose(sum, mine * 2, 1e-6, 1e-7));
  }
}

TEST(Dist, AWorkerFilterThatMatchesNothingFails) {
  int rc = 0;
  EXPECT_NONFATAL_FAILURE(rc = run_workers("NoSuchCase", 1),
                          "rank 0 of DistWorker.NoSuchCase ran no test(s), expected 1");
  EXPECT_NE(rc, 0);
}

TEST(Dist, CollectivesAndGradientSync) {
  EXPECT_EQ(run_workers("Collectives", 2), 0);
  EXPECT_EQ(run_workers("GradientSync", 2), 0);
  EXPECT_EQ(run_workers("ChannelsLastFusedAdamW", 2), 0);
}

TEST(Dist, EnvironmentErrors) {
  ::setenv("WORLD_SIZE", "2", 1);
  ::setenv("RANK", "2", 1);
  lathe::testing::expect_error<lathe::DistError>([] { dist::world_from_env(); },
                                                 {"RANK=2 and WORLD_SIZE=2 do not fit"});
  ::setenv("RANK", "x", 1);
  lathe::testing::expect_error<lathe::DistError>([] { dist::world_from_env(); },
                                                 {"RANK='x' is not an integer"});
  ::unsetenv("WORLD_SIZE");
  ::unsetenv("RANK");
  EXPECT_FALSE(dist::world_from_env().active());
}

// ---- the CLI: --devices, parity with one process, a dead rank, resume at another world size ----

namespace {

/// A regression CSV (320 rows: 256 train, 32 val, 32 test) and a config training an MLP on it
/// with plain SGD, no dropout, a global batch of 32, deterministic.
struct CsvRun {
  TempDir dir;
  std::string config;
  CsvRun() {
    lathe::seed_everything(3);
    const at::Tensor x = at::randn({320, 4}, at::kDouble);
    const at::Tensor y = x.matmul(at::tensor({1.0, -2.0, 0.5, 3.0}, at::kDouble)) + 0.1;
    std::string csv = "a,b,c,d,target\n";
    for (int64_t i = 0; i < 320; ++i)
      csv += fmt::format("{:.6f},{:.6f},{:.6f},{:.6f},{:.6f}\n", x[i][0].item<double>(),
                         x[i][1].item<double>(), x[i][2].item<double>(), x[i][3].item<double>(),
                         y[i].item<double>());
    lathe::testing::write_text(dir / "data.csv", csv);
    config = (dir / "run.yaml").string();
    lathe::testing::write_text(
        config, fmt::format(R"(run: {{dir: {}, seed: 1, deterministic: true, threads: 1}}
data: {{source: csv, path: {}, target: target, task: regression, val_fraction: 0.1,
       test_fraction: 0.1, batch_size: 32, eval_batch_size: 16, num_workers: 0}}
model: {{name: mlp, in_features: 4, hidden: [16], out_features: 1}}
task: {{kind: regression}}
optim: {{name: sgd, lr: 0.05, momentum: 0.9}}
trainer: {{max_epochs: 3, progress: none, tensorboard: false}}
dist: {{timeout_s: 20}}
)",
                            (dir / "runs").string(), (dir / "data.csv").string()));
  }
  std::filesystem::path run(const std::string& name) const { return dir / "runs" / name; }
  lathe::testing::CommandResult train(const std::string& args) const {
    return lathe::testing::run_command(lathe::testing::lathe_binary() + " train " + config + " " +
                                       args);
  }
  /// The checkpoint written at the end of epoch 2 of 3 (8 steps per epoch: 256 records / 32).
  std::filesystem::path epoch2_checkpoint(const std::string& name) const {
    return run(name) / "checkpoints" / "step-00000016";
  }
};

/// The largest absolute difference between two weight files' tensors of the same name.
double max_weight_diff(const std::filesystem::path& a, const std::filesystem::path& b) {
  const auto fa = lathe::ckpt::load_safetensors(a), fb = lathe::ckpt::load_safetensors(b);
  EXPECT_EQ(fa.tensors.size(), fb.tensors.size());
  double worst = 0;
  for (size_t i = 0; i < fa.tensors.size() && i < fb.tensors.size(); ++i) {
    EXPECT_EQ(fa.tensors[i].first, fb.tensors[i].first);
    worst =
        std::max(worst, (fa.tensors[i].second - fb.tensors[i].second).abs().max().item<double>());
  }
  return worst;
}

}  // namespace

TEST(DistCli, TorchrunStartsTheRanksThroughItsAgentStore) {
  // PyTorch's own launcher (torch.distributed.run, --no-python: our binary is the worker): its
  // agent hosts the TCPStore (TORCHELASTIC_USE_AGENT_STORE), the ranks join it as clients.
  CsvRun r;
  const auto one = r.train("--devices 1 run.name=one");
  ASSERT_EQ(one.status, 0) << one.output;
  const auto tr = lathe::testing::run_command(
      lathe::testing::python() + " -m torch.distributed.run --standalone --nproc-per-node 2 " +
      "--no-python " + lathe::testing::lathe_binary() + " train " + r.config + " run.name=tr");
  ASSERT_EQ(tr.status, 0) << tr.output;
  EXPECT_NE(tr.output.find("data parallel: 2 processes (gloo backend)"), std::string::npos)
      << tr.output;
  const double diff =
      max_weight_diff(r.run("one") / "model.safetensors", r.run("tr") / "model.safetensors");
  EXPECT_LT(diff, 1e-5) << "weights of torchrun's 2 ranks and 1 process differ by " << diff;
}

TEST(DistCli, TwoProcessesTrainLikeOneAndResumeAtAnyWorldSize) {
  CsvRun r;
  const auto one = r.train("--devices 1 run.name=one");
  ASSERT_EQ(one.status, 0) << one.output;
  const auto two = r.train("--devices 2 run.name=two");
  ASSERT_EQ(two.status, 0) << two.output;
  EXPECT_NE(two.output.find("data parallel: 2 processes (gloo backend)"), std::string::npos)
      << two.output;
  // 3 epochs of 8 steps with the same global batch: the same weights up to float summation order.
  const double diff =
      max_weight_diff(r.run("one") / "model.safetensors", r.run("two") / "model.safetensors");
  EXPECT_LT(diff, 1e-5) << "weights of 1 and 2 processes differ by " << diff;
  std::printf("[ metric   ] max |w(2 processes) - w(1 process)| = %.3g\n", diff);
  // Only rank 0 wrote files: one metrics log with one row per step and epoch, not two.
  const std::string log2 = lathe::testing::read_text(r.run("two") / "metrics.jsonl");
  const std::string log1 = lathe::testing::read_text(r.run("one") / "metrics.jsonl");
  EXPECT_EQ(std::count(log2.begin(), log2.end(), '\n'), std::count(log1.begin(), log1.end(), '\n'));

  // The test metrics of 2 ranks (each its shard, meters reduced) are those 1 process finds for
  // the saved weights over the whole test split.
  const auto eval = lathe::testing::run_command(lathe::testing::lathe_binary() + " eval " +
                                                r.run("two").string());
  ASSERT_EQ(eval.status, 0) << eval.output;
  const auto reduced =
      nlohmann::json::parse(lathe::testing::read_text(r.run("two") / "test_metrics.json"));
  for (const char* k : {"loss", "mae", "rmse", "r2"}) {
    const auto at = eval.output.find(fmt::format("test {} ", k));
    ASSERT_NE(at, std::string::npos) << k << " missing:\n" << eval.output;
    const double single = std::stod(eval.output.substr(at + 6 + std::strlen(k)));
    EXPECT_NEAR(reduced.at(k).get<double>(), single, 1e-4) << k;  // eval prints 4 decimals
  }

  // A 2-process checkpoint (epoch 2) continued by 1 process, and a 1-process one by 2.
  const auto ckpt2 = r.epoch2_checkpoint("two"), ckpt1 = r.epoch2_checkpoint("one");
  ASSERT_TRUE(std::filesystem::exists(ckpt2 / "state.json")) << ckpt2;
  ASSERT_TRUE(std::filesystem::exists(ckpt1 / "state.json")) << ckpt1;
  const auto to_one = r.train("--resume " + ckpt2.string() + " run.name=two_to_one");
  ASSERT_EQ(to_one.status, 0) << to_one.output;
  const auto to_two = r.train("--devices 2 --resume " + ckpt1.string() + " run.name=one_to_two");
  ASSERT_EQ(to_two.status, 0) << to_two.output;
  const double d21 = max_weight_diff(r.run("one") / "model.safetensors",
                                     r.run("two_to_one") / "model.safetensors");
  const double d12 = max_weight_diff(r.run("one") / "model.safetensors",
                                     r.run("one_to_two") / "model.safetensors");
  EXPECT_LT(d21, 1e-5);
  EXPECT_LT(d12, 1e-5);
  std::printf("[ metric   ] resumed 2->1: %.3g, 1->2: %.3g\n", d21, d12);
}

namespace {

/// Starts ranks 0 and 1 of a long run by hand, sends rank 1 `signal` 4 s in (mid-training), and
/// returns rank 0's result and how long it ran. A guard ends rank 1 and, after 60 s, rank 0.
std::pair<lathe::testing::CommandResult, double> stop_rank_one(const CsvRun& r,
                                                               const std::string& signal,
                                                               int timeout_s) {
  const std::string env =
      fmt::format("WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT={} ", dist::free_port());
  const std::string cmd = lathe::testing::lathe_binary() + " train " + r.config +
                          " trainer.max_epochs=100000 checkpoint.every_n_epochs=0 run.name=stop " +
                          fmt::format("dist.timeout_s={}", timeout_s);
  const auto t0 = std::chrono::steady_clock::now();
  auto res = lathe::testing::run_command(
      "{ " + env + "RANK=1 " + cmd + " >/dev/null 2>&1 & P=$!; (sleep 4; kill -" + signal +
      " $P) & " + env + "RANK=0 timeout 60 " + cmd + "; echo rank 0 exit $?; kill -KILL $P; }");
  return {res, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
}

}  // namespace

TEST(DistCli, DeadRankStopsTheOthersWithAClearError) {
  CsvRun r;
  // Rank 1 is killed mid-training (the run would take hours): rank 0 must stop by itself with
  // a DistError (exit 1) at once — its peer's connection is gone — not hang.
  const auto [res, seconds] = stop_rank_one(r, "KILL", 20);
  EXPECT_NE(res.output.find("rank 0 exit 1"), std::string::npos) << res.output;
  for (const char* part : {"distributed error: rank 0 of 2: ", " failed: ", "Another rank stopped",
                           "dist.timeout_s = 20 s"})
    EXPECT_NE(res.output.find(part), std::string::npos) << "lacks '" << part << "':\n"
                                                        << res.output;
  EXPECT_LT(seconds, 4 + 10);
  std::printf("[ metric   ] rank 0 stopped %.1f s after start (rank 1 killed at 4 s)\n", seconds);
}

TEST(DistCli, StalledRankTimesOut) {
  CsvRun r;
  // Rank 1 freezes (SIGSTOP) with its connections open: rank 0 gives up after dist.timeout_s.
  const auto [res, seconds] = stop_rank_one(r, "STOP", 3);
  EXPECT_NE(res.output.find("rank 0 exit 1"), std::string::npos) << res.output;
  EXPECT_NE(res.output.find("dist.timeout_s = 3 s"), std::string::npos) << res.output;
  EXPECT_GT(seconds, 4 + 3 - 0.5);
  EXPECT_LT(seconds, 4 + 3 + 10);
  std::printf(
      "[ metric   ] rank 0 stopped %.1f s after start (rank 1 stopped at 4 s, timeout 3 s)\n",
      seconds);
}

TEST(DistCli, LauncherStopsTheRanksWhenOneDies) {
  CsvRun r;
  // The launcher's ranks are its children: kill rank 1's process (the younger) 4 s in. A
  // watchdog kills the launcher after 60 s should it hang (its ranks die with it).
  const auto t0 = std::chrono::steady_clock::now();
  const auto res = lathe::testing::run_command(
      "{ " + lathe::testing::lathe_binary() + " train --devices 2 " + r.config +
      " trainer.max_epochs=100000 checkpoint.every_n_epochs=0 run.name=launched & L=$!; "
      "(sleep 60; kill -KILL $L) >/dev/null 2>&1 & W=$!; sleep 4; "
      "kill -KILL $(pgrep -P $L | sort -n | tail -1); wait $L; echo launcher exit $?; "
      "kill $W 2>/dev/null; }");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(res.output.find("launcher exit 1"), std::string::npos) << res.output;
  EXPECT_NE(res.output.find("rank 1 (pid"), std::string::npos) << res.output;
  EXPECT_NE(res.output.find("was killed by signal 9"), std::string::npos) << res.output;
  EXPECT_LT(seconds, 4 + 20);
  std::printf("[ metric   ] launcher exited %.1f s after start (rank 1 killed at 4 s)\n", seconds);
}

TEST(DistCli, SigtermToTheLauncherStopsEveryRankAfterTheSameStepAndResumesBitIdentical) {
  CsvRun r;
  // 30 epochs of 8 steps, with EMA; the same run straight through and stopped by SIGTERM to the
  // launcher at a random moment (seeded, printed) while it trains.
  const std::string args =
      "--devices 2 trainer.max_epochs=30 trainer.log_every_n_steps=1 trainer.ema.decay=0.5";
  const std::string lathe_train = lathe::testing::lathe_binary() + " train " + r.config + " ";
  const auto [full_status, train_s] = lathe::testing::run_timed(
      lathe_train + args + " run.name=full", r.run("full"), r.dir / "full.log");
  ASSERT_EQ(full_status, 0) << lathe::testing::read_text(r.dir / "full.log");
  // A random moment while it trains: after a random one of the first 160 of its 240 steps has
  // logged, plus up to one step's time (not seconds from the start: a run on a machine with
  // less load finishes sooner than the run it was timed on).
  const unsigned seed = std::random_device{}();
  std::mt19937 rng(seed);
  const int after_step = std::uniform_int_distribution<int>(1, 160)(rng);
  const int delay_ms =
      std::uniform_int_distribution<int>(0, static_cast<int>(train_s * 1000 / 240))(rng);
  SCOPED_TRACE(fmt::format("seed {}: SIGTERM {} ms after step {} logged", seed, delay_ms,
                           after_step));

  const auto log = r.dir / "stopped.log";
  const pid_t pid = lathe::testing::start_command(lathe_train + args + " run.name=stopped", log);
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_TRUE(lathe::testing::wait_until(
      pid, [&] { return lathe::testing::logged_step(r.run("stopped"), after_step); }, &status))
      << lathe::testing::read_text(log);
  std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  ::kill(pid, SIGTERM);
  ::waitpid(pid, &status, 0);
  const std::string out = lathe::testing::read_text(log);
  ASSERT_TRUE(WIFEXITED(status)) << out;
  ASSERT_EQ(WEXITSTATUS(status), 143) << out;
  // Both ranks stopped after the same step.
  const auto step_of = [&](int rank) {
    const std::string tag = fmt::format("rank {} of 2: stopped by SIGTERM after step ", rank);
    const auto at = out.find(tag);
    return at == std::string::npos ? int64_t{-1} : std::stoll(out.substr(at + tag.size()));
  };
  EXPECT_GT(step_of(0), 0) << out;
  EXPECT_EQ(step_of(0), step_of(1)) << out;
  EXPECT_EQ(out.find("exited with status"), std::string::npos) << out;  // not a failure

  const std::string resume = lathe::testing::resume_command(out);
  ASSERT_NE(resume.find(" --devices 2 "), std::string::npos) << out;
  const auto resumed = lathe::testing::run_command(resume);
  ASSERT_EQ(resumed.status, 0) << resume << "\n" << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from"), std::string::npos) << resumed.output;
  for (const char* file : {"model.safetensors", "model_ema.safetensors"})
    EXPECT_EQ(lathe::testing::read_text(r.run("stopped") / file),
              lathe::testing::read_text(r.run("full") / file))
        << file;
  std::printf("[ metric   ] both ranks stopped after step %lld\n",
              static_cast<long long>(step_of(0)));
}
