// Checkpoint I/O benchmark, C++ side: save + load of a ResNet-50-sized state dict through lathe's
// safetensors writer (atomic: temp file, fsync, rename) and reader (a memory map), and the load
// followed by a copy into a model's tensors (load_weights). The file was just written, so it is in
// the page cache (warm), as torch.load's is on the Python side. Prints seconds as JSON;
// bench/ckpt_bench.py runs it beside torch.save / torch.load and prints the ratio.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "lathe/ckpt/safetensors.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: ckpt_bench FOLDER REPEATS\n");
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  const int repeats = std::stoi(argv[2]);
  at::set_num_threads(1);  // as the Python side
  // The conv, BatchNorm-affine and fc shapes of torchvision's resnet50: 147 tensors, 23M float32
  // values (91 MB).
  lathe::ckpt::NamedTensors sd;
  const int64_t widths[] = {256, 512, 1024, 2048};
  const int blocks[] = {3, 4, 6, 3};
  sd.emplace_back("conv1.weight", at::randn({64, 3, 7, 7}));
  int64_t in = 64;
  for (int s = 0; s < 4; ++s) {
    const int64_t out = widths[s], mid = out / 4;
    for (int b = 0; b < blocks[s]; ++b) {
      const std::string p = "layer" + std::to_string(s + 1) + "." + std::to_string(b) + ".";
      sd.emplace_back(p + "conv1.weight", at::randn({mid, b == 0 ? in : out, 1, 1}));
      sd.emplace_back(p + "conv2.weight", at::randn({mid, mid, 3, 3}));
      sd.emplace_back(p + "conv3.weight", at::randn({out, mid, 1, 1}));
      for (const char* bn : {"bn1", "bn2", "bn3"}) {
        const int64_t c = std::string(bn) == "bn3" ? out : mid;
        sd.emplace_back(p + bn + ".weight", at::randn({c}));
        sd.emplace_back(p + bn + ".bias", at::randn({c}));
      }
    }
    in = out;
  }
  sd.emplace_back("fc.weight", at::randn({1000, 2048}));
  sd.emplace_back("fc.bias", at::randn({1000}));

  // A model's parameters to load into (what load_weights does: a copy into each).
  std::vector<at::Tensor> params;
  for (const auto& [n, t] : sd) params.push_back(at::empty_like(t));
  double best_save = 1e30, best_load = 1e30, best_into = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto file = dir / "bench.safetensors";
    auto t0 = std::chrono::steady_clock::now();
    lathe::ckpt::save_safetensors(file, sd);
    auto t1 = std::chrono::steady_clock::now();
    {
      const auto loaded = lathe::ckpt::load_safetensors(file);
      if (loaded.tensors.size() != sd.size()) return 1;
    }  // the tensors (and the mapping under them) go before the clock stops, as in Python
    auto t2 = std::chrono::steady_clock::now();
    {
      const auto loaded = lathe::ckpt::load_safetensors(file);
      for (size_t i = 0; i < params.size(); ++i) params[i].copy_(loaded.tensors[i].second);
    }
    auto t3 = std::chrono::steady_clock::now();
    best_save = std::min(best_save, std::chrono::duration<double>(t1 - t0).count());
    best_load = std::min(best_load, std::chrono::duration<double>(t2 - t1).count());
    best_into = std::min(best_into, std::chrono::duration<double>(t3 - t2).count());
  }
  if (!params.back().equal(sd.back().second)) return 1;
  int64_t values = 0;
  for (const auto& [n, t] : sd) values += t.numel();
  std::printf(
      "{\"save_s\": %.6f, \"load_s\": %.6f, \"load_into_s\": %.6f, \"tensors\": %zu, "
      "\"values\": %lld}\n",
      best_save, best_load, best_into, sd.size(), static_cast<long long>(values));
  return 0;
}
