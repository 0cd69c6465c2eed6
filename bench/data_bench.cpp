// data_bench: lathe's DataLoader against torch.utils.data.DataLoader (num_workers=2), same machine,
// same data and transforms; prints batches/s, images/s and the ratios.
//
//   build/dev/bench/data_bench [--python .venv/bin/python] [--script bench/data_bench.py]
//                              [--batches 300] [--images 512]      (run from the repository root)
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "bench/bench_util.h"
#include "lathe/core/error.h"
#include "lathe/data/idx.h"
#include "lathe/data/image.h"
#include "lathe/data/loader.h"
#include "lathe/data/transforms.h"

namespace fs = std::filesystem;
namespace tf = lathe::data::transforms;
using namespace lathe::data;

namespace {

constexpr const char* kFashion = "/usr/share/datasets/fashion-mnist";

/// (batches/s, records/s) over at most max_batches batches after one warm-up batch.
std::pair<double, double> rate(DataLoader& loader, int64_t max_batches) {
  loader.set_epoch(0);
  loader.next();
  const auto t0 = std::chrono::steady_clock::now();
  int64_t batches = 0, records = 0;
  while (auto b = loader.next()) {
    ++batches;
    records += b->size();
    if (batches >= max_batches) break;
  }
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return {static_cast<double>(batches) / dt, static_cast<double>(records) / dt};
}

/// `n` 500x375 JPEGs (ImageNet's typical size) of smooth colour fields with noise, quality 90.
void write_jpegs(const fs::path& dir, int n) {
  fs::create_directories(dir);
  std::mt19937 rng(0);
  const at::Tensor y = at::arange(375, at::kFloat).view({1, 375, 1});
  const at::Tensor x = at::arange(500, at::kFloat).view({1, 1, 500});
  for (int i = 0; i < n; ++i) {
    const at::Tensor f =
        at::tensor({7.0f + static_cast<float>(rng() % 9), 9.0f, 13.0f}).view({3, 1, 1});
    at::Tensor img = 128 + 100 * at::sin(x / f + y / (f + 4) + static_cast<float>(rng() % 7));
    img = (img + 8 * at::randn({3, 375, 500})).clamp(0, 255).to(at::kByte);  // (3, 375, 500)
    std::ofstream(dir / fmt::format("{:05d}.jpg", i), std::ios::binary) << encode_jpeg(img, 90);
  }
}

/// The JPEGs of a folder as a dataset: (3, H, W) uint8, target 0.
class JpegFiles : public Dataset {
 public:
  explicit JpegFiles(const fs::path& dir) {
    for (const auto& e : fs::directory_iterator(dir)) files_.push_back(e.path());
    std::sort(files_.begin(), files_.end());
  }
  int64_t size() const override { return static_cast<int64_t>(files_.size()); }
  Example get(int64_t i) const override {
    return {read_image(files_[static_cast<size_t>(i)]), at::scalar_tensor(0, at::kLong)};
  }

 private:
  std::vector<fs::path> files_;
};

}  // namespace

int main(int argc, char** argv) try {
  std::string python = ".venv/bin/python", script = "bench/data_bench.py";
  int64_t max_batches = 300;
  int images = 512;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--python")
      python = argv[i + 1];
    else if (a == "--script")
      script = argv[i + 1];
    else if (a == "--batches")
      max_batches = std::stoll(argv[i + 1]);
    else if (a == "--images")
      images = std::stoi(argv[i + 1]);
  }
  const fs::path jpeg_dir = fs::temp_directory_path() / fmt::format("lathe-bench-jpegs-{}", images);
  if (!fs::exists(jpeg_dir / fmt::format("{:05d}.jpg", images - 1))) write_jpegs(jpeg_dir, images);
  fmt::print(
      "data_bench: {} cores; Fashion-MNIST (batch 128, random crop 28 pad 4 + flip + "
      "normalise), {} JPEGs 500x375 (decode + random resized crop 224 + flip)\n",
      std::thread::hardware_concurrency(), images);

  // Fashion-MNIST: [0, 1] floats in memory, the transforms per record in the workers.
  const IdxSplit train = load_idx_split(kFashion, "train");
  auto fashion =
      std::make_shared<TensorSource>(TensorDataset{images_to_float(train.images), train.labels});
  const Transform fashion_tf =
      compose({tf::random_crop(28, 4), tf::horizontal_flip(), tf::normalize({0.286}, {0.353})});
  DataLoader fl(fashion, LoaderOptions()
                             .with_batch_size(128)
                             .with_shuffle(true)
                             .with_seed(1)
                             .with_num_workers(2)
                             .with_transform(fashion_tf));
  const double ours_fashion = rate(fl, max_batches).first;

  auto jpegs = std::make_shared<JpegFiles>(jpeg_dir);
  const Transform jpeg_tf = compose({tf::random_resized_crop(224), tf::horizontal_flip()});
  const auto jpeg_rate = [&](int workers) {
    DataLoader jl(jpegs, LoaderOptions()
                             .with_batch_size(32)
                             .with_shuffle(true)
                             .with_seed(1)
                             .with_num_workers(workers)
                             .with_transform(jpeg_tf));
    return rate(jl, 1 << 30).second;
  };
  const double ours_jpeg = jpeg_rate(2), ours_jpeg_core = jpeg_rate(1);  // 1 worker = 1 core
  // Decode alone, one thread: how much of the per-image time the JPEG decoder takes.
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < jpegs->size(); ++i) jpegs->get(i);
  const double decode_only =
      static_cast<double>(jpegs->size()) /
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  const auto py = nlohmann::json::parse(lathe::bench::run_command(fmt::format("{} {} {} {} {} 2>&1", python, script,
                                                        kFashion, jpeg_dir.string(), max_batches)));
  const double py_fashion = py["fashion_batches_per_s"], py_jpeg = py["jpeg_images_per_s"],
               py_jpeg_core = py["jpeg_images_per_s_core"];
  fmt::print("{:<46} {:>10} {:>10} {:>7}\n", "", "lathe", "PyTorch", "ratio");
  fmt::print("{:<46} {:>10.1f} {:>10.1f} {:>6.2f}x\n", "Fashion-MNIST batches/s (2 workers)",
             ours_fashion, py_fashion, ours_fashion / py_fashion);
  fmt::print("{:<46} {:>10.1f} {:>10.1f} {:>6.2f}x\n", "JPEG decode+crop+flip images/s (2 workers)",
             ours_jpeg, py_jpeg, ours_jpeg / py_jpeg);
  fmt::print("{:<46} {:>10.1f} {:>10.1f} {:>6.2f}x\n", "JPEG decode+crop+flip images/s (1 thread)",
             ours_jpeg_core, py_jpeg_core, ours_jpeg_core / py_jpeg_core);
  fmt::print("{:<46} {:>10.1f}\n", "JPEG decode only images/s (1 thread)", decode_only);
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "data_bench: {}\n", e.what());
  return 1;
}
