// register_model: a user's model registered by name, so that a YAML config trains it through
// lathe::run::train_from_config (its sizes filled from the data like a zoo model's) and
// lathe::run::export_run exports the finished run to ONNX. With --devices N the training runs
// data-parallel: this program starts itself N times as ranks (lathe::dist::launch_local).
// Prints "fact: key=value" lines that scripts/examples.sh checks.
//
//   register_model run.yaml OUT_DIR [--devices N]
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "lathe/ckpt/safetensors.h"
#include "lathe/ckpt/state_dict.h"
#include "lathe/config/config.h"
#include "lathe/core/error.h"
#include "lathe/dist/launch.h"
#include "lathe/dist/process_group.h"
#include "lathe/run/export.h"
#include "lathe/run/run.h"
#include "models/registry.h"

namespace fs = std::filesystem;

// ---- the user's model: features (B, F) → hidden → logits (B, K) --------------------------
struct BlobNetImpl : torch::nn::Module {
  BlobNetImpl(int64_t in_features, int64_t hidden, int64_t classes)
      : fc1(register_module("fc1", torch::nn::Linear(in_features, hidden))),
        fc2(register_module("fc2", torch::nn::Linear(hidden, classes))) {}
  at::Tensor forward(const at::Tensor& x) { return fc2(at::relu(fc1(x))); }  // (B, F) -> (B, K)
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(BlobNet);

// Registers blob_net: its options (in_features and num_classes default to `auto`: the data says
// them), how to build it, and its ONNX inputs.
void register_blob_net() {
  using lathe::models::DataSize;
  lathe::models::register_model(
      {"blob_net",
       "two linear layers for tabular data (the register_model example)",
       {{"in_features", DataSize::in_features}, {"num_classes", DataSize::classes}},
       [](const lathe::config::Params& p) {
         BlobNet net(p.get_int("in_features", 4), p.get_int("hidden", 16),
                     p.get_int("num_classes", 2));
         p.check_all_used();  // a misspelt option is a ConfigError naming file and line
         return torch::nn::AnyModule(net);
       }},
      [](const torch::nn::Module& m, const lathe::models::SignatureSizes&) {
        const int64_t features = dynamic_cast<const BlobNetImpl&>(m).fc1->options.in_features();
        return lathe::models::ModelSignature{{{"features", {2, features}, 0, {{0, "batch"}}}},
                                             "logits"};
      });
}

// Three Gaussian blobs in 4 dimensions, 200 records each, class names as strings.
void write_blobs(const fs::path& file) {
  std::mt19937_64 rng(7);
  std::normal_distribution<double> noise(0.0, 0.6);
  const char* names[] = {"north", "south", "west"};
  const double centers[3][4] = {{2, 0, 0, 1}, {-2, 0, 1, 0}, {0, 2, -1, -1}};
  std::ofstream out(file);
  out << "x0,x1,x2,x3,label\n";
  for (int i = 0; i < 600; ++i) {
    const int c = i % 3;
    for (int d = 0; d < 4; ++d) out << centers[c][d] + noise(rng) << ",";
    out << names[c] << "\n";
  }
}

int main(int argc, char** argv) try {
  if (argc != 3 && !(argc == 5 && std::string(argv[3]) == "--devices")) {
    std::fprintf(stderr, "usage: register_model run.yaml OUT_DIR [--devices N]\n");
    return 2;
  }
  const fs::path config_file = argv[1], out = fs::absolute(argv[2]);
  const int devices = argc == 5 ? std::atoi(argv[4]) : 1;
  const bool is_rank = std::getenv("RANK") != nullptr;  // started by launch_local below
  register_blob_net();  // every process that reads the config registers the model first

  const std::vector<std::string> overrides = {"data.path=" + (out / "blobs.csv").string(),
                                              "run.dir=" + out.string()};
  if (!is_rank) {
    fs::create_directories(out);
    write_blobs(out / "blobs.csv");
  }
  if (is_rank || devices == 1) {  // train: one process, or one rank of several
    const auto result =
        lathe::run::train_from_config(lathe::config::load_config(config_file, overrides));
    if (lathe::dist::world_from_env().is_main()) {
      std::printf("fact: world_size=%d\n", lathe::dist::world_from_env().size);
      std::printf("fact: first_loss=%.6f\n", result.history.front().train.at("loss"));
      std::printf("fact: last_loss=%.6f\n", result.history.back().train.at("loss"));
      std::printf("fact: test_accuracy=%.6f\n", result.test.at("accuracy"));
    }
    if (is_rank) return 0;
  } else {
    const int rc = lathe::dist::launch_local({argv[0], argv[1], argv[2], "--devices", argv[4]},
                                             {.processes = devices});
    if (rc != 0) return rc;
  }

  // The resolved config says what the data filled in.
  const fs::path run_dir = out / "blob_net";
  const auto resolved = lathe::config::load_config(run_dir / "config.yaml");
  std::printf("fact: in_features=%lld\n",
              static_cast<long long>(resolved.model.params.get_int("in_features", 0)));
  std::printf("fact: num_classes=%lld\n",
              static_cast<long long>(resolved.model.params.get_int("num_classes", 0)));

  // Export the run as `lathe export` would; a probe through the trained weights for the check.
  const auto report = lathe::run::export_run(run_dir, {});
  std::printf("fact: onnx=%s\n", report.path.c_str());
  auto model = lathe::models::build_model(resolved.model);
  lathe::ckpt::load_weights(*model.ptr(), run_dir / "model.safetensors");
  model.ptr()->eval();
  const at::Tensor probe = at::randn({6, 4});
  at::Tensor logits;
  {
    at::NoGradGuard no_grad;
    logits = model.forward<at::Tensor>(probe);
  }
  lathe::ckpt::save_safetensors(out / "probe.safetensors", {{"input", probe}, {"output", logits}});
  std::printf("fact: probe=%s\n", (out / "probe.safetensors").c_str());

  // A misspelt option of the user's model is an error that names it.
  try {
    lathe::models::build_model(lathe::config::load_config(config_file, {"model.hiden=8"}).model);
  } catch (const lathe::ConfigError& e) {
    std::printf("fact: misspelt_option_error=%s\n", e.what());
  }
  return 0;
} catch (const lathe::Error& e) {
  std::fprintf(stderr, "register_model: %s\n", e.what());
  return 1;
}
