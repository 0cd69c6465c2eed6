// Data: JPEG/PNG decoding, the image folder, and image transforms against PIL and torchvision.
#include <random>
#include <sstream>

#include <ATen/ATen.h>

#include "lathe/core/error.h"
#include "lathe/core/kernel_choice.h"
#include "lathe/data/image.h"
#include "lathe/data/loader.h"
#include "lathe/data/resize.h"
#include "lathe/data/transforms.h"
#include "tests/unit/data_support.h"

using lathe::DataError;
using lathe::testing::expect_error;
using lathe::testing::TempDir;
using namespace lathe::data;
namespace tf = lathe::data::transforms;

namespace {

/// A raw file of `shape` values of `dtype`.
at::Tensor read_raw(const std::filesystem::path& file, std::vector<int64_t> shape,
                    at::ScalarType dtype) {
  std::string bytes = lathe::testing::read_text(file);
  return at::from_blob(bytes.data(), shape, dtype).clone();
}

/// A (3, h, w) uint8 test pattern whose every pixel is distinct in some channel.
at::Tensor pattern(int64_t h, int64_t w) {
  return at::arange(3 * h * w).remainder(251).to(at::kByte).view({3, h, w});
}

}  // namespace

TEST(Image, FolderDecodesLikePilAndNamesBadFiles) {
  TempDir dir;
  lathe::testing::run_oracle("image_oracle.py", dir);
  ImageFolder folder(dir / "folder");
  EXPECT_EQ(folder.classes(), (std::vector<std::string>{"cat", "dog", "empty"}));
  ASSERT_EQ(folder.size(), 4);  // notes.txt is not an image
  EXPECT_EQ(folder.label(3), 1);
  const Example grey_png = folder.get(1);
  EXPECT_EQ(grey_png.input.sizes(), (std::vector<int64_t>{3, 33, 27}));  // grey → RGB
  EXPECT_TRUE(grey_png.input[0].equal(grey_png.input[2]));
  // JPEG: TurboJPEG and PIL (libjpeg-turbo too) decode to the same pixels, within 1.
  const at::Tensor dog = folder.get(2).input;  // (3, 64, 48)
  const at::Tensor pil = read_raw(dir / "dog0.rgb", {64, 48, 3}, at::kByte).permute({2, 0, 1});
  EXPECT_LE((dog.to(at::kInt) - pil.to(at::kInt)).abs().max().item<int>(), 1);
  EXPECT_EQ(folder.get(2).target.item<int64_t>(), 1);
  // PNG is lossless: round trip through our encoder and decoder.
  const at::Tensor p = pattern(5, 7);
  EXPECT_TRUE(decode_image(encode_png(p), "p.png").equal(p));
  EXPECT_TRUE(decode_image(encode_png(p.narrow(0, 0, 1)), "g.png", 1).equal(p.narrow(0, 0, 1)));
  // Reduced-scale JPEG decoding: 64x48 → 1/2 keeps the short side >= 20.
  EXPECT_EQ(read_image(folder.file(2), 3, 20).sizes(), (std::vector<int64_t>{3, 32, 24}));

  // Bad files: named, or skipped and counted.
  const std::string jpg = lathe::testing::read_text(folder.file(2));
  std::filesystem::create_directories(dir / "bad" / "x");
  lathe::testing::write_text(dir / "bad" / "x" / "cut.jpg", jpg.substr(0, jpg.size() / 3));
  lathe::testing::write_text(dir / "bad" / "x" / "fake.png", "not a png at all");
  lathe::testing::write_text(dir / "bad" / "x" / "ok.jpg", jpg);
  ImageFolder bad(dir / "bad");
  expect_error<DataError>([&] { bad.get(0); }, {"cut.jpg", "JPEG"});
  expect_error<DataError>([&] { bad.get(1); }, {"fake.png", "neither a JPEG nor a PNG"});
  DataLoader loader(std::make_shared<ImageFolder>(dir / "bad"),
                    LoaderOptions().with_batch_size(3).with_num_workers(1));
  expect_error<DataError>([&] { loader.next(); }, {"record 0", "cut.jpg"});
  ImageFolder skipping(dir / "bad", ImageFolderOptions{.skip_bad_files = true});
  EXPECT_EQ(skipping.size(), 1);
  EXPECT_EQ(skipping.skipped(), 2);
  expect_error<DataError>([&] { ImageFolder(dir / "nowhere"); }, {"nowhere: no such folder"});
}

TEST(Image, ResizeMatchesTorchvisionAntialiased) {
  TempDir dir;
  lathe::testing::run_oracle("image_oracle.py", dir);
  const at::Tensor cat = read_image(dir / "folder" / "cat" / "0.png");  // (3, 40, 52)
  for (auto [h, w] : {std::pair<int64_t, int64_t>{13, 21}, {70, 90}}) {
    const at::Tensor u8 = tf::resize_image(cat, h, w);
    const at::Tensor ref_u8 =
        read_raw(dir / fmt::format("resize_u8_{}x{}.bin", h, w), {3, h, w}, at::kByte);
    EXPECT_EQ(u8.scalar_type(), at::kByte);
    EXPECT_LE((u8.to(at::kInt) - ref_u8.to(at::kInt)).abs().max().item<int>(), 1) << h << "x" << w;
    const at::Tensor f = tf::resize_image(cat.to(at::kFloat).div(255), h, w);
    const at::Tensor ref_f =
        read_raw(dir / fmt::format("resize_f32_{}x{}.bin", h, w), {3, h, w}, at::kFloat);
    EXPECT_TRUE(at::allclose(f, ref_f, 1e-5, 1e-6)) << h << "x" << w;
  }
}

TEST(Image, Uint8ResizeMatchesTorchvisionOverCrops) {
  // lathe's uint8 kernel (src/data/resize.cpp) against torchvision's Resize(antialias=True) on
  // uint8 tensors, over 90 crops of one image (random_resized_crop's boxes to 224, growing,
  // shrinking by 50x, one axis only, one column, one channel). Stated tolerance: +-1 per pixel;
  // the kernel uses PyTorch's int16 weights and rounding, so every pixel is in fact equal.
  TempDir dir;
  lathe::testing::run_oracle("resize_oracle.py", dir);
  const at::Tensor planar = read_raw(dir / "image.bin", {3, 375, 500}, at::kByte);
  // The decoders' layout: (C, H, W) strides over (H, W, C) pixels.
  const at::Tensor interleaved = planar.permute({1, 2, 0}).contiguous().permute({2, 0, 1});
  const std::string all = lathe::testing::read_text(dir / "resized.bin");
  std::istringstream cases(lathe::testing::read_text(dir / "cases.txt"));
  int64_t offset = 0, n = 0, top, left, h, w, oh, ow, c;
  while (cases >> top >> left >> h >> w >> oh >> ow >> c) {
    const at::Tensor ref =
        at::from_blob(const_cast<char*>(all.data()) + offset, {c, oh, ow}, at::kByte);
    offset += c * oh * ow;
    for (const at::Tensor& image : {planar, interleaved}) {
      const at::Tensor crop = image.narrow(0, 0, c).narrow(1, top, h).narrow(2, left, w);
      const at::Tensor ours = tf::resize_image(crop, oh, ow);
      ASSERT_EQ(ours.sizes(), ref.sizes());
      EXPECT_LE((ours.to(at::kInt) - ref.to(at::kInt)).abs().max().item<int>(), 1)
          << "case " << n << ": " << h << "x" << w << " -> " << oh << "x" << ow << " c " << c;
      EXPECT_TRUE(ours.equal(ref)) << "case " << n;
    }
    ++n;
  }
  EXPECT_EQ(n, 90);
  EXPECT_EQ(offset, static_cast<int64_t>(all.size()));
  // And against LibTorch's own kernel (the same code as PyTorch's) over 300 random sizes.
  std::mt19937 gen(11);
  for (int i = 0; i < 300; ++i) {
    const int64_t ih = 1 + gen() % 375, iw = 1 + gen() % 500, ch = gen() % 2 == 0 ? 1 : 3;
    const int64_t th = 1 + gen() % 300, tw = 1 + gen() % 300;
    const at::Tensor crop = interleaved.narrow(0, 0, ch).narrow(1, 0, ih).narrow(2, 0, iw);
    const at::Tensor ref = at::_upsample_bilinear2d_aa(crop.unsqueeze(0), {th, tw}, false).squeeze(0);
    for (const auto mode : {lathe::kernels::Mode::lathe, lathe::kernels::Mode::aten}) {
      const lathe::kernels::ScopedMode forced(mode);  // each side of the kernel choice
      ASSERT_TRUE(tf::resize_image(crop, th, tw).equal(ref))
          << ih << "x" << iw << " -> " << th << "x" << tw << " c " << ch << " LATHE_KERNELS="
          << lathe::kernels::mode_name(mode);
    }
    // The portable loops (CPUs without AVX2) give the same pixels.
    ASSERT_TRUE(lathe::data::detail::resize_uint8(crop, th, tw, /*vectorised=*/false).equal(ref))
        << ih << "x" << iw << " -> " << th << "x" << tw << " c " << ch << " (portable)";
    // Mirrored by the resize, row by row in chunks of 7: the flip of the same pixels.
    for (const bool vectorised : {true, false}) {
      lathe::data::detail::RowResizer r(static_cast<int>(ch), ih, iw, th, tw, /*mirror=*/true,
                                        vectorised);
      const at::Tensor hwc = crop.permute({1, 2, 0}).contiguous();  // (ih, iw, ch)
      for (int64_t y = 0; y < ih; y += 7)
        r.push(hwc.data_ptr<uint8_t>() + y * iw * ch, std::min<int64_t>(7, ih - y), iw * ch,
               iw * ch);
      ASSERT_TRUE(r.finish().equal(ref.flip({-1})))
          << ih << "x" << iw << " -> " << th << "x" << tw << " c " << ch << " mirrored";
    }
  }
}

TEST(Image, JpegWindowDecodesTheSamePixelsAsTheWholeImageCropped) {
  TempDir dir;
  lathe::testing::run_oracle("image_oracle.py", dir);
  Rng rng(3);
  int windows = 0;
  for (const char* name : {"s444", "s422", "s420", "progressive", "grey"}) {
    const std::string jpg = lathe::testing::read_text(dir / "window" / fmt::format("{}.jpg", name));
    for (const int channels : {3, 1}) {
      for (const int min_side : {0, 30}) {  // full size, and a DCT scale of 1/2 or less
        const at::Tensor whole = decode_image(jpg, name, channels, min_side);  // (C, H, W)
        const int64_t h = whole.size(1), w = whole.size(2);
        std::vector<tf::Box> boxes = {{0, 0, h, w}, {0, 0, 1, 1}, {h - 1, w - 1, 1, 1},
                                      {h / 2, 0, h - h / 2, w / 3}, {1, w - 17, h - 2, 17}};
        for (int i = 0; i < 40; ++i)
          boxes.push_back(tf::random_resized_box(h, w, rng, {0.02, 1.0}, {0.3, 3.0}));
        for (const tf::Box& b : boxes) {
          const at::Tensor win = decode_image_window(
              jpg, name, [&](int64_t, int64_t) { return b; }, channels, min_side);
          const at::Tensor crop = whole.narrow(1, b.top, b.height).narrow(2, b.left, b.width);
          ASSERT_TRUE(win.equal(crop))
              << name << " channels " << channels << " min_side " << min_side << " box "
              << b.top << "," << b.left << " " << b.height << "x" << b.width;
          // Decoded and resized in one pass: LibTorch's resize of the crop, pixel for pixel.
          const at::Tensor resized = decode_image_window_resized(
              jpg, name, [&](int64_t, int64_t) { return b; }, 19, 24, channels, min_side);
          ASSERT_TRUE(resized.equal(
              at::_upsample_bilinear2d_aa(crop.unsqueeze(0), {19, 24}, false).squeeze(0)))
              << name << " channels " << channels << " min_side " << min_side << " box "
              << b.top << "," << b.left << " " << b.height << "x" << b.width << " resized";
          ++windows;
        }
      }
    }
  }
  EXPECT_EQ(windows, 5 * 2 * 2 * 45);
  // The fused transform draws the box random_resized_crop draws: the same pixels.
  const std::string jpg = lathe::testing::read_text(dir / "window" / "s420.jpg");
  const at::Tensor bytes = at::from_blob(const_cast<char*>(jpg.data()),
                                         {static_cast<int64_t>(jpg.size())}, at::kByte);
  int mirrored = 0;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    Rng a(seed), b(seed);
    const at::Tensor fused = tf::decode_random_resized_crop(32)(bytes, a);
    EXPECT_TRUE(fused.equal(tf::random_resized_crop(32)(decode_image(jpg, "s420"), b))) << seed;
    // With the flip done by the resize: the same draws and pixels as crop, then horizontal_flip.
    Rng c(seed), d(seed);
    const at::Tensor flipped =
        tf::decode_random_resized_crop(32, {0.08, 1.0}, {0.75, 4.0 / 3}, 3, 0, 0, 0.5)(bytes, c);
    const at::Tensor plain = tf::random_resized_crop(32)(decode_image(jpg, "s420"), d);
    EXPECT_TRUE(flipped.equal(tf::horizontal_flip(0.5)(plain, d))) << seed;
    mirrored += flipped.equal(plain) ? 0 : 1;
    EXPECT_EQ(c(), d()) << "the same number of draws";
  }
  EXPECT_GT(mirrored, 3);
  EXPECT_LT(mirrored, 17);
  // A window outside the image, a cut file and bytes that are no image are DataErrors.
  expect_error<DataError>(
      [&] { decode_image_window(jpg, "w.jpg", [](int64_t, int64_t) { return tf::Box{0, 90, 10, 10}; }); },
      {"w.jpg", "window 10x10 at (0, 90) is not inside the 123x95 image"});
  expect_error<DataError>(
      [&] {
        decode_image_window(jpg.substr(0, jpg.size() / 2), "cut.jpg",
                            [](int64_t h, int64_t w) { return tf::Box{0, 0, h, w}; });
      },
      {"cut.jpg", "JPEG"});
  expect_error<DataError>([&] { tf::decode_random_resized_crop(8)(at::zeros({3, 4, 4}, at::kByte), rng); },
                          {"wants an encoded image as 1-D uint8 bytes"});
}

TEST(Transforms, CropsFlipNormaliseAreSeededAndCorrect) {
  const at::Tensor img = pattern(10, 12);
  Rng rng(1);
  // random_crop with padding: the result is a window of the zero-padded image.
  const at::Tensor padded = at::constant_pad_nd(img, {2, 2, 2, 2}, 0);  // (3, 14, 16)
  for (int i = 0; i < 20; ++i) {
    const at::Tensor c = tf::random_crop(8, 2)(img, rng);
    ASSERT_EQ(c.sizes(), (std::vector<int64_t>{3, 8, 8}));
    bool found = false;
    for (int64_t t = 0; t <= 6 && !found; ++t)
      for (int64_t l = 0; l <= 8 && !found; ++l)
        found = padded.narrow(1, t, 8).narrow(2, l, 8).equal(c);
    EXPECT_TRUE(found);
  }
  // Flip: p=1 mirrors, p=0 keeps; p=0.5 flips about half the time.
  EXPECT_TRUE(tf::horizontal_flip(1.0)(img, rng).equal(img.flip({2})));
  EXPECT_TRUE(tf::horizontal_flip(0.0)(img, rng).equal(img));
  int flips = 0;
  for (int i = 0; i < 1000; ++i) flips += tf::horizontal_flip()(img, rng).equal(img) ? 0 : 1;
  EXPECT_NEAR(flips, 500, 60);
  // Same seed, same draws.
  Rng a(99), b(99);
  const Transform aug = compose({tf::random_resized_crop(6), tf::horizontal_flip()});
  EXPECT_TRUE(aug(img, a).equal(aug(img, b)));
  // Normalise after to_float.
  const at::Tensor n = compose({tf::to_float(), tf::normalize({0.5}, {0.25})})(
      at::full({1, 2, 2}, 255, at::kByte), rng);
  EXPECT_FLOAT_EQ(n[0][0][0].item<float>(), 2.0f);
  EXPECT_EQ(tf::center_crop(4)(img, rng).sizes(), (std::vector<int64_t>{3, 4, 4}));
  EXPECT_TRUE(tf::center_crop(4)(img, rng).equal(img.narrow(1, 3, 4).narrow(2, 4, 4)));
  expect_error<DataError>([&] { tf::random_crop(20)(img, rng); },
                          {"20x20 crop does not fit a 10x12"});
}

TEST(Transforms, RandomResizedBoxFollowsTorchvisionRules) {
  Rng rng(5);
  double area_sum = 0;
  for (int i = 0; i < 2000; ++i) {
    const tf::Box b = tf::random_resized_box(100, 200, rng, {0.08, 1.0}, {3.0 / 4, 4.0 / 3});
    ASSERT_GE(b.top, 0);
    ASSERT_GE(b.left, 0);
    ASSERT_LE(b.top + b.height, 100);
    ASSERT_LE(b.left + b.width, 200);
    const double ratio = static_cast<double>(b.width) / static_cast<double>(b.height);
    EXPECT_GE(ratio, 0.75 - 0.05);
    EXPECT_LE(ratio, 4.0 / 3 + 0.05);
    area_sum += static_cast<double>(b.width * b.height) / 20000.0;
  }
  // torchvision's get_params on a 100x200 image: mean area fraction 0.3045 (20000 draws,
  // standard error 0.001); 2000 draws here have a standard error of about 0.003.
  EXPECT_NEAR(area_sum / 2000, 0.3045, 0.012);
  // No box fits a 1:10 strip with ratio in [3/4, 4/3] and scale 1: the centred fallback.
  const tf::Box f = tf::random_resized_box(10, 100, rng, {1.0, 1.0}, {3.0 / 4, 4.0 / 3});
  EXPECT_EQ(f.height, 10);
  EXPECT_EQ(f.width, 13);  // round(10 * 4/3)
  EXPECT_EQ(f.left, (100 - 13) / 2);
}
