// Hostile weights files: malformed safetensors headers and pickles are CheckpointErrors naming the
// file, refused before anything large is allocated; nothing crashes. Reader-level only, so the
// sanitizer build runs this file too.
#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <map>
#include <string>

#include "lathe/ckpt/safetensors.h"
#include "lathe/ckpt/torch_pickle.h"
#include "lathe/core/error.h"
#include "tests/support.h"

using lathe::CheckpointError;
using lathe::testing::expect_error;
using lathe::testing::TempDir;

namespace {

/// A safetensors file: the 8-byte length, `header` as given, then `data`.
std::string safetensors(const std::string& header, const std::string& data = "") {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  return out + header + data;
}

void expect_st_error(const std::string& header, const std::string& data,
                     std::initializer_list<std::string> parts) {
  expect_error<CheckpointError>(
      [&] { lathe::ckpt::parse_safetensors(safetensors(header, data), "w.safetensors"); }, parts);
}

// ---- pickle building blocks (protocol 2, as torch.save writes them) -------------------------

std::string u32(uint32_t v) {
  std::string s(4, '\0');
  std::memcpy(s.data(), &v, 4);
  return s;
}
std::string str(const std::string& s) { return "X" + u32(static_cast<uint32_t>(s.size())) + s; }
std::string int32(int32_t v) { return "J" + u32(static_cast<uint32_t>(v)); }

/// A tensor record: a view (sizes, strides, offset) of FloatStorage `key` declaring `numel`.
std::string tensor(const std::string& key, int32_t numel, std::vector<int32_t> sizes,
                   std::vector<int32_t> strides, int32_t offset = 0) {
  std::string s = "ctorch._utils\n_rebuild_tensor_v2\n(";
  s +=
      "(" + str("storage") + "ctorch\nFloatStorage\n" + str(key) + str("cpu") + int32(numel) + "tQ";
  s += int32(offset) + "(";
  for (int32_t v : sizes) s += int32(v);
  s += "t(";
  for (int32_t v : strides) s += int32(v);
  s += "t\x89)tR";
  return s;
}

/// A pickled dict {name: pickled value, ...}, ended with STOP.
std::string dict(const std::vector<std::pair<std::string, std::string>>& items) {
  std::string s = "\x80\x02}(";
  for (const auto& [k, v] : items) s += str(k) + v;
  return s + "u.";
}

/// Records data/<key> held in memory.
struct MemRecords {
  std::map<std::string, std::string> data;
  lathe::ckpt::PickleRecords records() const {
    lathe::ckpt::PickleRecords r;
    r.has = [this](const std::string& n) { return data.count(n) != 0; };
    r.size = [this](const std::string& n) { return data.at(n).size(); };
    r.read = [this](const std::string& n, void* dst, size_t k) {
      std::memcpy(dst, data.at(n).data(), k);
    };
    return r;
  }
};

std::string floats(std::vector<float> v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

lathe::ckpt::NamedTensors unpickle(const std::string& pkl, const MemRecords& m = {},
                                   bool big_endian = false) {
  return lathe::ckpt::unpickle_state_dict(pkl, m.records(), "w.pt", big_endian);
}

}  // namespace

// ---- safetensors ---------------------------------------------------------------------------

TEST(HostileSafetensors, HeaderOverTheReferenceCapIsRefused) {
  std::string file(8, '\0');
  const uint64_t len = 200'000'000;
  std::memcpy(file.data(), &len, 8);
  expect_error<CheckpointError>([&] { lathe::ckpt::parse_safetensors(file + "{}", "w.st"); },
                                {"w.st", "200000000 bytes", "over the 100000000 bytes allowed"});
}

TEST(HostileSafetensors, DeeplyNestedMetadataIsRefusedNotACrash) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  expect_st_error("{\"__metadata__\":{\"a\":" + deep + "}}", "",
                  {"w.safetensors", "nests deeper than the format allows"});
  expect_st_error("{\"__metadata__\":{\"a\":1}}", "", {"__metadata__ 'a' is not a string"});
}

TEST(HostileSafetensors, OffsetsMustBeIntegralContiguousAndInsideTheFile) {
  const std::string data(16, '\0');
  expect_st_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8.5]}})", data,
                  {"tensor 'a'", "two non-negative integers"});
  expect_st_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", data,
                  {"tensor 'a'", "two non-negative integers"});
  expect_st_error(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
      data, {"tensor 'b' starts at byte 4", "expected 8", "must not overlap"});
  expect_st_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", data,
                  {"tensor 'a' starts at byte 8", "expected 0"});
  expect_st_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data,
                  {"cover 8 bytes of the data section but it holds 16"});
  expect_st_error(R"({"a":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})", data,
                  {"truncated", "tensor 'a'", "up to 32", "only 16"});
}

TEST(HostileSafetensors, DtypeTimesShapeMustEqualTheBytes) {
  const std::string data(16, '\0');
  expect_st_error(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", data,
                  {"tensor 'a'", "needs 12 bytes but its data_offsets span 16"});
  expect_st_error(R"({"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,16]}})",
                  data, {"tensor 'a'", "larger than the whole data section"});
  expect_st_error(R"({"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", data,
                  {"tensor 'a'", "non-negative integers"});
  expect_st_error(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"a":{}})", data,
                  {"names 'a' twice"});
  // A well-formed one still loads.
  const auto ok = lathe::ckpt::parse_safetensors(
      safetensors(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", data), "w");
  EXPECT_EQ(ok.tensors.at(0).second.sizes(), (std::vector<int64_t>{4}));
}

// ---- pickle --------------------------------------------------------------------------------

TEST(HostilePickle, OpcodesOnAnEmptyStackAreErrors) {
  using namespace std::string_literals;
  for (const std::string& pkl : {"s."s, "a."s, "(e."s, "2."s, "q\x00."s, "}b."s, "0."s,
                                 "(K\x01(0t."s, "R."s, "\x93."s, "u."s}) {
    expect_error<CheckpointError>([&] { unpickle("\x80\x02" + pkl); },
                                  {"w.pt", "malformed pickle"});
  }
}

TEST(HostilePickle, NestingIsLimitedAndFreedWithoutRecursion) {
  // 2000 lists, each appended into the one before: deeper than the limit of 1000.
  const std::string deep = std::string(2000, ']') + std::string(1999, 'a') + ".";
  expect_error<CheckpointError>([&] { unpickle("\x80\x02" + deep); },
                                {"nest deeper than 1000 levels"});
  // 300000 lists linked through the memo after each was built: the recorded depths stay small,
  // the chain is 300000 deep, then dropped; freeing it must not recurse (that would overflow the
  // stack).
  std::string chain = "\x80\x02";
  const uint32_t n = 300000;
  for (uint32_t i = 0; i < n; ++i) chain += "]r" + u32(i) + "0";
  for (uint32_t i = 0; i + 1 < n; ++i) chain += "j" + u32(i) + "j" + u32(i + 1) + "a0";
  for (uint32_t i = 0; i < n; ++i) chain += "Nr" + u32(i) + "0";  // the chain is dropped
  chain += "}.";
  EXPECT_TRUE(unpickle(chain).empty());
}

TEST(HostilePickle, StorageLargerThanItsRecordIsRefusedBeforeAllocating) {
  MemRecords m;
  m.data["data/0"] = floats({1, 2});
  expect_error<CheckpointError>(
      [&] {
        unpickle(dict({{"w", tensor("0", 2000000000, {2}, {1})}}), m);
      },
      {"w.pt", "record data/0 holds 8 bytes", "declares 2000000000 elements"});
  expect_error<CheckpointError>(
      [&] {
        unpickle(dict({{"w", tensor("1", 2, {2}, {1})}}), m);
      },
      {"archive lacks record data/1"});
  expect_error<CheckpointError>(
      [&] {
        unpickle(dict({{"w", tensor("0", 2, {2, 1000000}, {1000000, 1})}}), m);
      },
      {"reaches beyond its storage of 2 elements"});
  expect_error<CheckpointError>(
      [&] {
        unpickle(dict({{"w", tensor("0", 2, {-1}, {1})}}), m);
      },
      {"non-negative"});
}

TEST(HostilePickle, DuplicateKeysKeepTheFirstPlaceAndTheLastValueAsTorchLoad) {
  MemRecords m;
  m.data["data/0"] = floats({1, 2});
  m.data["data/1"] = floats({3, 4});
  const auto sd = unpickle(dict({{"w", tensor("0", 2, {2}, {1})},
                                 {"b", tensor("0", 2, {1}, {1})},
                                 {"w", tensor("1", 2, {2}, {1})}}),
                           m);
  ASSERT_EQ(sd.size(), 2u);
  EXPECT_EQ(sd[0].first, "w");
  EXPECT_EQ(sd[0].second[0].item<float>(), 3.0f);
  EXPECT_EQ(sd[1].first, "b");
}

TEST(HostilePickle, BigEndianArchivesAreSwapped) {
  TempDir dir;
  const float one = 1.0f;
  std::string be(4, '\0');
  for (int i = 0; i < 4; ++i) be[i] = reinterpret_cast<const char*>(&one)[3 - i];
  {
    caffe2::serialize::PyTorchStreamWriter w((dir / "big.pt").string());
    const std::string pkl = dict({{"w", tensor("0", 1, {1}, {1})}});
    w.writeRecord("data.pkl", pkl.data(), pkl.size());
    w.writeRecord("byteorder", "big", 3);
    w.writeRecord("data/0", be.data(), be.size());
    w.writeEndOfFile();
  }
  const auto sd = lathe::ckpt::load_torch_state_dict(dir / "big.pt");
  ASSERT_EQ(sd.size(), 1u);
  EXPECT_EQ(sd[0].second[0].item<float>(), 1.0f);
  {
    caffe2::serialize::PyTorchStreamWriter w((dir / "odd.pt").string());
    const std::string pkl = dict({});
    w.writeRecord("data.pkl", pkl.data(), pkl.size());
    w.writeRecord("byteorder", "middle", 6);
    w.writeEndOfFile();
  }
  expect_error<CheckpointError>([&] { lathe::ckpt::load_torch_state_dict(dir / "odd.pt"); },
                                {"odd.pt", "byteorder record says 'middle'"});
  expect_error<CheckpointError>([&] { lathe::ckpt::load_torch_state_dict("/dev/zero"); },
                                {"/dev/zero", "it is a device"});
  expect_error<CheckpointError>([&] { lathe::ckpt::load_safetensors(dir.path()); },
                                {"it is a folder"});
}
