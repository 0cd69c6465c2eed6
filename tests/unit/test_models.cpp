// Model zoo: every model against its PyTorch reference (torchvision, transformers, torch.nn) on
// the same weights and inputs, parameter counts, train-mode behaviour, registry and errors.
#include <algorithm>
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/cuda.h>

#include "lathe/ckpt/state_dict.h"
#include "lathe/ckpt/torch_pickle.h"
#include "lathe/core/error.h"
#include "lathe/core/kernel_choice.h"
#include "lathe/core/runtime.h"
#include "lathe/data/tensor_data.h"
#include "lathe/optim/optimizer.h"
#include "lathe/train/trainer.h"
#include "models/cnn/mobilenet.h"
#include "models/batch_norm.h"
#include "models/checkpoint.h"
#include "models/kernels.h"
#include "models/lstm.h"
#include "models/packed_gemm.h"
#include "models/cnn/resnet.h"
#include "models/registry.h"
#include "models/rnn/rnn.h"
#include "models/tabular/tabular.h"
#include "models/transformer/bert.h"
#include "models/transformer/gpt2.h"
#include "models/transformer/vit.h"
#include "tests/support.h"

using lathe::CheckpointError;
using lathe::ModelError;
using lathe::testing::expect_error;
using lathe::testing::TempDir;
namespace zoo = lathe::models;
namespace kernels = lathe::kernels;

namespace {

/// fp32, same weights, same input: every model output within this of PyTorch's.
constexpr double kTol = 1e-4;

/// What tests/parity/zoo_oracle.py wrote for one model: its folder, the reference's parameter
/// count and the named tensors of io.safetensors.
struct Reference {
  std::filesystem::path dir;
  int64_t params = -1;
  lathe::ckpt::NamedTensors io;

  at::Tensor get(const std::string& name) const {
    for (const auto& [k, v] : io)
      if (k == name) return v;
    ADD_FAILURE() << "the oracle wrote no tensor '" << name << "'";
    return at::zeros({1});
  }
  std::filesystem::path weights() const {
    return std::filesystem::exists(dir / "weights.pt") ? dir / "weights.pt"
                                                       : dir / "weights.safetensors";
  }
};

/// Runs the oracle for `model` once per version of the oracle and of the pinned Python
/// packages: its files go to zoo_fixtures/<model>-<hash> in the tests' working folder (the build
/// tree) and later runs reuse them. The oracles are seeded, so the files are the same each time;
/// what this saves is Python's start-up (importing torch and transformers takes seconds).
std::unique_ptr<Reference> reference(const std::string& model) {
  namespace fs = std::filesystem;
  // One intra-op thread in the oracle and here: tests share 2 cores (ctest -j2), and
  // oversubscribed OpenMP threads make these forwards several times slower.
  at::set_num_threads(1);
  const std::string src = lathe::testing::source_dir();
  const std::string oracle = src + "/tests/parity/zoo_oracle.py";
  const size_t version =
      std::hash<std::string>{}(lathe::testing::read_text(oracle) +
                               lathe::testing::read_text(src + "/scripts/requirements.txt"));
  auto ref = std::make_unique<Reference>();
  ref->dir = fs::current_path() / "zoo_fixtures" / fmt::format("{}-{:016x}", model, version);
  if (!fs::exists(ref->dir / "io.safetensors")) {
    const fs::path tmp = ref->dir.string() + fmt::format(".tmp{}", ::getpid());
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    const auto r = lathe::testing::run_command("OMP_NUM_THREADS=1 " + lathe::testing::python() +
                                               " " + oracle + " " + model + " " + tmp.string());
    if (r.status != 0) {  // nothing is kept; the test stops here with the oracle's output
      fs::remove_all(tmp);
      throw std::runtime_error("tests/parity/zoo_oracle.py " + model + " failed:\n" + r.output);
    }
    std::error_code ec;
    fs::rename(tmp, ref->dir, ec);  // atomic; another process may have won the race
    if (ec) fs::remove_all(tmp);
  }
  ref->params = std::stoll(lathe::testing::read_text(ref->dir / "params.txt"));
  ref->io = lathe::ckpt::load_safetensors(ref->dir / "io.safetensors").tensors;
  return ref;
}

bool has(const Reference& ref, const std::string& name) {
  for (const auto& [k, v] : ref.io)
    if (k == name) return true;
  return false;
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

/// The eval-mode parity check: max |ours - PyTorch's| ≤ kTol, printed for the record.
void expect_parity(const at::Tensor& ours, const at::Tensor& theirs) {
  const double d = max_diff(ours, theirs);
  std::printf("[ parity   ] max |diff| vs PyTorch: %.3g\n", d);
  EXPECT_LE(d, kTol);
}

/// Loads the reference's weights strictly (every name and shape must match) and checks the
/// parameter count.
void load_reference(torch::nn::Module& module, const Reference& ref) {
  const auto report = lathe::ckpt::load_weights_any(module, ref.weights(), /*strict=*/true);
  EXPECT_TRUE(report.clean()) << report.summary();
  EXPECT_EQ(zoo::parameter_count(module), ref.params);
}

/// Eval-mode parity, dropout off (two forwards agree), then one train-mode forward: the BatchNorm
/// buffers it leaves (running mean/var, num_batches_tracked) and, for models without dropout,
/// its output equal PyTorch's.
template <class Model>
void check_batchnorm_model(Model& model, const Reference& ref, Model twin = nullptr) {
  load_reference(*model, ref);
  model->eval();
  torch::NoGradGuard no_grad;
  const at::Tensor out = model->forward(ref.get("input"));
  expect_parity(out, ref.get("output"));
  EXPECT_TRUE(out.equal(model->forward(ref.get("input"))));  // eval: deterministic

  model->train();
  const at::Tensor train_out = model->forward(ref.get("train_input"));
  if (!twin) {
    if (has(ref, "train_output")) {  // models without dropout: the train-mode output too
      EXPECT_LE(max_diff(train_out, ref.get("train_output")), kTol);
    }
    int64_t buffers = 0;
    for (const auto& b : model->named_buffers()) {
      EXPECT_LE(max_diff(b.value(), ref.get("after_train." + b.key())), kTol) << b.key();
      ++buffers;
    }
    EXPECT_GT(buffers, 0);
    return;
  }
  // A deep network (ResNet-101, -152) in train mode normalises with each batch's statistics in
  // float, and depth amplifies their rounding past kTol: ResNet-101's logits (max 1.6) come out
  // 3.9e-4 from the same network run in double under PyTorch's kernels. There the test runs the
  // twin in double (torch's kernels) and holds lathe to PyTorch's own error: no more than 1.5×
  // PyTorch's distance from the double result, plus kTol.
  load_reference(*twin, ref);
  twin->to(at::kDouble);
  twin->train();
  const at::Tensor exact = twin->forward(ref.get("train_input").to(at::kDouble));
  const auto within_torchs_error = [](const at::Tensor& ours, const at::Tensor& torchs,
                                      const at::Tensor& truth) {
    return max_diff(ours, truth) <= 1.5 * max_diff(torchs, truth) + kTol;
  };
  EXPECT_TRUE(within_torchs_error(train_out, ref.get("train_output"), exact))
      << "lathe " << max_diff(train_out, exact) << ", PyTorch "
      << max_diff(ref.get("train_output"), exact) << " from the double result";
  const auto truths = twin->named_buffers();
  for (const auto& b : model->named_buffers())
    EXPECT_TRUE(within_torchs_error(b.value(), ref.get("after_train." + b.key()), truths[b.key()]))
        << b.key();
}

}  // namespace

// ---- CNN -------------------------------------------------------------------------------------

TEST(ResNet, Resnet18MatchesTorchvision) {
  const auto ref = reference("resnet18");
  zoo::ResNet model(zoo::ResNetOptions().depth(18).num_classes(10));
  check_batchnorm_model(model, *ref);
}

TEST(ResNet, Resnet18SmallInputLoadsTorchSavePt) {
  const auto ref = reference("resnet18_small_pt");
  zoo::ResNet model(zoo::ResNetOptions().depth(18).num_classes(10).small_input(true));
  check_batchnorm_model(model, *ref);
}

TEST(ResNet, Resnet50MatchesTorchvision) {
  const auto ref = reference("resnet50");
  zoo::ResNet model(zoo::ResNetOptions().depth(50).num_classes(10));
  check_batchnorm_model(model, *ref);
}

// Every depth the zoo offers, against torchvision's model of that depth (outputs, train-mode
// outputs and BatchNorm buffers within kTol).
TEST(ResNet, Resnet34MatchesTorchvision) {
  const auto ref = reference("resnet34");
  zoo::ResNet model(zoo::ResNetOptions().depth(34).num_classes(10));
  check_batchnorm_model(model, *ref);
}

TEST(ResNet, Resnet101MatchesTorchvision) {
  const auto ref = reference("resnet101");
  zoo::ResNet model(zoo::ResNetOptions().depth(101).num_classes(10));
  check_batchnorm_model(model, *ref, zoo::ResNet(zoo::ResNetOptions().depth(101).num_classes(10)));
}

TEST(ResNet, Resnet152MatchesTorchvision) {
  const auto ref = reference("resnet152");
  zoo::ResNet model(zoo::ResNetOptions().depth(152).num_classes(10));
  check_batchnorm_model(model, *ref, zoo::ResNet(zoo::ResNetOptions().depth(152).num_classes(10)));
}

TEST(ResNet, ParameterCountsEqualTorchvisionsAtFullSize) {
  // torchvision.models.resnetN(num_classes=1000): sum(p.numel() for p in m.parameters()).
  EXPECT_EQ(zoo::parameter_count(*zoo::ResNet(zoo::ResNetOptions().depth(18))), 11689512);
  EXPECT_EQ(zoo::parameter_count(*zoo::ResNet(zoo::ResNetOptions().depth(34))), 21797672);
  EXPECT_EQ(zoo::parameter_count(*zoo::ResNet(zoo::ResNetOptions().depth(50))), 25557032);
  EXPECT_EQ(zoo::parameter_count(*zoo::MobileNetV2()), 3504872);
}

TEST(ResNet, BadOptionsAndInputsAreModelErrors) {
  expect_error<ModelError>([] { zoo::ResNet(zoo::ResNetOptions().depth(20)); },
                           {"resnet", "depth 20"});
  expect_error<ModelError>(
      [] {
        zoo::ResNet(zoo::ResNetOptions().layers({2, 2}));
      },
      {"resnet", "4 stages", "got 2"});
  zoo::ResNet net(zoo::ResNetOptions().depth(18).num_classes(3));
  expect_error<ModelError>(
      [&] {
        net->forward(at::zeros({1, 1, 32, 32}));
      },
      {"resnet18", "(B, 3, H, W)", "[1, 1, 32, 32]"});
}

TEST(MobileNetV2, MatchesTorchvision) {
  const auto ref = reference("mobilenet_v2");
  zoo::MobileNetV2 model(zoo::MobileNetV2Options().num_classes(10).width_mult(0.75));
  check_batchnorm_model(model, *ref);
}

// ---- RNN -------------------------------------------------------------------------------------

/// Loads the reference's weights, eval-mode parity (dropout is on in these models, so a match
/// also shows it is off in eval), and the names torch.nn.LSTM / GRU give their parameters.
template <class Model>
void check_sequence_model(Model& model, const Reference& ref) {
  load_reference(*model, ref);
  model->eval();
  torch::NoGradGuard no_grad;
  expect_parity(model->forward(ref.get("input")), ref.get("output"));
}

TEST(RNN, BidirectionalLstmClassifierWithPaddingMatchesTorch) {
  const auto ref = reference("lstm_classifier");
  zoo::RNNClassifier model(zoo::RNNClassifierOptions()
                               .cell("lstm")
                               .vocab_size(50)
                               .embedding_dim(16)
                               .hidden_size(24)
                               .num_layers(2)
                               .bidirectional(true)
                               .dropout(0.3)
                               .num_classes(3)
                               .pad_id(0));
  check_sequence_model(model, *ref);
  const auto names = lathe::ckpt::state_dict(*model);
  const auto named = [&](const std::string& n) {
    return std::any_of(names.begin(), names.end(), [&](const auto& p) { return p.first == n; });
  };
  for (const char* n : {"rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0",
                        "rnn.weight_ih_l1_reverse", "rnn.bias_hh_l1_reverse"})
    EXPECT_TRUE(named(n)) << n;
  // Padding is skipped: appending more padding leaves the logits as they are.
  model->eval();
  torch::NoGradGuard no_grad;
  const at::Tensor ids = ref->get("input");
  const at::Tensor longer = at::cat({ids, at::zeros({ids.size(0), 3}, ids.options())}, 1);
  EXPECT_LE(max_diff(model->forward(longer), ref->get("output")), kTol);
}

TEST(RNN, GruClassifierOnFeaturesLoadsTorchSavePt) {
  const auto ref = reference("gru_classifier");
  zoo::RNNClassifier model(zoo::RNNClassifierOptions()
                               .cell("gru")
                               .input_size(5)
                               .hidden_size(12)
                               .num_layers(2)
                               .dropout(0.3)
                               .num_classes(4));
  check_sequence_model(model, *ref);
}

/// The LSTM or GRU language model at the oracle's size against torch.nn.
void check_rnn_lm(const std::string& cell) {
  const auto ref = reference(cell + "_lm");
  zoo::RNNLanguageModel model(zoo::RNNLanguageModelOptions()
                                  .cell(cell)
                                  .vocab_size(30)
                                  .embedding_dim(16)
                                  .hidden_size(32)
                                  .num_layers(2)
                                  .dropout(0.2));
  check_sequence_model(model, *ref);
}

TEST(RNN, LstmLanguageModelMatchesTorch) { check_rnn_lm("lstm"); }

TEST(RNN, GruLanguageModelMatchesTorch) { check_rnn_lm("gru"); }

TEST(RNN, TiedLanguageModelLoadsTorchSavePtAndMatches) {
  const auto ref = reference("lstm_lm_tied");
  zoo::RNNLanguageModel model(zoo::RNNLanguageModelOptions()
                                  .vocab_size(30)
                                  .embedding_dim(32)
                                  .hidden_size(32)
                                  .num_layers(1)
                                  .dropout(0.2)
                                  .tie_weights(true));
  check_sequence_model(model, *ref);  // parameter count: the tied weight once, as PyTorch's
}

TEST(RNN, LanguageModelStepsCarryTheStateAsTheWholeSequenceDoes) {
  for (const char* cell : {"lstm", "gru"}) {
    zoo::RNNLanguageModel lm(
        zoo::RNNLanguageModelOptions().cell(cell).vocab_size(20).hidden_size(16).num_layers(2));
    lm->eval();
    torch::NoGradGuard no_grad;
    const at::Tensor ids = at::randint(0, 20, {2, 9}, at::kLong);
    zoo::RNNState state;
    std::vector<at::Tensor> parts;
    for (const auto& [lo, hi] : {std::pair{0, 4}, {4, 5}, {5, 9}})
      parts.push_back(lm->forward_step(ids.slice(1, lo, hi), state));
    EXPECT_LE(max_diff(at::cat(parts, 1), lm->forward(ids)), 1e-6) << cell;
    EXPECT_EQ(state.h.sizes(), (std::vector<int64_t>{2, 2, 16})) << cell;
    EXPECT_EQ(state.c.defined(), std::string(cell) == "lstm");
  }
}

TEST(RNN, BadOptionsAndInputsAreModelErrors) {
  expect_error<ModelError>([] { zoo::RNNClassifier(zoo::RNNClassifierOptions().cell("rnn")); },
                           {"rnn_classifier", "cell 'rnn'", "lstm, gru"});
  expect_error<ModelError>([] { zoo::RNNClassifier(zoo::RNNClassifierOptions().pad_id(0)); },
                           {"rnn_classifier", "pad_id 0", "vocab_size"});
  zoo::RNNLanguageModel lm(zoo::RNNLanguageModelOptions().vocab_size(10));
  expect_error<ModelError>(
      [&] {
        lm->forward(at::zeros({2, 3, 4}));
      },
      {"rnn_lm", "token ids (B, T)", "[2, 3, 4]"});
  expect_error<ModelError>([&] { lm->forward(at::full({1, 2}, 12, at::kLong)); },
                           {"token id 12", "10 rows", "vocab_size"});
  expect_error<ModelError>([&] { lm->forward(at::full({1, 2}, -1, at::kLong)); },
                           {"token id -1", "[0, 10)"});
}

// ---- Transformers ------------------------------------------------------------------------------

zoo::GPT2Options small_gpt2() {
  return zoo::GPT2Options().vocab_size(64).n_positions(32).n_embd(32).n_layer(2).n_head(4);
}

TEST(GPT2, MatchesTransformersWithTiedHeadFromTorchSave) {
  const auto ref = reference("gpt2");
  zoo::GPT2 model(small_gpt2());
  // The .pt holds lm_head.weight as an alias of transformer.wte.weight: it loads strictly.
  check_sequence_model(model, *ref);
  torch::NoGradGuard no_grad;
  // Right padding: the positions that are tokens match Hugging Face's masked forward.
  const at::Tensor masked = model->forward(ref->get("input"), ref->get("attention_mask"));
  const at::Tensor keep = ref->get("attention_mask").to(at::kBool);  // (B, T)
  expect_parity(masked.index({keep}), ref->get("output_masked").index({keep}));
  // Through AnyModule (the trainer's view) the one-argument forward is causal, unmasked.
  torch::nn::AnyModule any(model);
  EXPECT_LE(max_diff(any.forward<at::Tensor>(ref->get("input")), ref->get("output")), kTol);
  // save_pretrained's model.safetensors (no lm_head.weight: tied) loads strictly into a fresh
  // model and gives the same logits.
  zoo::GPT2 hf(small_gpt2());
  const auto report = lathe::ckpt::load_weights(*hf, ref->dir / "hf" / "model.safetensors");
  EXPECT_TRUE(report.clean()) << report.summary();
  hf->eval();
  EXPECT_LE(max_diff(hf->forward(ref->get("input")), ref->get("output")), kTol);
}

// lathe's GELU (tanh) kernels against ATen's float kernels and against the formula in double:
// values over the whole float range, the tails where ATen's 1 + tanh(u) cancels, and NaN / ±inf.
TEST(Kernels, GeluTanhMatchesAtenForwardAndBackward) {
  at::manual_seed(0);
  const at::Tensor special = at::tensor({0.0f, 1e-3f, -1e-3f, 0.5f, -0.75f, 3.0f, -3.0f, 10.0f,
                                         -10.0f, 50.0f, -50.0f, 1e4f, -1e4f});
  // 3 × 128 × 513: more than one parallel chunk, and a length that is no multiple of a vector.
  const at::Tensor x = at::cat({at::randn({3 * 128 * 513}) * 4, special}).reshape({-1, 1});
  const at::Tensor grad = at::randn_like(x);

  const auto run = [&](const at::Tensor& in, bool lathe_kernel) {
    const at::Tensor leaf = in.detach().requires_grad_(true);
    const at::Tensor y = lathe_kernel ? zoo::gelu_tanh(leaf) : at::gelu(leaf, "tanh");
    y.backward(grad.to(in.scalar_type()));
    return std::pair{y.detach(), leaf.grad()};
  };
  const auto [y_aten, dx_aten] = run(x, false);
  const auto [y_exact, dx_exact] = run(x.to(at::kDouble), false);  // ATen in double: the truth

  // allclose's test, reported as a number: max(|a − b| − rtol·|b|) must stay under atol.
  const auto excess = [](const at::Tensor& a, const at::Tensor& b, double rtol) {
    const at::Tensor a64 = a.to(at::kDouble), b64 = b.to(at::kDouble);
    return ((a64 - b64).abs() - rtol * b64.abs()).max().item<double>();
  };
  // zoo::gelu_tanh with each side forced (LATHE_KERNELS=lathe / aten), and as auto chooses.
  for (const auto mode : {kernels::Mode::lathe, kernels::Mode::aten, kernels::Mode::automatic}) {
    SCOPED_TRACE(kernels::mode_name(mode));
    const kernels::ScopedMode forced(mode);
    const auto [y, dx] = run(x, true);
    // Against the double truth: a few float ulps; in the far negative tail (|y| < 1e-6) the float
    // rounding of u = x + 0.044715 x³ grows with |u|, hence the 1e-12 absolute. ATen's own
    // float kernel cancels there (below), so the aten side is held to that tolerance instead.
    if (mode == kernels::Mode::lathe) {
      EXPECT_LE(excess(y, y_exact, 4e-6), 1e-12);
      EXPECT_LE(excess(dx, dx_exact, 1e-5), 1e-6);
    }
    // Against ATen's float kernels, whose own 1 + tanh(u) cancels for x < -4 (it gives -0 at
    // x = -5.06 where the value is -1.5e-7): relative 1e-5, absolute 1e-6.
    EXPECT_LE(excess(y, y_aten, 1e-5), 1e-6);
    EXPECT_LE(excess(dx, dx_aten, 1e-5), 1e-5);
  }

  // NaN stays NaN, +inf gives +inf, -inf gives NaN (−inf · 0) — as ATen's.
  const at::Tensor odd = at::tensor({NAN, INFINITY, -INFINITY});
  const at::Tensor y_odd = zoo::gelu_tanh(odd), y_odd_aten = at::gelu(odd, "tanh");
  EXPECT_TRUE(at::equal(y_odd.isnan(), y_odd_aten.isnan()));
  EXPECT_EQ(y_odd[1].item<float>(), INFINITY);

  // What the kernel does not take runs ATen's gelu: a strided view, double, and a double backward.
  const at::Tensor strided = x.reshape({-1}).slice(0, 0, 1000, 2);
  EXPECT_TRUE(at::equal(zoo::gelu_tanh(strided), at::gelu(strided, "tanh")));
  const at::Tensor leaf = x.slice(0, 0, 64).detach().requires_grad_(true);
  const at::Tensor g1 = torch::autograd::grad({zoo::gelu_tanh(leaf).sum()}, {leaf}, {},
                                              /*retain_graph=*/true, /*create_graph=*/true)[0];
  const at::Tensor g2 = torch::autograd::grad({g1.sum()}, {leaf})[0];
  const at::Tensor leaf_aten = leaf.detach().requires_grad_(true);
  const at::Tensor g1_aten = torch::autograd::grad({at::gelu(leaf_aten, "tanh").sum()},
                                                   {leaf_aten}, {}, true, true)[0];
  EXPECT_TRUE(at::allclose(g2, torch::autograd::grad({g1_aten.sum()}, {leaf_aten})[0], 1e-4, 1e-5));
}

// lathe's BatchNorm2d against torch::nn::BatchNorm2d (ATen's): three training steps on the same
// batches — outputs, the three gradients, running statistics and num_batches_tracked — for NCHW
// batches of sizes that are no multiple of a vector (lathe's kernels) and small-plane and
// channels-last ones (ATen's, through the same module), then eval.
TEST(Kernels, BatchNormTrainsAsTorchsInEveryLayout) {
  at::manual_seed(0);
  struct Case {
    std::vector<int64_t> shape;
    bool channels_last;
  };
  for (const auto mode : {kernels::Mode::lathe, kernels::Mode::aten})  // each side forced
  for (const Case& c : {Case{{5, 7, 9, 11}, false}, Case{{3, 19, 32, 32}, false},
                        Case{{2, 5, 1, 65}, false}, Case{{64, 3, 1, 1}, false},
                        Case{{5, 7, 9, 11}, true}}) {
    SCOPED_TRACE(fmt::format("{} channels_last={} LATHE_KERNELS={}", c.shape, c.channels_last,
                             kernels::mode_name(mode)));
    const kernels::ScopedMode forced(mode);
    const int64_t C = c.shape[1];
    torch::nn::AnyModule ours{zoo::BatchNorm2d(C)}, torchs{torch::nn::BatchNorm2d(C)};
    for (auto* m : {&ours, &torchs}) {  // the same non-trivial affine parameters
      torch::NoGradGuard no_grad;
      auto params = m->ptr()->parameters();
      params[0].copy_(at::linspace(0.5, 1.5, C));
      params[1].copy_(at::linspace(-0.2, 0.3, C));
    }
    for (int step = 0; step < 3; ++step) {
      at::Tensor x = at::randn(c.shape) * 3 + 1;
      if (c.channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
      const at::Tensor g = at::randn(c.shape);
      std::vector<at::Tensor> out, grads;
      for (auto* m : {&ours, &torchs}) {
        const at::Tensor leaf = x.detach().requires_grad_(true);
        const at::Tensor y = m->forward(leaf);
        if (m == &ours) {  // lathe's kernels ran for NCHW planes of >= 64 values, else torch's
          EXPECT_EQ(y.grad_fn()->name().find("BatchNormFunction") != std::string::npos,
                    mode == kernels::Mode::lathe && !c.channels_last &&
                        c.shape[2] * c.shape[3] >= 64)
              << y.grad_fn()->name();
        }
        y.backward(g);
        out.push_back(y.detach());
        grads.push_back(leaf.grad());
        for (const auto& p : m->ptr()->parameters()) grads.push_back(p.grad().clone());
        m->ptr()->zero_grad();
      }
      EXPECT_TRUE(out[0].is_contiguous(x.suggest_memory_format()));
      EXPECT_TRUE(at::allclose(out[0], out[1], 1e-5, 1e-5));
      for (int k = 0; k < 3; ++k)  // d input, d weight, d bias
        EXPECT_TRUE(at::allclose(grads[k], grads[k + 3], 1e-4, 1e-4)) << "gradient " << k;
    }
    const auto buffers = ours.ptr()->named_buffers(), expected = torchs.ptr()->named_buffers();
    for (const auto& b : expected)  // running_mean, running_var, num_batches_tracked (= 3)
      EXPECT_TRUE(at::allclose(buffers[b.key()], b.value(), 1e-6, 1e-6)) << b.key();
    ours.ptr()->eval();
    torchs.ptr()->eval();
    const at::Tensor x = at::randn(c.shape);
    EXPECT_TRUE(at::allclose(ours.forward(x), torchs.forward(x), 1e-5, 1e-5));
  }
  // A double backward (create_graph) goes through ATen's differentiable backward.
  zoo::BatchNorm2d ours(4);
  torch::nn::BatchNorm2d torchs(4);
  const at::Tensor x = at::randn({3, 4, 5, 5});
  std::vector<at::Tensor> second;
  for (torch::nn::AnyModule m : {torch::nn::AnyModule(ours), torch::nn::AnyModule(torchs)}) {
    const at::Tensor leaf = x.detach().requires_grad_(true);
    const at::Tensor y = m.forward(leaf);
    const at::Tensor g = torch::autograd::grad({(y * y * y).sum()}, {leaf}, {}, true, true)[0];
    second.push_back(torch::autograd::grad({g.pow(2).sum()}, {leaf})[0]);
  }
  EXPECT_TRUE(at::allclose(second[0], second[1], 1e-3, 1e-4));
  // The module is torch's to everything that looks for one.
  EXPECT_NE(torch::nn::AnyModule(ours).ptr()->as<torch::nn::BatchNorm2d>(), nullptr);
}

// lathe's packed GEMM (models/packed_gemm.h) against at::mm in double, through the AVX-512 kernel
// and through at::addmm: row counts around its 4-row blocks, column counts around its 16-column
// panels and 32-column pairs (masked tails), W and Wᵀ, A and Aᵀ, overwrite and accumulate, leading
// dimensions larger than the matrices.
TEST(Kernels, PackedGemmMatchesMatmul) {
  at::manual_seed(0);
  for (const auto mode : {kernels::Mode::lathe, kernels::Mode::aten})  // each side forced
  for (const bool kernel : {true, false}) {
    const kernels::ScopedMode forced(mode);
    zoo::detail::set_packed_gemm_kernel(kernel);
    for (const int64_t m : {1, 3, 4, 6, 16}) {
      for (const int64_t k : {1, 7, 256}) {
        for (const int64_t n : {1, 15, 16, 17, 32, 33, 80}) {
          for (const bool transposed : {false, true}) {
            for (const bool accumulate : {false, true}) {
              for (const bool a_transposed : {false, true}) {
                SCOPED_TRACE(fmt::format("LATHE_KERNELS={} kernel {} m {} k {} n {} W transposed {} "
                                         "accumulate {} A transposed {}",
                                         kernels::mode_name(mode), kernel, m, k, n, transposed,
                                         accumulate, a_transposed));
                const at::Tensor w = transposed ? at::randn({n, k}) : at::randn({k, n});
                const zoo::PackedMatrix packed(w, transposed);
                ASSERT_EQ(packed.k(), k);
                ASSERT_EQ(packed.n(), n);
#if defined(__x86_64__)
                EXPECT_EQ(packed.runs_own_kernel(), kernel && __builtin_cpu_supports("avx512f"));
#endif
                // A (m, k) — or Aᵀ (k, m) — and C (m, n) inside wider rows: the columns past C's
                // must stay as they are.
                const at::Tensor stored = a_transposed ? at::randn({k, m + 2}) : at::randn({m, k + 3});
                const at::Tensor a = a_transposed ? stored.narrow(1, 0, m).t() : stored.narrow(1, 0, k);
                at::Tensor c = at::randn({m, n + 5});
                const at::Tensor before = c.clone();
                packed.multiply(stored.const_data_ptr<float>(), stored.size(1), m,
                                c.mutable_data_ptr<float>(), n + 5, accumulate, a_transposed);
                const at::Tensor op = (transposed ? w.t() : w).to(at::kDouble);
                at::Tensor expected = at::mm(a.to(at::kDouble), op);
                if (accumulate) expected += before.narrow(1, 0, n).to(at::kDouble);
                EXPECT_LE(
                    (c.narrow(1, 0, n).to(at::kDouble) - expected).abs().max().item<double>(),
                    1e-5 * std::sqrt(static_cast<double>(k)) * 4);
                EXPECT_TRUE(at::equal(c.narrow(1, n, 5), before.narrow(1, n, 5)));
              }
            }
          }
        }
      }
    }
  }
  zoo::detail::set_packed_gemm_kernel(true);
}

// lathe's LSTM (models/lstm.h) against torch::nn::LSTM on the same weights in float and in double
// (the truth): the output, the final state and every gradient — weights, biases, the input or the
// embedding, the initial state — for features and for token ids (through the (V, 4H) table, and
// without it when the vocabulary is larger than B·T), batch-first and time-major, with and without
// an initial state, through lathe's packed GEMM kernel and through at::addmm, each with
// LATHE_KERNELS=lathe and =aten forced. Sizes that are no multiple of a vector (B 5, H 19); and a
// sequence too short to pack for.
TEST(Lstm, MatchesTorchsForwardAndBackward) {
  struct Case {
    const char* name;
    int64_t vocab;  // 0: features
    bool batch_first, with_state, packed;
  };
  const int64_t B = 5, T = 13, I = 6, H = 19, L = 2;  // B·T ≥ 64: the weights are packed
  // allclose's test as a number: max(|a − b| − rtol·|b|), to stay under an absolute tolerance.
  const auto excess = [](const at::Tensor& a, const at::Tensor& b, double rtol) {
    const at::Tensor a64 = a.to(at::kDouble), b64 = b.to(at::kDouble);
    return ((a64 - b64).abs() - rtol * b64.abs()).max().item<double>();
  };
  for (const Case& c : {Case{"features", 0, true, false, true}, Case{"table", 11, true, true, true},
                        Case{"ids, no table", 500, false, true, true},
                        Case{"features, at::addmm", 0, false, true, false},
                        Case{"table, at::addmm", 11, true, false, false}})
  for (const auto mode : {kernels::Mode::lathe, kernels::Mode::aten}) {  // each side forced
    SCOPED_TRACE(fmt::format("{}, LATHE_KERNELS={}", c.name, kernels::mode_name(mode)));
    const kernels::ScopedMode forced(mode);
    zoo::detail::set_packed_gemm_kernel(c.packed);
    at::manual_seed(1);
    torch::nn::LSTM lstm(torch::nn::LSTMOptions(I, H).num_layers(L).batch_first(c.batch_first));
    const std::vector<int64_t> seq = c.batch_first ? std::vector<int64_t>{B, T}
                                                   : std::vector<int64_t>{T, B};
    const at::Tensor input = c.vocab ? at::randint(c.vocab, seq, at::kLong)
                                     : at::randn({seq[0], seq[1], I});
    const at::Tensor embedding = c.vocab ? at::randn({c.vocab, I}) : at::Tensor();
    const at::Tensor h0 = at::randn({L, B, H}) * 0.5, c0 = at::randn({L, B, H});
    const at::Tensor r_y = at::randn({seq[0], seq[1], H}), r_h = at::randn({L, B, H}),
                     r_c = at::randn({L, B, H});

    // One forward + backward of sum(y·r_y) + sum(h_n·r_h) + sum(c_n·r_c): the results, then the
    // gradients of the weights, the input (features or embedding), h0 and c0.
    const auto run = [&](torch::nn::LSTMImpl& m, at::ScalarType dtype, bool lathe_kernels) {
      m.to(dtype);
      m.zero_grad();
      const auto leaf = [&](const at::Tensor& t) { return t.detach().to(dtype).requires_grad_(true); };
      const at::Tensor in = c.vocab ? input : leaf(input);
      const at::Tensor emb = c.vocab ? leaf(embedding) : at::Tensor();
      zoo::LstmState state;
      if (c.with_state) state = {leaf(h0), leaf(c0)};
      EXPECT_EQ(zoo::lstm_runs_own_kernels(m, in, emb, state), dtype == at::kFloat);
      at::Tensor y;
      zoo::LstmState out;
      if (lathe_kernels) {
        std::tie(y, out) = zoo::lstm_forward(m, in, emb, state);
      } else {
        std::optional<std::tuple<at::Tensor, at::Tensor>> hx;
        if (c.with_state) hx = std::make_tuple(state.h, state.c);
        auto [o, hc] = m.forward(c.vocab ? at::embedding(emb, in) : in, hx);
        y = o;
        out = {std::get<0>(hc), std::get<1>(hc)};
      }
      ((y * r_y.to(dtype)).sum() + (out.h * r_h.to(dtype)).sum() + (out.c * r_c.to(dtype)).sum())
          .backward();
      std::vector<at::Tensor> results{y.detach(), out.h.detach(), out.c.detach()};
      for (const at::Tensor& w : m.all_weights()) results.push_back(w.grad());
      results.push_back(c.vocab ? emb.grad() : in.grad());
      if (c.with_state) {
        results.push_back(state.h.grad());
        results.push_back(state.c.grad());
      }
      return results;
    };
    const auto lathe = run(*lstm, at::kFloat, true);
    auto twin = std::dynamic_pointer_cast<torch::nn::LSTMImpl>(lstm->clone());
    const auto torch_float = run(*twin, at::kFloat, false);
    const auto truth = run(*twin, at::kDouble, false);
    ASSERT_EQ(lathe.size(), truth.size());
    for (size_t i = 0; i < lathe.size(); ++i) {
      SCOPED_TRACE(i);  // 0-2 y, h_n, c_n; 3-10 the weights' gradients; then input, h0, c0
      ASSERT_TRUE(lathe[i].defined());
      // Measured, max |difference| from the double result over the five cases: outputs lathe
      // 1.4e-7 (torch's float 7.3e-8), gradients lathe 2.3e-6 (torch's 5.4e-6).
      EXPECT_LE(excess(lathe[i], truth[i], 1e-5), 1e-5) << excess(torch_float[i], truth[i], 1e-5);
    }
  }
  zoo::detail::set_packed_gemm_kernel(true);
  const kernels::ScopedMode lathe_side(kernels::Mode::lathe);  // what follows is about lathe's

  // One step of one sequence, as generation runs: too few rows to pack for (at::addmm).
  {
    torch::nn::LSTM small(torch::nn::LSTMOptions(I, H).num_layers(L).batch_first(true));
    const at::Tensor x1 = at::randn({1, 1, I});
    ASSERT_TRUE(zoo::lstm_runs_own_kernels(*small, x1));
    EXPECT_LE((std::get<0>(zoo::lstm_forward(*small, x1)) - std::get<0>(small->forward(x1)))
                  .abs()
                  .max()
                  .item<double>(),
              1e-6);
  }

  // What runs torch's instead: a bidirectional LSTM, projections, double, an empty sequence.
  torch::nn::LSTM bi(torch::nn::LSTMOptions(I, H).bidirectional(true).batch_first(true));
  EXPECT_FALSE(zoo::lstm_runs_own_kernels(*bi, at::randn({B, T, I})));
  torch::nn::LSTM proj(torch::nn::LSTMOptions(I, H).proj_size(3).batch_first(true));
  EXPECT_FALSE(zoo::lstm_runs_own_kernels(*proj, at::randn({B, T, I})));
  torch::nn::LSTM lstm(torch::nn::LSTMOptions(I, H).num_layers(L).batch_first(true).dropout(0.5));
  EXPECT_FALSE(zoo::lstm_runs_own_kernels(*lstm, at::randn({B, T, I}, at::kDouble)));
  EXPECT_FALSE(zoo::lstm_runs_own_kernels(*lstm, at::randn({B, 0, I})));

  // Dropout between the layers in training; none in evaluation, where torch's result is met.
  const at::Tensor x = at::randn({B, T, I});
  const at::Tensor trained = std::get<0>(zoo::lstm_forward(*lstm, x));
  lstm->eval();
  const at::Tensor evaluated = std::get<0>(zoo::lstm_forward(*lstm, x));
  EXPECT_GT((trained - evaluated).abs().max().item<double>(), 1e-3);
  EXPECT_LE((evaluated - std::get<0>(lstm->forward(x))).abs().max().item<double>(), 1e-6);

  // A gradient penalty (create_graph): the gradient is differentiable and its own gradient is
  // torch's (the layer recomputed with ATen's LSTM for it). Still in eval mode: no dropout.
  const at::Tensor leaf = x.clone().requires_grad_(true);
  std::vector<at::Tensor> second;
  for (const bool own : {true, false}) {
    const at::Tensor y = own ? std::get<0>(zoo::lstm_forward(*lstm, leaf))
                             : std::get<0>(lstm->forward(leaf));
    const at::Tensor g = torch::autograd::grad({y.pow(2).sum()}, {leaf}, {}, true, true)[0];
    const auto gg = torch::autograd::grad({g.pow(2).sum()}, {leaf, lstm->all_weights()[1]});
    second.insert(second.end(), gg.begin(), gg.end());  // by the input, by weight_hh_l0
  }
  // The same through token ids and an embedding (the table path), by the embedding.
  const at::Tensor table = at::randn({11, I}).requires_grad_(true);
  const at::Tensor ids = at::randint(11, {B, T}, at::kLong);
  for (const bool own : {true, false}) {
    const at::Tensor y = own ? std::get<0>(zoo::lstm_forward(*lstm, ids, table))
                             : std::get<0>(lstm->forward(at::embedding(table, ids)));
    const at::Tensor g = torch::autograd::grad({y.pow(2).sum()}, {table}, {}, true, true)[0];
    second.push_back(torch::autograd::grad({g.pow(2).sum()}, {table})[0]);
  }
  for (const auto& [ours, theirs] : {std::pair{0, 2}, std::pair{1, 3}, std::pair{4, 5}}) {
    EXPECT_GT(second[theirs].abs().max().item<double>(), 0);
    EXPECT_LE((second[ours] - second[theirs]).abs().max().item<double>(),
              1e-5 * second[theirs].abs().max().item<double>());
  }
}

TEST(GPT2, IsCausalAndCountsLikeTransformers) {
  zoo::GPT2 model(small_gpt2().dropout(0.0));
  model->eval();
  torch::NoGradGuard no_grad;
  const at::Tensor ids = at::randint(0, 64, {1, 10}, at::kLong);
  at::Tensor changed = ids.clone();
  changed[0][9] = (ids[0][9].item<int64_t>() + 1) % 64;
  // Changing the last token changes no earlier position's logits.
  EXPECT_LE(max_diff(model->forward(ids).slice(1, 0, 9), model->forward(changed).slice(1, 0, 9)),
            0.0);
  // transformers GPT2LMHeadModel(GPT2Config()) (124M): lm_head tied, counted once.
  EXPECT_EQ(zoo::parameter_count(*zoo::GPT2()), 124439808);
  expect_error<ModelError>(
      [&] {
        model->forward(at::zeros({1, 33}, at::kLong));
      },
      {"gpt2", "33 tokens", "n_positions 32"});
}

TEST(GPT2, CachedLogitsEqualUncachedOverAGeneratedSequence) {
  zoo::GPT2 model(small_gpt2());
  model->eval();
  torch::NoGradGuard no_grad;
  // A prompt read in two parts (3 then 4 tokens: the second attends to a past), then 20 greedy
  // tokens one at a time through the cache; the logits at every position equal the uncached
  // forward's on the whole sequence.
  const at::Tensor prompt = at::randint(0, 64, {1, 7}, at::kLong);
  auto [first, cache] = model->forward_cached(prompt.slice(1, 0, 3));  // (1, 3, V)
  at::Tensor logits;
  std::tie(logits, cache) = model->forward_cached(prompt.slice(1, 3, 7), std::move(cache));
  std::vector<at::Tensor> cached{first, logits};
  at::Tensor seq = prompt;
  for (int i = 0; i < 20; ++i) {
    const at::Tensor next = logits.select(1, -1).argmax(-1, /*keepdim=*/true);  // (1, 1)
    seq = at::cat({seq, next}, 1);
    std::tie(logits, cache) = model->forward_cached(next, std::move(cache));
    cached.push_back(logits);
  }
  EXPECT_EQ(cache.length(), 27);
  EXPECT_EQ(cache.keys.front().sizes(), (std::vector<int64_t>{1, 4, 27, 8}));
  EXPECT_LE(max_diff(at::cat(cached, 1), model->forward(seq)), 1e-5);
  // Past n_positions (32): a ModelError, as the uncached forward's.
  expect_error<ModelError>([&] { model->forward_cached(at::zeros({1, 6}, at::kLong), cache); },
                           {"gpt2: 27 cached and 6 new tokens are more than n_positions 32"});
}

zoo::BertOptions small_bert() {
  return zoo::BertOptions()
      .vocab_size(64)
      .hidden_size(32)
      .num_hidden_layers(2)
      .num_attention_heads(4)
      .intermediate_size(64)
      .max_position_embeddings(32);
}

TEST(Bert, ClassifierMatchesTransformersWithPaddingMask) {
  const auto ref = reference("bert");
  zoo::BertClassifier model(zoo::BertClassifierOptions().bert(small_bert()).num_labels(3));
  load_reference(*model, *ref);
  model->eval();
  torch::NoGradGuard no_grad;
  expect_parity(
      model->forward(ref->get("input"), ref->get("attention_mask"), ref->get("token_type_ids")),
      ref->get("output"));
  // One argument (AnyModule): the mask comes from pad_token_id, token types are 0.
  torch::nn::AnyModule any(model);
  expect_parity(any.forward<at::Tensor>(ref->get("input")), ref->get("output_default"));
}

TEST(Bert, CountsLikeTransformers) {
  // transformers BertForSequenceClassification(BertConfig(num_labels=2)): bert-base-uncased.
  EXPECT_EQ(zoo::parameter_count(*zoo::BertClassifier()), 109483778);
  expect_error<ModelError>(
      [] { zoo::Bert(zoo::BertOptions().hidden_size(30).num_attention_heads(4)); },
      {"bert", "hidden_size 30", "num_attention_heads 4"});
}

TEST(Bert, LoadsRealAllMiniLmL6V2AndMatchesTransformers) {
  const auto ref = reference("minilm");  // sentence-transformers' all-MiniLM-L6-v2 (PyPI package)
  zoo::Bert model(zoo::BertOptions()
                      .hidden_size(384)
                      .num_hidden_layers(6)
                      .num_attention_heads(12)
                      .intermediate_size(1536));
  // The file predates transformers' non-persistent position_ids buffer and still carries it;
  // Hugging Face skips it on load, so do we. Everything else loads unchanged.
  const auto report = lathe::ckpt::load_weights(*model, ref->weights(), /*strict=*/false);
  EXPECT_TRUE(report.missing.empty() && report.mismatched.empty()) << report.summary();
  EXPECT_EQ(report.unexpected, std::vector<std::string>{"embeddings.position_ids"});
  EXPECT_EQ(zoo::parameter_count(*model), ref->params);
  model->eval();
  torch::NoGradGuard no_grad;
  const at::Tensor mask = ref->get("attention_mask");
  const at::Tensor hidden =
      model->forward(ref->get("input"), mask, ref->get("token_type_ids"));  // (B, T, 384)
  // Padding positions' states are not used by anyone; compare the tokens.
  const at::Tensor keep = mask.to(at::kBool);
  expect_parity(hidden.index({keep}), ref->get("output").index({keep}));
  expect_parity(model->pool(hidden), ref->get("pooled"));
  // The sentence embedding: mean over tokens, L2-normalised.
  const at::Tensor m = mask.unsqueeze(-1).to(at::kFloat);  // (B, T, 1)
  const at::Tensor mean = (hidden * m).sum(1) / m.sum(1);  // (B, 384)
  expect_parity(mean / mean.norm(2, -1, true), ref->get("embedding"));
}

TEST(ViT, MatchesTorchvision) {
  const auto ref = reference("vit");
  zoo::ViT model(zoo::ViTOptions()
                     .image_size(32)
                     .patch_size(8)
                     .num_layers(2)
                     .num_heads(4)
                     .hidden_dim(32)
                     .mlp_dim(64)
                     .dropout(0.1)
                     .attention_dropout(0.1)
                     .num_classes(10));
  load_reference(*model, *ref);
  model->eval();
  torch::NoGradGuard no_grad;
  const at::Tensor out = model->forward(ref->get("input"));
  expect_parity(out, ref->get("output"));
  EXPECT_TRUE(out.equal(model->forward(ref->get("input"))));  // dropout off in eval
  model->train();
  EXPECT_FALSE(model->forward(ref->get("input")).equal(out));  // and on in train
}

TEST(ViT, CountsLikeTorchvision) {
  EXPECT_EQ(zoo::parameter_count(*zoo::ViT()), 86567656);  // torchvision vit_b_16()
  expect_error<ModelError>([] { zoo::ViT(zoo::ViTOptions().image_size(30)); },
                           {"vit", "image_size 30", "patch_size 16"});
}

// ---- Tabular -----------------------------------------------------------------------------------

TEST(Tabular, MlpWithBatchNormMatchesTorch) {
  const auto ref = reference("mlp");
  zoo::MLP model(zoo::MLPOptions()
                     .in_features(7)
                     .hidden({16, 8})
                     .out_features(3)
                     .activation("gelu")
                     .batch_norm(true));
  check_batchnorm_model(model, *ref);  // eval parity, train-mode output and BN buffers
}

TEST(Tabular, LinearModelAndItsPenaltyMatchTorch) {
  const auto ref = reference("linear");
  zoo::LinearModel model(zoo::LinearModelOptions().in_features(5).out_features(2).l1(0.01).l2(0.1));
  load_reference(*model, *ref);
  expect_parity(model->forward(ref->get("input")), ref->get("output"));
  const at::Tensor penalty = zoo::penalty_of(*model);
  EXPECT_LE(max_diff(penalty, ref->get("penalty")), 1e-6);
  // Differentiable, bias untouched: d/dW = l1 · sign(W) + 2 · l2 · W.
  penalty.backward();
  const at::Tensor w = model->linear->weight.detach();
  EXPECT_LE(max_diff(model->linear->weight.grad(), 0.01 * w.sign() + 0.2 * w), 1e-6);
  EXPECT_FALSE(model->linear->bias.grad().defined());
  // Models without a penalty give an undefined tensor: nothing to add to the loss.
  EXPECT_FALSE(zoo::penalty_of(*zoo::MLP(zoo::MLPOptions().in_features(5))).defined());
}

TEST(Tabular, TrainerMinimisesTheLassoPenalty) {
  // Two informative features of 8; with a strong L1 penalty the other weights go to ~0.
  torch::manual_seed(0);
  const at::Tensor x = at::randn({256, 8});
  const at::Tensor y = (x.select(1, 0) + x.select(1, 1) > 0).to(at::kLong);  // (256,)
  const auto weights_after = [&](double l1) {
    torch::manual_seed(1);
    auto model = zoo::build_model(lathe::config::parse_model_section(
        "logistic_regression", {"in_features=8", fmt::format("l1={}", l1)}));
    lathe::config::OptimSection opt;
    opt.name = "sgd";
    opt.lr = 0.1;
    opt.momentum = 0.0;
    auto optimizer = lathe::optim::make_optimizer(opt, *model.ptr());
    lathe::config::TrainerSection ts;
    ts.max_epochs = 30;
    ts.progress = "none";
    lathe::data::TensorLoader loader({x, y}, 64, /*shuffle=*/true, 0);
    lathe::train::Trainer trainer(ts, c10::kCPU, model, lathe::train::Task(), optimizer,
                                  lathe::train::make_schedules(opt, 30 * 4, 4));
    trainer.fit(loader, nullptr);
    return model.ptr()->as<zoo::LinearModel>()->linear->weight.detach().clone();  // (2, 8)
  };
  const at::Tensor plain = weights_after(0.0), lasso = weights_after(0.02);
  const auto noise = [](const at::Tensor& w) { return w.slice(1, 2).abs().sum().item<double>(); };
  EXPECT_LT(noise(lasso), 0.5 * noise(plain));  // the penalty reached the optimizer
}

TEST(Tabular, BadOptionsAreModelErrors) {
  expect_error<ModelError>([] { zoo::MLP(zoo::MLPOptions().activation("swish")); },
                           {"mlp", "activation 'swish'", "relu, gelu, tanh"});
  expect_error<ModelError>([] { zoo::LinearModel(zoo::LinearModelOptions().l1(-1)); },
                           {"linear", "l1 (-1)"});
  zoo::MLP m(zoo::MLPOptions().in_features(4));
  expect_error<ModelError>([&] { m->forward(at::zeros({2, 5})); }, {"mlp", "(B, 4)", "[2, 5]"});
}

// ---- registry ----------------------------------------------------------------------------------

/// One zoo model at small size for the registry tests: its name, config options, an input of
/// the shape it takes and the output shape it gives.
struct RegistryCase {
  std::string name;
  std::vector<std::string> options;
  at::Tensor input;
  std::vector<int64_t> out;
};

std::vector<RegistryCase> registry_cases() {
  const at::Tensor image = at::randn({2, 3, 32, 32});
  const at::Tensor ids = at::randint(1, 20, {2, 6}, at::kLong);
  return {
      {"convnet", {"num_classes=4", "channels=[4]", "hidden=8"}, at::randn({2, 1, 28, 28}), {2, 4}},
      {"resnet18", {"num_classes=4", "small_input=true"}, image, {2, 4}},
      {"resnet34", {"num_classes=4", "layers=[1, 1, 1, 1]"}, image, {2, 4}},
      {"resnet50", {"num_classes=4", "layers=[1, 1, 1, 1]"}, image, {2, 4}},
      {"resnet101", {"num_classes=4", "layers=[1, 1, 1, 1]"}, image, {2, 4}},
      {"resnet152", {"num_classes=4", "layers=[1, 1, 1, 1]"}, image, {2, 4}},
      {"mobilenet_v2", {"num_classes=4", "width_mult=0.25"}, image, {2, 4}},
      {"lstm_classifier",
       {"vocab_size=20", "hidden_size=8", "bidirectional=true", "pad_id=0"},
       ids,
       {2, 2}},
      {"gru_classifier",
       {"input_size=3", "hidden_size=8", "num_layers=2", "num_classes=5"},
       at::randn({2, 6, 3}),
       {2, 5}},
      {"lstm_lm", {"vocab_size=20", "hidden_size=8"}, ids, {2, 6, 20}},
      {"gru_lm", {"vocab_size=20", "hidden_size=8", "num_layers=1"}, ids, {2, 6, 20}},
      {"gpt2",
       {"vocab_size=20", "n_positions=8", "n_embd=16", "n_layer=1", "n_head=2"},
       ids,
       {2, 6, 20}},
      {"llama",
       {"vocab_size=20", "hidden_size=16", "intermediate_size=24", "num_hidden_layers=1",
        "num_attention_heads=4", "num_key_value_heads=2", "sliding_window=4"},
       ids,
       {2, 6, 20}},
      {"bert_classifier",
       {"vocab_size=20", "hidden_size=16", "num_hidden_layers=1", "num_attention_heads=2",
        "intermediate_size=32", "num_labels=3"},
       ids,
       {2, 3}},
      {"bert",
       {"vocab_size=20", "hidden_size=16", "num_hidden_layers=1", "num_attention_heads=2",
        "intermediate_size=32", "add_pooling_layer=false"},
       ids,
       {2, 6, 16}},
      {"vit",
       {"image_size=32", "patch_size=8", "num_layers=1", "num_heads=2", "hidden_dim=16",
        "mlp_dim=32", "num_classes=4"},
       image,
       {2, 4}},
      {"mlp", {"in_features=5", "hidden=[8]", "out_features=2"}, at::randn({2, 5}), {2, 2}},
      {"linear_regression", {"in_features=5"}, at::randn({2, 5}), {2, 1}},
      {"logistic_regression", {"in_features=5", "out_features=3"}, at::randn({2, 5}), {2, 3}},
      {"lasso", {"in_features=5", "l1=0.1"}, at::randn({2, 5}), {2, 1}},
      {"ridge", {"in_features=5"}, at::randn({2, 5}), {2, 1}},
  };
}

TEST(Registry, EveryModelBuildsFromConfigOptionsAndRuns) {
  const auto cases = registry_cases();
  // Every torch-module entry of the table (estimators such as xgboost are not torch modules).
  const auto& specs = zoo::model_specs();
  const auto torch_models = std::count_if(specs.begin(), specs.end(),
                                          [](const auto& s) { return !s.estimator; });
  ASSERT_EQ(static_cast<std::ptrdiff_t>(cases.size()), torch_models) << "a zoo model has no case here";
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto model = zoo::build_model(lathe::config::parse_model_section(c.name, c.options));
    model.ptr()->eval();
    torch::NoGradGuard no_grad;
    EXPECT_EQ(model.forward<at::Tensor>(c.input).sizes(), at::IntArrayRef(c.out));
  }
}

TEST(Cuda, EveryModelGivesItsCpuOutputOnTheGpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  // fp32 without TF32 on both sides, so the CPU tolerance applies.
  at::globalContext().setAllowTF32CuDNN(false);
  at::globalContext().setAllowTF32CuBLAS(false);
  for (const auto& c : registry_cases()) {
    SCOPED_TRACE(c.name);
    auto model = zoo::build_model(lathe::config::parse_model_section(c.name, c.options));
    model.ptr()->eval();
    torch::NoGradGuard no_grad;
    const at::Tensor cpu = model.forward<at::Tensor>(c.input);
    model.ptr()->to(at::kCUDA);
    const at::Tensor gpu = model.forward<at::Tensor>(c.input.to(at::kCUDA));
    EXPECT_TRUE(gpu.is_cuda());
    EXPECT_LE(max_diff(gpu.cpu(), cpu), kTol);
  }
}

TEST(Registry, UnknownOptionsAndNamesAreConfigErrors) {
  expect_error<lathe::ConfigError>(
      [] { zoo::build_model(lathe::config::parse_model_section("resnet18", {"num_clases=3"})); },
      {"num_clases", "num_classes"});
  expect_error<lathe::ConfigError>(
      [] { zoo::build_model(lathe::config::parse_model_section("resnet19", {})); },
      {"unknown model 'resnet19'", "resnet18"});
  // The penalty reaches the trainer through AnyModule.
  auto lasso = zoo::build_model(lathe::config::parse_model_section("lasso", {"in_features=3"}));
  EXPECT_TRUE(zoo::penalty_of(*lasso.ptr()).defined());
}

// ---- activation checkpointing (model.gradient_checkpointing) ---------------------------------

namespace {

/// One train-mode forward and backward of a zoo model built from `options` with a fixed seed:
/// every parameter's gradient, every buffer afterwards, and how many pieces were checkpointed.
struct TrainPass {
  std::vector<at::Tensor> grads, buffers;
  int64_t checkpointed = 0;
};

TrainPass train_pass(const std::string& name, std::vector<std::string> options,
                     const at::Tensor& input, bool checkpointing) {
  options.push_back(fmt::format("gradient_checkpointing={}", checkpointing));
  lathe::seed_everything(5);
  auto model = zoo::build_model(lathe::config::parse_model_section(name, options));
  model.ptr()->train();
  lathe::seed_everything(6);  // the dropout masks: recomputing must draw the same ones
  const int64_t before = zoo::checkpointed_calls();
  model.forward<at::Tensor>(input).sin().sum().backward();
  TrainPass pass;
  pass.checkpointed = zoo::checkpointed_calls() - before;
  for (const auto& p : model.ptr()->parameters()) pass.grads.push_back(p.grad().clone());
  for (const auto& b : model.ptr()->buffers()) pass.buffers.push_back(b.clone());
  return pass;
}

}  // namespace

TEST(GradientCheckpointing, BertVitAndResNetGiveThePlainGradients) {
  // Dropout on for bert and vit (the recompute replays the forward's RNG state); ResNet in
  // train mode with BatchNorm, whose running statistics must be updated once, not twice.
  const at::Tensor ids = at::randint(1, 20, {2, 6}, at::kLong);
  const at::Tensor image = at::randn({2, 3, 32, 32});
  const std::vector<std::string> bert = {"vocab_size=20", "hidden_size=16",
                                         "num_hidden_layers=2", "num_attention_heads=2",
                                         "intermediate_size=32", "hidden_dropout_prob=0.2",
                                         "attention_probs_dropout_prob=0.2"};
  struct Case {
    std::string name;
    std::vector<std::string> options;
    at::Tensor input;
    int64_t pieces;  ///< checkpointed encoder layers / blocks
  };
  std::vector<Case> cases = {
      {"bert_classifier", bert, ids, 2},
      {"bert", bert, ids, 2},
      {"vit",
       {"image_size=32", "patch_size=8", "num_layers=2", "num_heads=2", "hidden_dim=16",
        "mlp_dim=32", "num_classes=4", "dropout=0.2", "attention_dropout=0.2"},
       image, 2},
      {"resnet18", {"num_classes=4", "small_input=true"}, image, 8},
      {"resnet50", {"num_classes=4", "layers=[1, 2, 1, 1]"}, image, 5},
  };
  cases[0].options.push_back("num_labels=3");
  cases[1].options.push_back("add_pooling_layer=false");  // every parameter gets a gradient
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const TrainPass plain = train_pass(c.name, c.options, c.input, false);
    const TrainPass recomputed = train_pass(c.name, c.options, c.input, true);
    EXPECT_EQ(plain.checkpointed, 0);
    EXPECT_EQ(recomputed.checkpointed, c.pieces);
    ASSERT_EQ(plain.grads.size(), recomputed.grads.size());
    double worst = 0;
    for (size_t i = 0; i < plain.grads.size(); ++i)
      worst = std::max(worst, max_diff(plain.grads[i], recomputed.grads[i]));
    EXPECT_LE(worst, 1e-6);
    ASSERT_EQ(plain.buffers.size(), recomputed.buffers.size());
    for (size_t i = 0; i < plain.buffers.size(); ++i)
      EXPECT_TRUE(plain.buffers[i].equal(recomputed.buffers[i])) << "buffer " << i;
    std::printf("[ metric   ] %s: max |grad(checkpointed) - grad(plain)| = %.3g\n",
                c.name.c_str(), worst);
  }
}

TEST(GradientCheckpointing, TheKeyIsAnErrorNamingModelsWithoutIt) {
  // Every zoo model (at the registry cases' small sizes): it builds and runs with the key, or
  // refuses it naming itself and the models that take it.
  std::vector<std::string> taking;
  for (auto c : registry_cases()) {
    SCOPED_TRACE(c.name);
    c.options.push_back("gradient_checkpointing=true");
    const auto section = lathe::config::parse_model_section(c.name, c.options);
    if (!zoo::model_spec(section).gradient_checkpointing) {
      expect_error<lathe::ConfigError>([&] { zoo::build_model(section); },
                                       {"model.gradient_checkpointing",
                                        fmt::format("model '{}' has no activation checkpointing",
                                                    c.name),
                                        "gpt2, llama, bert_classifier, bert, vit"});
      continue;
    }
    taking.push_back(c.name);
    auto model = zoo::build_model(section);
    model.ptr()->train();
    const int64_t before = zoo::checkpointed_calls();
    at::Tensor out = model.forward<at::Tensor>(c.input);
    EXPECT_EQ(out.sizes(), at::IntArrayRef(c.out));
    EXPECT_GT(zoo::checkpointed_calls(), before);  // it really recomputes
  }
  EXPECT_EQ(taking, (std::vector<std::string>{"resnet18", "resnet34", "resnet50", "resnet101",
                                              "resnet152", "gpt2", "llama", "bert_classifier",
                                              "bert", "vit"}));
}

// ---- weights files ---------------------------------------------------------------------------

TEST(TorchPickle, ReadsDtypesViewsAliasesAndWrappedStateDicts) {
  const auto ref = reference("pt_files");
  const auto loaded = lathe::ckpt::load_torch_state_dict(ref->dir / "wrapped.pt");
  ASSERT_EQ(static_cast<int64_t>(loaded.size()), ref->params);  // the "state_dict" entry
  for (const auto& [name, t] : loaded) {
    const at::Tensor want = ref->get(name);
    EXPECT_EQ(t.scalar_type(), want.scalar_type()) << name;
    EXPECT_TRUE(t.equal(want)) << name;  // bit-exact, views included
  }
  // Views of one storage stay views of one tensor, as in Python.
  const auto get = [&](const std::string& n) {
    for (const auto& [k, v] : loaded)
      if (k == n) return v;
    return at::Tensor();
  };
  EXPECT_EQ(get("transposed").data_ptr(), get("base").data_ptr());
  expect_error<CheckpointError>(
      [&] { lathe::ckpt::load_torch_state_dict(ref->dir / "not_tensors.pt"); },
      {"not_tensors.pt", "entry 'epoch' is not a tensor"});
  expect_error<CheckpointError>(
      [&] { lathe::ckpt::load_torch_state_dict(ref->dir / "legacy.pt"); },
      {"legacy.pt", "not a readable torch.save archive", "_use_new_zipfile_serialization=False"});
}

TEST(TorchPickle, ErrorsNameTheFile) {
  TempDir dir;
  zoo::ResNet net(zoo::ResNetOptions().depth(18).num_classes(3));
  expect_error<CheckpointError>([&] { lathe::ckpt::load_weights_any(*net, dir / "none.pt"); },
                                {"none.pt", "no such weights file"});
  lathe::testing::write_text(dir / "junk.pt", "not a zip archive");
  expect_error<CheckpointError>([&] { lathe::ckpt::load_torch_state_dict(dir / "junk.pt"); },
                                {"junk.pt", "not a readable torch.save archive"});
  expect_error<CheckpointError>([&] { lathe::ckpt::load_weights_any(*net, dir / "w.npz"); },
                                {"w.npz", "unknown weights format '.npz'"});
}
