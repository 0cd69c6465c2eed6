// Data: the threaded DataLoader (order, determinism, resume, errors, collation) and splits.
#include <atomic>
#include <set>

#include <ATen/ATen.h>

#include "lathe/core/error.h"
#include "lathe/data/loader.h"
#include "lathe/data/split.h"
#include "tests/support.h"

using lathe::DataError;
using lathe::testing::expect_error;
using namespace lathe::data;

namespace {

/// Records 0..n-1: input (2) = [i, i], target i; record `bad` throws.
class Numbers : public Dataset {
 public:
  explicit Numbers(int64_t n, int64_t bad = -1) : n_(n), bad_(bad) {}
  int64_t size() const override { return n_; }
  Example get(int64_t i) const override {
    LATHE_CHECK(i != bad_, DataError, "numbers.bin: record {} is corrupt", i);
    return {at::full({2}, static_cast<double>(i), at::kFloat), at::scalar_tensor(i, at::kLong)};
  }

 private:
  int64_t n_, bad_;
};

/// Every batch of one epoch: targets concatenated, inputs summed (to see transforms).
std::pair<std::vector<int64_t>, double> run_epoch(DataLoader& loader, int64_t epoch) {
  loader.set_epoch(epoch);
  std::vector<int64_t> ids;
  double sum = 0;
  while (auto b = loader.next()) {
    EXPECT_TRUE(b->inputs.is_contiguous());
    for (int64_t i = 0; i < b->targets.size(0); ++i) ids.push_back(b->targets[i].item<int64_t>());
    sum += b->inputs.sum().item<double>();
  }
  return {ids, sum};
}

/// A transform that adds a draw from the record's RNG: shows whether seeding is per record.
Transform add_noise() {
  return [](at::Tensor x, Rng& rng) { return x + uniform(rng, 0, 1); };
}

}  // namespace

TEST(Loader, ShuffledEpochsAreDeterministicAndIndependentOfWorkers) {
  auto data = std::make_shared<Numbers>(103);
  const auto opts =
      LoaderOptions().with_batch_size(10).with_shuffle(true).with_seed(7).with_transform(
          add_noise());
  DataLoader inline_loader(data, LoaderOptions(opts).with_num_workers(0));
  DataLoader threaded(data, LoaderOptions(opts).with_num_workers(3).with_prefetch(1));
  EXPECT_EQ(threaded.num_batches(), 11);
  EXPECT_EQ(threaded.num_workers(), 3);
  const auto [ids0, sum0] = run_epoch(inline_loader, 0);
  const auto [ids0t, sum0t] = run_epoch(threaded, 0);
  EXPECT_EQ(ids0, ids0t);         // same seed, same batches, whatever the thread count
  EXPECT_DOUBLE_EQ(sum0, sum0t);  // transforms seeded per (seed, epoch, record)
  EXPECT_EQ(std::set<int64_t>(ids0.begin(), ids0.end()).size(), 103u);  // each record once
  const auto [ids1, sum1] = run_epoch(threaded, 1);
  EXPECT_NE(ids0, ids1);  // the next epoch has another order
  EXPECT_NE(sum0, sum1);  // and other transform draws
  DataLoader other_seed(data, LoaderOptions(opts).with_seed(8));
  EXPECT_NE(run_epoch(other_seed, 0).first, ids0);
}

TEST(Loader, InOrderWithoutShuffleAndDropLast) {
  auto data = std::make_shared<Numbers>(10);
  DataLoader loader(data,
                    LoaderOptions().with_batch_size(4).with_drop_last(true).with_num_workers(2));
  EXPECT_EQ(loader.num_batches(), 2);
  const auto [ids, sum] = run_epoch(loader, 0);
  EXPECT_EQ(ids, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_DOUBLE_EQ(sum, 2 * 28.0);
  DataLoader keep(data, LoaderOptions().with_batch_size(4));
  keep.set_epoch(0);
  std::vector<int64_t> sizes;
  while (auto b = keep.next()) sizes.push_back(b->size());
  EXPECT_EQ(sizes, (std::vector<int64_t>{4, 4, 2}));
  EXPECT_EQ(keep.next(), std::nullopt);  // stays at the end
}

TEST(Loader, ResumesMidEpochExactly) {
  auto data = std::make_shared<Numbers>(50);
  const auto opts = LoaderOptions()
                        .with_batch_size(6)
                        .with_shuffle(true)
                        .with_seed(3)
                        .with_num_workers(2)
                        .with_transform(add_noise());
  DataLoader a(data, opts);
  a.set_epoch(2);
  std::vector<Batch> seen;
  while (auto b = a.next()) seen.push_back(*b);
  DataLoader b(data, opts);
  b.set_epoch(2);
  for (int i = 0; i < 4; ++i) b.next();
  const LoaderPosition saved = b.position();
  EXPECT_EQ(saved, (LoaderPosition{2, 4}));
  DataLoader c(data, opts);  // a fresh process restoring the checkpointed position
  c.restore(saved);
  for (size_t k = 4; k < seen.size(); ++k) {
    auto batch = c.next();
    ASSERT_TRUE(batch.has_value());
    EXPECT_TRUE(batch->targets.equal(seen[k].targets)) << "batch " << k;
    EXPECT_TRUE(batch->inputs.equal(seen[k].inputs)) << "batch " << k;
  }
  EXPECT_FALSE(c.next().has_value());
  // batch(i): TensorLoader's random-access interface, in order or jumping.
  DataLoader d(data, opts);
  d.set_epoch(2);
  EXPECT_TRUE(d.batch(5).targets.equal(seen[5].targets));
  EXPECT_TRUE(d.batch(6).inputs.equal(seen[6].inputs));
  EXPECT_TRUE(d.batch(0).targets.equal(seen[0].targets));
  expect_error<DataError>(
      [&] {
        c.restore({0, 99});
      },
      {"position (epoch 0, batch 99)", "9 batches"});
}

TEST(Loader, WorkerErrorsNameTheRecordAndStopCleanly) {
  auto data = std::make_shared<Numbers>(40, /*bad=*/17);
  for (int workers : {0, 2}) {
    DataLoader loader(data, LoaderOptions().with_batch_size(5).with_num_workers(workers));
    loader.set_epoch(0);
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(loader.next().has_value());
    expect_error<DataError>([&] { loader.next(); }, {"record 17 (batch 3 of epoch 0)",
                                                     "numbers.bin: record 17 is corrupt"});
    EXPECT_EQ(loader.position(), (LoaderPosition{0, 3}));
    // Asking again retries the same batch (and fails the same way) rather than skipping it.
    expect_error<DataError>([&] { loader.next(); }, {"record 17"});
    loader.restore({0, 4});  // past the bad batch, the epoch goes on
    EXPECT_EQ(loader.next()->targets[0].item<int64_t>(), 20);
  }
  // Destroyed mid-epoch with batches in flight: the destructor joins the workers.
  auto big = std::make_shared<Numbers>(1000);
  {
    DataLoader loader(big, LoaderOptions().with_batch_size(2).with_num_workers(4));
    loader.next();
  }
}

TEST(Loader, WorkersRunTorchOpsSingleThreaded) {
  std::atomic<int> max_threads{0};
  const Transform probe = [&](at::Tensor x, Rng&) {
    max_threads = std::max(max_threads.load(), at::get_num_threads());
    return x;
  };
  const int main_threads = at::get_num_threads();
  DataLoader loader(std::make_shared<Numbers>(64),
                    LoaderOptions().with_batch_size(8).with_num_workers(2).with_transform(probe));
  run_epoch(loader, 0);
  EXPECT_EQ(max_threads.load(), 1);                // no intra-op teams inside workers
  EXPECT_EQ(at::get_num_threads(), main_threads);  // the training thread keeps its threads
}

TEST(Loader, CollationErrorsAndDefaults) {
  class Ragged : public Dataset {
   public:
    int64_t size() const override { return 4; }
    Example get(int64_t i) const override { return {at::zeros({i + 1}), at::scalar_tensor(i)}; }
  };
  DataLoader loader(std::make_shared<Ragged>(),
                    LoaderOptions().with_batch_size(4).with_num_workers(0));
  expect_error<DataError>([&] { loader.next(); },
                          {"cannot collate", "record 1 has shape [2]", "[1]"});
  EXPECT_GE(default_num_workers(), 1);
  EXPECT_LE(default_num_workers(), std::max(1u, std::thread::hardware_concurrency()));
  expect_error<DataError>(
      [&] { DataLoader(std::make_shared<Ragged>(), LoaderOptions().with_batch_size(0)); },
      {"batch size must be positive, got 0"});
}

TEST(Loader, TensorSourceBatchesEqualTheTensors) {
  const TensorDataset td{at::arange(24).view({12, 2}).to(at::kFloat), at::arange(12)};
  DataLoader loader(std::make_shared<TensorSource>(td),
                    LoaderOptions().with_batch_size(5).with_num_workers(1));
  loader.set_epoch(0);
  auto b = loader.next();
  EXPECT_TRUE(b->inputs.equal(td.inputs.narrow(0, 0, 5)));
  EXPECT_EQ(to_device(*b, c10::kCPU).inputs.data_ptr(), b->inputs.data_ptr());
  const TensorDataset all = materialize(SubsetSource(std::make_shared<TensorSource>(td), {3, 1}));
  EXPECT_TRUE(all.targets.equal(at::tensor(std::vector<int64_t>{3, 1})));
}

TEST(Split, RatiosAreStratifiedSeededAndDisjoint) {
  // Classes of 50, 30 and 20 records (like a small imbalanced set).
  std::vector<int64_t> labels;
  for (int64_t c = 0; c < 3; ++c)
    labels.insert(labels.end(), std::vector<int64_t>{50, 30, 20}[c], c);
  const at::Tensor strata = at::tensor(labels);
  const SplitIndices s = split_indices(100, 0.1, 0.1, 42, strata);
  EXPECT_EQ(s.train.size(), 80u);
  EXPECT_EQ(s.val.size(), 10u);
  EXPECT_EQ(s.test.size(), 10u);
  const auto count = [&](const std::vector<int64_t>& idx) {
    return at::bincount(strata.index_select(0, at::tensor(idx)), {}, 3);
  };
  EXPECT_TRUE(count(s.val).equal(at::tensor(std::vector<int64_t>{5, 3, 2})));
  EXPECT_TRUE(count(s.test).equal(at::tensor(std::vector<int64_t>{5, 3, 2})));
  std::vector<int64_t> all = s.train;
  all.insert(all.end(), s.val.begin(), s.val.end());
  all.insert(all.end(), s.test.begin(), s.test.end());
  EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()).size(), 100u);
  EXPECT_EQ(split_indices(100, 0.1, 0.1, 42, strata).val, s.val);
  EXPECT_NE(split_indices(100, 0.1, 0.1, 43, strata).val, s.val);
  const SplitIndices plain = split_indices(7, 0.2, 0.0, 1);  // unstratified, no test part
  EXPECT_EQ(plain.val.size(), 1u);
  EXPECT_TRUE(plain.test.empty());
  expect_error<DataError>([] { split_indices(10, 0.6, 0.5, 1); }, {"val 0.6 + test 0.5"});
}
