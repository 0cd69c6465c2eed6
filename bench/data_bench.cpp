// data_bench: lathe's DataLoader against torch.utils.data.DataLoader (num_workers=2), same machine,
// same data and transforms; prints batches/s, images/s and the ratios. The JPEG rows run lathe
// twice: decoding the whole image then cropping (torchvision's order) and decoding only the crop
// (decode_random_resized_crop, the same pixels, with the flip done by its resize), then a
// one-thread split of an image's time.
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
  const fs::path& file(int64_t i) const { return files_[static_cast<size_t>(i)]; }

 private:
  std::vector<fs::path> files_;
};

/// The same JPEGs as encoded bytes, (N,) uint8 each, target 0: decoding happens in the transform
/// (decode_random_resized_crop), which then decodes only the crop.
class JpegBytes : public Dataset {
 public:
  explicit JpegBytes(const JpegFiles& files) : files_(files) {}
  int64_t size() const override { return files_.size(); }
  Example get(int64_t i) const override {
    const fs::path& f = files_.file(i);
    at::Tensor bytes = at::empty({static_cast<int64_t>(fs::file_size(f))}, at::kByte);
    std::ifstream(f, std::ios::binary)
        .read(reinterpret_cast<char*>(bytes.data_ptr<uint8_t>()), bytes.numel());
    return {bytes, at::scalar_tensor(0, at::kLong)};
  }

 private:
  const JpegFiles& files_;
};

/// Seconds since t0.
double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

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
  auto jpeg_bytes = std::make_shared<JpegBytes>(*jpegs);
  // Decode the whole image, then crop (as torchvision does) / decode only the crop and resize
  // its rows as they are decoded, mirrored by the resize with the flip's draw (the same pixels:
  // tests/unit/test_data_image.cpp).
  const Transform jpeg_tf = compose({tf::random_resized_crop(224), tf::horizontal_flip()});
  const Transform fused_tf = tf::decode_random_resized_crop(
      224, {0.08, 1.0}, {3.0 / 4.0, 4.0 / 3.0}, /*channels=*/3, /*min_side=*/0, /*max_pixels=*/0,
      /*hflip=*/0.5);
  const auto jpeg_rate = [&](std::shared_ptr<const Dataset> data, const Transform& t, int workers) {
    DataLoader jl(std::move(data), LoaderOptions()
                                       .with_batch_size(32)
                                       .with_shuffle(true)
                                       .with_seed(1)
                                       .with_num_workers(workers)
                                       .with_transform(t));
    return rate(jl, 1 << 30).second;
  };
  const double ours_jpeg = jpeg_rate(jpegs, jpeg_tf, 2), ours_jpeg_core = jpeg_rate(jpegs, jpeg_tf, 1);
  const double ours_fused = jpeg_rate(jpeg_bytes, fused_tf, 2),
               ours_fused_core = jpeg_rate(jpeg_bytes, fused_tf, 1);  // 1 worker = 1 core

  // Where one image's time goes, one thread, the same boxes for both decoders (seconds summed
  // over the images): read, whole decode, window decode, crop + resize, flip.
  at::set_num_threads(1);  // as in a loader worker
  double t_read = 0, t_whole = 0, t_window = 0, t_resize = 0, t_flip = 0, t_fused = 0;
  // What a window cannot skip: the two top rows (almost nothing decoded), the two bottom rows
  // (every row above entropy-decoded, only two through the inverse DCT and colour conversion).
  double t_top = 0, t_bottom = 0;
  for (int64_t i = 0; i < jpegs->size(); ++i) {
    auto t0 = std::chrono::steady_clock::now();
    const at::Tensor bytes = jpeg_bytes->get(i).input;
    const std::string_view enc(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()),
                               static_cast<size_t>(bytes.numel()));
    t_read += since(t0);
    t0 = std::chrono::steady_clock::now();
    const at::Tensor whole = decode_image(enc, "bench");
    t_whole += since(t0);
    Rng rng(static_cast<uint64_t>(i));
    const tf::Box box = tf::random_resized_box(whole.size(1), whole.size(2), rng, {0.08, 1.0},
                                               {3.0 / 4.0, 4.0 / 3.0});
    t0 = std::chrono::steady_clock::now();
    const at::Tensor window =
        decode_image_window(enc, "bench", [&](int64_t, int64_t) { return box; });
    t_window += since(t0);
    t0 = std::chrono::steady_clock::now();
    const at::Tensor resized = tf::resize_image(window, 224, 224);
    t_resize += since(t0);
    t0 = std::chrono::steady_clock::now();
    const at::Tensor flipped = resized.flip({-1});
    t_flip += since(t0);
    t0 = std::chrono::steady_clock::now();  // what the loader runs: rows resized as decoded
    decode_image_window_resized(enc, "bench", [&](int64_t, int64_t) { return box; }, 224, 224);
    t_fused += since(t0);
    t0 = std::chrono::steady_clock::now();
    decode_image_window(enc, "bench", [](int64_t, int64_t w) { return tf::Box{0, 0, 2, w}; });
    t_top += since(t0);
    t0 = std::chrono::steady_clock::now();
    decode_image_window(enc, "bench", [](int64_t h, int64_t w) { return tf::Box{h - 2, 0, 2, w}; });
    t_bottom += since(t0);
  }
  const double n_images = static_cast<double>(jpegs->size());
  const double decode_only = n_images / t_whole;

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
  fmt::print("{:<46} {:>10.1f} {:>10.1f} {:>6.2f}x\n", "JPEG crop-only decode+flip images/s (2 workers)",
             ours_fused, py_jpeg, ours_fused / py_jpeg);
  fmt::print("{:<46} {:>10.1f} {:>10.1f} {:>6.2f}x\n", "JPEG crop-only decode+flip images/s (1 thread)",
             ours_fused_core, py_jpeg_core, ours_fused_core / py_jpeg_core);
  fmt::print("{:<46} {:>10.1f}\n", "JPEG decode only images/s (1 thread)", decode_only);
  fmt::print(
      "time per image, 1 thread (ms): read {:.2f}, whole decode {:.2f}, crop-only decode {:.2f}, "
      "resize to 224 {:.2f}, flip {:.2f}\n",
      1e3 * t_read / n_images, 1e3 * t_whole / n_images, 1e3 * t_window / n_images,
      1e3 * t_resize / n_images, 1e3 * t_flip / n_images);
  fmt::print("crop-only decode + resize in one pass (decode_image_window_resized) {:.2f} ms\n",
             1e3 * t_fused / n_images);
  fmt::print("decode of the 2 top rows {:.2f} ms, of the 2 bottom rows {:.2f} ms (entropy decoding)\n",
             1e3 * t_top / n_images, 1e3 * t_bottom / n_images);
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "data_bench: {}\n", e.what());
  return 1;
}
