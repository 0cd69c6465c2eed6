// Image transforms: conversions, normalisation, crops (fixed, random, random-resized), flip,
// resize.
#include "lathe/data/transforms.h"

#include <cmath>
#include <string>

#include <ATen/ops/_upsample_bilinear2d_aa.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/flip.h>
#include <ATen/ops/tensor.h>
#include <fmt/ranges.h>

#include "lathe/core/error.h"
#include "lathe/core/kernel_choice.h"
#include "lathe/data/image.h"
#include "lathe/data/resize.h"

namespace lathe::data::transforms {
namespace {

void check_image(const at::Tensor& x, const char* what) {
  LATHE_CHECK(x.dim() == 3, DataError, "{} wants a (C, H, W) image, got shape {}", what, x.sizes());
}

/// An integer drawn uniformly from [lo, hi), as Python's torch.randint(lo, hi).
int64_t randint(Rng& rng, int64_t lo, int64_t hi) {
  return lo + static_cast<int64_t>(uniform(rng, 0.0, static_cast<double>(hi - lo)));
}

/// The window `box` of (C, H, W), zero-padded where it leaves the image.
at::Tensor crop(const at::Tensor& x, Box box) {
  const int64_t h = x.size(1), w = x.size(2);
  const int64_t pad_top = std::max<int64_t>(0, -box.top);
  const int64_t pad_left = std::max<int64_t>(0, -box.left);
  const int64_t pad_bottom = std::max<int64_t>(0, box.top + box.height - h);
  const int64_t pad_right = std::max<int64_t>(0, box.left + box.width - w);
  at::Tensor src = x;
  if (pad_top || pad_left || pad_bottom || pad_right) {
    src = at::constant_pad_nd(x, {pad_left, pad_right, pad_top, pad_bottom}, 0);
    box.top += pad_top;
    box.left += pad_left;
  }
  return src.narrow(1, box.top, box.height).narrow(2, box.left, box.width);  // a view
}

}  // namespace

Transform to_float() {
  return [](at::Tensor x, Rng&) {
    return x.scalar_type() == at::kByte ? x.to(at::kFloat).div_(255.0) : x;
  };
}

Transform normalize(std::vector<double> mean, std::vector<double> std) {
  LATHE_CHECK(!mean.empty() && mean.size() == std.size(), DataError,
              "normalize: {} mean and {} std values; give one per channel (or one for all)",
              mean.size(), std.size());
  for (double s : std) LATHE_CHECK(s > 0, DataError, "normalize: std {} must be positive", s);
  const at::Tensor m = at::tensor(mean).to(at::kFloat).view({-1, 1, 1});  // (C, 1, 1)
  const at::Tensor s = at::tensor(std).to(at::kFloat).view({-1, 1, 1});
  return [m, s](at::Tensor x, Rng&) {
    check_image(x, "normalize");
    LATHE_CHECK(at::isFloatingType(x.scalar_type()), DataError,
                "normalize wants a float image (put to_float() before it), got {}",
                c10::toString(x.scalar_type()));
    LATHE_CHECK(m.size(0) == 1 || m.size(0) == x.size(0), DataError,
                "normalize has {} channel values for a {}-channel image", m.size(0), x.size(0));
    return x.sub(m).div_(s);  // (C, H, W)
  };
}

Transform random_crop(int64_t size, int64_t padding) {
  LATHE_CHECK(size > 0 && padding >= 0, DataError,
              "random_crop: size {} must be positive and padding {} non-negative", size, padding);
  return [size, padding](at::Tensor x, Rng& rng) {
    check_image(x, "random_crop");
    const int64_t h = x.size(1) + 2 * padding, w = x.size(2) + 2 * padding;
    LATHE_CHECK(h >= size && w >= size, DataError,
                "random_crop: a {}x{} crop does not fit a {}x{} image padded by {}", size, size,
                x.size(1), x.size(2), padding);
    const int64_t top = randint(rng, 0, h - size + 1), left = randint(rng, 0, w - size + 1);
    return crop(x, {top - padding, left - padding, size, size});
  };
}

Transform horizontal_flip(double p) {
  return [p](at::Tensor x, Rng& rng) { return uniform(rng, 0.0, 1.0) < p ? x.flip({-1}) : x; };
}

at::Tensor resize_image(const at::Tensor& image, int64_t height, int64_t width) {
  check_image(image, "resize");
  LATHE_CHECK(height > 0 && width > 0 && width <= kMaxResizedPixels / height, DataError,
              "resize: a {}x{} image would become {}x{}, over the {} pixels a resized image may "
              "have (an extreme aspect ratio?); crop or drop the image",
              image.size(1), image.size(2), height, width, kMaxResizedPixels);
  if (image.size(1) == height && image.size(2) == width) return image;
  LATHE_CHECK(image.size(1) > 0 && image.size(2) > 0, DataError, "resize: an empty {}x{} image",
              image.size(1), image.size(2));
  // (1, C, H, W) → (1, C, height, width): ATen's kernel.
  const auto aten = [&] {
    return at::_upsample_bilinear2d_aa(image.unsqueeze(0), {height, width},
                                       /*align_corners=*/false)
        .squeeze(0);
  };
  // uint8 (the decoders' output): lathe's kernel, PyTorch's uint8 arithmetic bit for bit
  // (lathe/data/resize.h), or ATen's, whichever the first call of the shape class — the channels, the
  // output size, each axis's scale as a power of two — times faster (lathe/core/kernel_choice.h).
  // Float and other images: ATen's.
  if (image.scalar_type() != at::kByte || !image.device().is_cpu() || image.size(0) < 1 ||
      image.size(0) > 4)
    return aten();
  const auto octaves = [](int64_t in, int64_t out) {
    return std::lround(std::log2(static_cast<double>(in) / static_cast<double>(out)));
  };
  const std::string shape_class =
      fmt::format("C={} out={}x{} scale=2^{}x2^{}", image.size(0), height, width,
                  octaves(image.size(1), height), octaves(image.size(2), width));
  const auto side = kernels::choose("resize_uint8", shape_class, [&](kernels::Side s) {
    if (s == kernels::Side::lathe)
      detail::resize_uint8(image, height, width);
    else
      aten();
  });
  if (side == kernels::Side::aten) return aten();
  return detail::resize_uint8(image, height, width);  // (C, height, width)
}

Transform resize(int64_t height, int64_t width) {
  LATHE_CHECK(height > 0 && width > 0, DataError, "resize: size {}x{} must be positive", height,
              width);
  return [height, width](at::Tensor x, Rng&) { return resize_image(x, height, width); };
}

Transform resize_shorter(int64_t size) {
  LATHE_CHECK(size > 0, DataError, "resize_shorter: size {} must be positive", size);
  return [size](at::Tensor x, Rng&) {
    check_image(x, "resize_shorter");
    const int64_t h = x.size(1), w = x.size(2);
    // torchvision: the longer side is int(size * long / short), truncated.
    LATHE_CHECK(h > 0 && w > 0, DataError, "resize_shorter: an empty {}x{} image", h, w);
    // In double: size * long overflows int64 for no real image, but the bound comes first.
    const auto scaled = [&](int64_t lng, int64_t shrt) {
      const double v = std::floor(static_cast<double>(size) * static_cast<double>(lng) /
                                  static_cast<double>(shrt));
      return v > static_cast<double>(kMaxResizedPixels) ? kMaxResizedPixels + 1
                                                        : size * lng / shrt;
    };
    if (h <= w) return resize_image(x, size, scaled(w, h));
    return resize_image(x, scaled(h, w), size);
  };
}

Transform center_crop(int64_t size) {
  LATHE_CHECK(size > 0, DataError, "center_crop: size {} must be positive", size);
  return [size](at::Tensor x, Rng&) {
    check_image(x, "center_crop");
    const auto top = static_cast<int64_t>(std::round(static_cast<double>(x.size(1) - size) / 2.0));
    const auto left = static_cast<int64_t>(std::round(static_cast<double>(x.size(2) - size) / 2.0));
    return crop(x, {top, left, size, size});
  };
}

Box random_resized_box(int64_t height, int64_t width, Rng& rng, std::pair<double, double> scale,
                       std::pair<double, double> ratio) {
  const double area = static_cast<double>(height * width);
  const double log_lo = std::log(ratio.first), log_hi = std::log(ratio.second);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * uniform(rng, scale.first, scale.second);
    const double aspect = std::exp(uniform(rng, log_lo, log_hi));
    const auto w = static_cast<int64_t>(std::round(std::sqrt(target * aspect)));
    const auto h = static_cast<int64_t>(std::round(std::sqrt(target / aspect)));
    if (w > 0 && w <= width && h > 0 && h <= height)
      return {randint(rng, 0, height - h + 1), randint(rng, 0, width - w + 1), h, w};
  }
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  int64_t w = width, h = height;
  if (in_ratio < ratio.first)
    h = static_cast<int64_t>(std::round(static_cast<double>(w) / ratio.first));
  else if (in_ratio > ratio.second)
    w = static_cast<int64_t>(std::round(static_cast<double>(h) * ratio.second));
  return {(height - h) / 2, (width - w) / 2, h, w};
}

namespace {

void check_resized_crop(int64_t size, std::pair<double, double> scale,
                        std::pair<double, double> ratio) {
  LATHE_CHECK(size > 0 && scale.first > 0 && scale.first <= scale.second && ratio.first > 0 &&
                  ratio.first <= ratio.second,
              DataError,
              "random_resized_crop: size {} scale ({}, {}) ratio ({}, {}): want "
              "size > 0, 0 < lo <= hi",
              size, scale.first, scale.second, ratio.first, ratio.second);
}

}  // namespace

Transform random_resized_crop(int64_t size, std::pair<double, double> scale,
                              std::pair<double, double> ratio) {
  check_resized_crop(size, scale, ratio);
  return [=](at::Tensor x, Rng& rng) {
    check_image(x, "random_resized_crop");
    const Box box = random_resized_box(x.size(1), x.size(2), rng, scale, ratio);
    return resize_image(crop(x, box), size, size);
  };
}

Transform decode_random_resized_crop(int64_t size, std::pair<double, double> scale,
                                     std::pair<double, double> ratio, int channels,
                                     int min_side, int64_t max_pixels,
                                     std::optional<double> hflip) {
  if (max_pixels <= 0) max_pixels = kDefaultMaxImagePixels;
  check_resized_crop(size, scale, ratio);
  return [=](at::Tensor bytes, Rng& rng) {
    LATHE_CHECK(bytes.dim() == 1 && bytes.scalar_type() == at::kByte && bytes.is_contiguous(),
                DataError,
                "decode_random_resized_crop wants an encoded image as 1-D uint8 bytes, got {} {}",
                c10::toString(bytes.scalar_type()), bytes.sizes());
    const std::string_view encoded(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()),
                                   static_cast<size_t>(bytes.numel()));
    return decode_image_window_resized(
        encoded, "the encoded image",
        [&](int64_t h, int64_t w) { return random_resized_box(h, w, rng, scale, ratio); }, size,
        size, channels, min_side, max_pixels,
        [&] { return hflip.has_value() && uniform(rng, 0.0, 1.0) < *hflip; });  // (C, size, size)
  };
}

}  // namespace lathe::data::transforms
