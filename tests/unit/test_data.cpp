// Data: IDX reading (plain, gzip, every error), stratified seeded splits, the batch loader.
#include <zlib.h>

#include <ATen/ATen.h>

#include "lathe/core/error.h"
#include "lathe/data/idx.h"
#include "lathe/data/tensor_data.h"
#include "tests/support.h"
#include "tests/unit/data_support.h"

using lathe::DataError;
using lathe::testing::expect_error;
using lathe::testing::idx_bytes;
using lathe::testing::TempDir;
using lathe::testing::write_gz;

TEST(Idx, ReadsUint8ImagesPlainAndGzip) {
  TempDir dir;
  std::string body;
  for (int i = 0; i < 2 * 3 * 4; ++i) body.push_back(static_cast<char>(i));
  lathe::testing::write_text(dir / "a.idx", idx_bytes(0x08, {2, 3, 4}, body));
  write_gz(dir / "a.idx.gz", idx_bytes(0x08, {2, 3, 4}, body));
  for (const auto* name : {"a.idx", "a.idx.gz"}) {
    const at::Tensor t = lathe::data::read_idx(dir / name);
    EXPECT_EQ(t.sizes(), (std::vector<int64_t>{2, 3, 4}));
    EXPECT_EQ(t.scalar_type(), at::kByte);
    EXPECT_EQ(t[1][2][3].item<int>(), 23);
  }
}

TEST(Idx, ConvertsBigEndianInt32AndFloat) {
  TempDir dir;
  // int32 258 = 0x00000102, -1 = 0xFFFFFFFF
  lathe::testing::write_text(dir / "i.idx",
                             idx_bytes(0x0C, {2}, std::string("\0\0\x01\x02\xFF\xFF\xFF\xFF", 8)));
  const at::Tensor t = lathe::data::read_idx(dir / "i.idx");
  EXPECT_EQ(t.scalar_type(), at::kInt);
  EXPECT_EQ(t[0].item<int>(), 258);
  EXPECT_EQ(t[1].item<int>(), -1);
  // float32 1.5 = 0x3FC00000
  lathe::testing::write_text(dir / "f.idx", idx_bytes(0x0D, {1}, std::string("\x3F\xC0\0\0", 4)));
  EXPECT_FLOAT_EQ(lathe::data::read_idx(dir / "f.idx")[0].item<float>(), 1.5f);
}

TEST(Idx, TruncatedFileIsAClearError) {
  TempDir dir;
  lathe::testing::write_text(dir / "t.idx", idx_bytes(0x08, {10, 28, 28}, std::string(100, 'x')));
  expect_error<DataError>([&] { lathe::data::read_idx(dir / "t.idx"); },
                          {"t.idx", "truncated", "7840 values", "only 100 bytes"});
  write_gz(dir / "t.idx.gz", idx_bytes(0x08, {10, 28, 28}, std::string(100, 'x')));
  expect_error<DataError>([&] { lathe::data::read_idx(dir / "t.idx.gz"); },
                          {"t.idx.gz", "truncated"});
  lathe::testing::write_text(dir / "h.idx", std::string("\0\0", 2));
  expect_error<DataError>([&] { lathe::data::read_idx(dir / "h.idx"); },
                          {"h.idx", "too short for an IDX header"});
}

TEST(Idx, WrongMagicNumberIsAClearError) {
  TempDir dir;
  lathe::testing::write_text(dir / "m.idx", "PK\x03\x04 not idx at all");
  expect_error<DataError>([&] { lathe::data::read_idx(dir / "m.idx"); },
                          {"m.idx", "wrong magic number 0x504B0304"});
  lathe::testing::write_text(dir / "ty.idx", idx_bytes(0x07, {1}, "x"));
  expect_error<DataError>([&] { lathe::data::read_idx(dir / "ty.idx"); },
                          {"ty.idx", "unknown IDX element type 0x07"});
}

TEST(Idx, TrailingBytesAndMissingFiles) {
  TempDir dir;
  lathe::testing::write_text(dir / "long.idx", idx_bytes(0x08, {2}, "abc"));
  expect_error<DataError>([&] { lathe::data::read_idx(dir / "long.idx"); },
                          {"long.idx", "file is longer"});
  expect_error<DataError>([&] { lathe::data::read_idx(dir / "nope.idx"); },
                          {"nope.idx", "no such IDX file"});
  expect_error<DataError>([&] { lathe::data::load_idx_split(dir.path(), "train"); },
                          {"no train-images-idx3-ubyte or train-images-idx3-ubyte.gz"});
}

TEST(Idx, SplitChecksImageAndLabelCounts) {
  TempDir dir;
  lathe::testing::write_text(dir / "train-images-idx3-ubyte",
                             idx_bytes(0x08, {3, 2, 2}, std::string(12, '\x01')));
  lathe::testing::write_text(dir / "train-labels-idx1-ubyte", idx_bytes(0x08, {2}, "\x01\x02"));
  expect_error<DataError>([&] { lathe::data::load_idx_split(dir.path(), "train"); },
                          {"has 3 images", "has 2 labels"});
}

TEST(Idx, ReadsDebianFashionMnist) {
  const auto split = lathe::data::load_idx_split(lathe::testing::kFashionMnist, "t10k");
  EXPECT_EQ(split.images.sizes(), (std::vector<int64_t>{10000, 28, 28}));
  EXPECT_EQ(split.labels.scalar_type(), at::kLong);
  EXPECT_EQ(split.labels.min().item<int64_t>(), 0);
  EXPECT_EQ(split.labels.max().item<int64_t>(), 9);
  // Fashion-MNIST's test set has exactly 1000 images per class.
  EXPECT_TRUE(at::bincount(split.labels).eq(1000).all().item<bool>());
}

TEST(Split, StratifiedSeededAndDisjoint) {
  // 1000 records, classes 0..3 with 100, 200, 300, 400 members.
  std::vector<int64_t> labels;
  for (int64_t c = 0; c < 4; ++c) labels.insert(labels.end(), 100 * (c + 1), c);
  const lathe::data::TensorDataset all{at::arange(1000).to(at::kFloat).unsqueeze(1),
                                       at::tensor(labels)};
  const auto [train, val] = lathe::data::split_holdout(all, 0.1, 42);
  EXPECT_EQ(train.size(), 900);
  EXPECT_EQ(val.size(), 100);
  EXPECT_TRUE(at::bincount(val.targets).equal(at::tensor(std::vector<int64_t>{10, 20, 30, 40})));
  // Disjoint and complete.
  const at::Tensor ids = std::get<0>(at::cat({train.inputs, val.inputs}).squeeze(1).sort());
  EXPECT_TRUE(ids.equal(at::arange(1000).to(at::kFloat)));
  // Same seed, same split; another seed, another split.
  EXPECT_TRUE(lathe::data::split_holdout(all, 0.1, 42).second.inputs.equal(val.inputs));
  EXPECT_FALSE(lathe::data::split_holdout(all, 0.1, 43).second.inputs.equal(val.inputs));
}

TEST(Loader, EpochOrderIsAFunctionOfSeedAndEpoch) {
  const lathe::data::TensorDataset ds{at::arange(10).to(at::kFloat), at::arange(10)};
  lathe::data::TensorLoader a(ds, 4, true, 7), b(ds, 4, true, 7);
  EXPECT_EQ(a.num_batches(), 3);
  EXPECT_EQ(a.batch(2).size(), 2);  // the last, partial batch
  a.set_epoch(3);
  b.set_epoch(3);
  std::vector<at::Tensor> seen;
  for (int64_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(a.batch(i).targets.equal(b.batch(i).targets));
    seen.push_back(a.batch(i).targets);
  }
  EXPECT_TRUE(std::get<0>(at::cat(seen).sort()).equal(at::arange(10)));  // each record once
  b.set_epoch(4);
  EXPECT_FALSE(a.batch(0).targets.equal(b.batch(0).targets));
  lathe::data::TensorLoader dropping(ds, 4, false, 7, /*drop_last=*/true);
  EXPECT_EQ(dropping.num_batches(), 2);
  EXPECT_TRUE(dropping.batch(1).targets.equal(at::arange(4, 8)));
}

TEST(Images, ScaleAndNormalise) {
  const at::Tensor raw = at::full({2, 3, 3}, 255, at::kByte);
  const at::Tensor x = lathe::data::images_to_float(raw);
  EXPECT_EQ(x.sizes(), (std::vector<int64_t>{2, 1, 3, 3}));
  EXPECT_FLOAT_EQ(x.max().item<float>(), 1.0f);
  const at::Tensor n = lathe::data::normalize(x, {0.5}, {0.25});
  EXPECT_FLOAT_EQ(n[0][0][0][0].item<float>(), 2.0f);
  const auto [mean, std] = lathe::data::channel_stats(at::rand({50, 3, 4, 4}));
  EXPECT_EQ(mean.size(), 3u);
  EXPECT_NEAR(mean[0], 0.5, 0.05);
  expect_error<DataError>([&] { lathe::data::normalize(x, {0.5, 0.5}, {1, 1}); },
                          {"2 mean and 2 std values for 1 channels"});
}
