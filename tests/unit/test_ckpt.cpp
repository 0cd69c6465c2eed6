// ckpt: safetensors round trips and errors, PyTorch interop both ways, state-dict loading.
#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

#include "lathe/ckpt/safetensors.h"
#include "lathe/ckpt/state_dict.h"
#include "lathe/core/error.h"
#include "models/cnn/convnet.h"
#include "tests/support.h"

using lathe::CheckpointError;
using lathe::ckpt::NamedTensors;
using lathe::testing::expect_error;
using lathe::testing::TempDir;

namespace {

/// Tensors of every dtype safetensors holds: arange(numel) cast, as the Python check expects.
NamedTensors every_dtype() {
  const auto make = [](at::ScalarType t, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    return at::arange(n).to(t).reshape(shape);
  };
  return {{"f64", make(at::kDouble, {2, 3})},  {"f32", make(at::kFloat, {4})},
          {"f16", make(at::kHalf, {2, 2})},    {"bf16", make(at::kBFloat16, {3})},
          {"i64", make(at::kLong, {2, 2})},    {"i32", make(at::kInt, {5})},
          {"i16", make(at::kShort, {1, 3})},   {"i8", make(at::kChar, {4})},
          {"u8", make(at::kByte, {2, 3})},     {"scalar", make(at::kFloat, {})}};
}

std::string python_oracle(const std::string& args) {
  return lathe::testing::run_parity("safetensors_oracle.py", args);
}

}  // namespace

TEST(Safetensors, RoundTripsEveryDtypeAndMetadata) {
  TempDir dir;
  const auto file = dir / "all.safetensors";
  lathe::ckpt::save_safetensors(file, every_dtype(), {{"format", "pt"}, {"origin", "lathe"}});
  const auto loaded = lathe::ckpt::load_safetensors(file);
  EXPECT_EQ(loaded.metadata.at("origin"), "lathe");
  ASSERT_EQ(loaded.tensors.size(), every_dtype().size());
  for (const auto& [name, want] : every_dtype()) {
    const auto it = std::find_if(loaded.tensors.begin(), loaded.tensors.end(),
                                 [&](const auto& p) { return p.first == name; });
    ASSERT_NE(it, loaded.tensors.end()) << name;
    EXPECT_EQ(it->second.scalar_type(), want.scalar_type()) << name;
    EXPECT_TRUE(it->second.equal(want)) << name;
  }
}

TEST(Safetensors, PythonReadsWhatWeWrite) {
  TempDir dir;
  lathe::ckpt::save_safetensors(dir / "c.safetensors", every_dtype(),
                                {{"format", "pt"}, {"origin", "lathe"}});
  EXPECT_NE(python_oracle("check " + (dir / "c.safetensors").string()).find("ok"),
            std::string::npos);
}

TEST(Safetensors, TruncatedAndMalformedFilesAreClearErrors) {
  TempDir dir;
  const auto good = dir / "g.safetensors";
  lathe::ckpt::save_safetensors(good, {{"w", at::ones({64, 64})}});
  const std::string bytes = lathe::testing::read_text(good);
  lathe::testing::write_text(dir / "t.safetensors", bytes.substr(0, bytes.size() - 100));
  expect_error<CheckpointError>(
      [&] { lathe::ckpt::load_safetensors(dir / "t.safetensors"); },
      {"t.safetensors", "truncated", "tensor 'w'"});
  lathe::testing::write_text(dir / "s.safetensors", "abc");
  expect_error<CheckpointError>([&] { lathe::ckpt::load_safetensors(dir / "s.safetensors"); },
                                {"s.safetensors", "too short"});
  lathe::testing::write_text(dir / "j.safetensors", std::string("\x04\0\0\0\0\0\0\0{x:1", 12));
  expect_error<CheckpointError>([&] { lathe::ckpt::load_safetensors(dir / "j.safetensors"); },
                                {"j.safetensors", "not valid JSON"});
  expect_error<CheckpointError>([&] { lathe::ckpt::load_safetensors(dir / "none.safetensors"); },
                                {"none.safetensors", "no such weights file"});
}

TEST(Safetensors, LoadMapsTheFileWithoutCopyingAndWritesStayPrivate) {
  TempDir dir;
  const auto file = dir / "m.safetensors";
  const at::Tensor w0 = at::arange(1000, at::kFloat), b0 = at::arange(8, at::kLong);
  lathe::ckpt::save_safetensors(file, {{"w", w0}, {"b", b0}});
  at::Tensor w;
  {
    const auto loaded = lathe::ckpt::load_safetensors(file);
    w = loaded.tensors[0].second;
    // Views of one mapping: the second tensor's bytes follow the first's (copies would each
    // have their own allocation).
    EXPECT_EQ(static_cast<const char*>(loaded.tensors[1].second.data_ptr()),
              static_cast<const char*>(w.data_ptr()) + 4000);
  }
  EXPECT_TRUE(w.equal(w0));  // the tensor keeps the mapping alive after the file's struct goes
  w.add_(1);                 // a write stays in this process: the file is unchanged
  EXPECT_TRUE(lathe::ckpt::load_safetensors(file).tensors[0].second.equal(w0));
  // Replacing the file (an atomic rename, as every lathe write) leaves loaded tensors as they are.
  lathe::ckpt::save_safetensors(file, {{"w", at::zeros({1000})}, {"b", b0}});
  EXPECT_TRUE(w.equal(w0 + 1));
  EXPECT_TRUE(lathe::ckpt::load_safetensors(file).tensors[0].second.equal(at::zeros({1000})));
  // A float32 tensor after 3 bytes of uint8 lies at an odd address: it is copied out, not viewed.
  const at::Tensor f = at::arange(5, at::kFloat);
  lathe::ckpt::save_safetensors(file, {{"u", at::arange(3, at::kByte)}, {"f", f}});
  const auto odd = lathe::ckpt::load_safetensors(file);
  EXPECT_TRUE(odd.tensors[1].second.equal(f));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(odd.tensors[1].second.data_ptr()) % 4, 0u);
}

TEST(Safetensors, FailedWriteKeepsThePreviousFile) {
  TempDir dir;
  const auto file = dir / "w.safetensors";
  lathe::ckpt::save_safetensors(file, {{"w", at::ones({2})}});
  const std::string before = lathe::testing::read_text(file);
  // An undefined tensor fails mid-way: the old file must survive and no temporary remain.
  EXPECT_THROW(lathe::ckpt::save_safetensors(file, {{"w", at::zeros({2})}, {"x", at::Tensor()}}),
               CheckpointError);
  EXPECT_EQ(lathe::testing::read_text(file), before);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);
}

TEST(StateDict, PyTorchWeightsGivePyTorchsOutput) {
  TempDir dir;
  const std::string count = python_oracle("convnet " + dir.path().string());
  lathe::models::ConvNet net(lathe::models::ConvNetOptions().num_classes(5).channels({4, 8}).hidden(16));
  const auto report = lathe::ckpt::load_weights(*net, dir / "weights.safetensors");
  EXPECT_TRUE(report.clean()) << report.summary();
  EXPECT_EQ(report.loaded, lathe::ckpt::state_dict(*net).size());
  int64_t params = 0;
  for (const auto& p : net->parameters()) params += p.numel();
  EXPECT_EQ(std::to_string(params), count.substr(0, count.find('\n')));  // PyTorch's count

  const auto io = lathe::ckpt::load_safetensors(dir / "io.safetensors").tensors;
  const auto get = [&](const std::string& n) {
    for (const auto& [k, v] : io)
      if (k == n) return v;
    return at::Tensor();
  };
  net->eval();
  const at::Tensor out = net->forward(get("input"));
  // fp32, same weights, eval mode: max abs difference within 1e-4.
  EXPECT_LE((out - get("output")).abs().max().item<double>(), 1e-4);
}

TEST(StateDict, StrictLoadNamesEveryProblemTensor) {
  lathe::models::ConvNet small(lathe::models::ConvNetOptions().num_classes(5).channels({4}));
  lathe::models::ConvNet other(lathe::models::ConvNetOptions().num_classes(3).channels({4}));
  auto tensors = lathe::ckpt::state_dict(*small);
  tensors.emplace_back("extra.weight", at::ones({1}));
  tensors.erase(tensors.begin());  // features.0.weight goes missing
  expect_error<CheckpointError>(
      [&] { lathe::ckpt::load_state_dict(*other, tensors, /*strict=*/true, "w.safetensors"); },
      {"w.safetensors", "missing in file: features.0.weight", "not in model: extra.weight",
       "classifier.5.weight: file [5, 128] vs model [3, 128]"});
  const auto report = lathe::ckpt::load_state_dict(*other, tensors, /*strict=*/false, "w");
  EXPECT_EQ(report.missing, std::vector<std::string>{"features.0.weight"});
  EXPECT_EQ(report.unexpected, std::vector<std::string>{"extra.weight"});
  EXPECT_EQ(report.mismatched.size(), 2u);  // classifier.5.weight and .bias
  EXPECT_TRUE(other->classifier[2]->as<torch::nn::Linear>()->weight.equal(
      small->classifier[2]->as<torch::nn::Linear>()->weight));
}
