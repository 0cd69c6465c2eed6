// Image transforms for loader workers: type conversion, normalise, crops, flip, resize.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "lathe/data/dataset.h"

namespace lathe::data::transforms {

/// A crop box: top-left corner and size, in pixels.
struct Box {
  int64_t top = 0, left = 0, height = 0, width = 0;
};

/// uint8 (C, H, W) → float32 in [0, 1]; float input passes through.
Transform to_float();

/// (x - mean[c]) / std[c] per channel of a float (C, H, W); one value applies to every channel.
Transform normalize(std::vector<double> mean, std::vector<double> std);

/// Pads `padding` zero pixels on every side, then crops a (size, size) window at a random offset
/// (torchvision's RandomCrop(size, padding)).
Transform random_crop(int64_t size, int64_t padding = 0);

/// Mirrors left-right with probability p.
Transform horizontal_flip(double p = 0.5);

/// Resizes to (height, width) bilinearly with antialiasing when shrinking (torchvision's
/// Resize(antialias=True) on tensors); uint8 in, uint8 out (rounded), float stays float.
Transform resize(int64_t height, int64_t width);

/// Resizes so the shorter side is `size`, keeping the aspect ratio (torchvision's Resize(int)).
Transform resize_shorter(int64_t size);

/// The central (size, size) window (padded with zeros when the image is smaller).
Transform center_crop(int64_t size);

/// torchvision's RandomResizedCrop: a box of random area (`scale` of the image) and aspect ratio
/// (`ratio`, drawn log-uniformly), 10 tries, else the central box of the nearest allowed ratio;
/// then resized to (size, size).
Transform random_resized_crop(int64_t size, std::pair<double, double> scale = {0.08, 1.0},
                              std::pair<double, double> ratio = {3.0 / 4.0, 4.0 / 3.0});

/// random_resized_crop fused with decoding, for inputs that are an encoded JPEG or PNG held as
/// 1-D uint8 (a file's bytes): the box is drawn from the image's size (read from its header, after
/// the DCT scaling to `min_side`) with the same draws as random_resized_crop, only that box is
/// decoded and resized to (size, size) as its rows leave the decoder
/// (decode_image_window_resized). The same pixels as decoding the whole image and applying
/// random_resized_crop with the same generator.
/// `max_pixels` is decode_image's decompression-bomb limit (0: its default). With `hflip`, it
/// also mirrors the crop left-right with that probability, drawn after the box: the same pixels
/// as compose({decode_random_resized_crop(...), horizontal_flip(*hflip)}), the mirroring done by
/// the resize itself.
Transform decode_random_resized_crop(int64_t size, std::pair<double, double> scale = {0.08, 1.0},
                                     std::pair<double, double> ratio = {3.0 / 4.0, 4.0 / 3.0},
                                     int channels = 3, int min_side = 0, int64_t max_pixels = 0,
                                     std::optional<double> hflip = std::nullopt);

/// The box random_resized_crop draws for an image of (height, width).
Box random_resized_box(int64_t height, int64_t width, Rng& rng, std::pair<double, double> scale,
                       std::pair<double, double> ratio);

/// The most pixels a resize may produce (PIL's decompression-bomb limit): a 100000x1 image
/// resized to a shorter side of 224 would otherwise take gigabytes.
inline constexpr int64_t kMaxResizedPixels = 89'478'485;

/// Resizes (C, H, W) to (C, height, width) as resize() does (no randomness); an output over
/// kMaxResizedPixels is a DataError.
at::Tensor resize_image(const at::Tensor& image, int64_t height, int64_t width);

}  // namespace lathe::data::transforms
