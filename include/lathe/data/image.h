// Images: JPEG (libjpeg-turbo) and PNG (libpng) decoding, and the image-folder dataset.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lathe/data/dataset.h"
#include "lathe/data/transforms.h"

namespace lathe::data {

/// The most pixels (width x height, as the file's header declares them) an image may have:
/// PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS). Checked before anything is decoded
/// or allocated; data.max_image_pixels changes it.
inline constexpr int64_t kDefaultMaxImagePixels = 89'478'485;

/// Decodes a JPEG or PNG held in memory (the format is told by its signature) into (C, H, W)
/// uint8 with C = `channels` (3: RGB, 1: grey). JPEGs are decoded at the smallest DCT scale
/// (1/8 .. 1) whose shorter side is still >= `min_side` (0: full size) — much faster when the
/// image is larger than the training resolution. `origin` names the image in errors. An image
/// whose header declares more than `max_pixels` pixels is a DataError before decoding.
at::Tensor decode_image(std::string_view bytes, const std::string& origin, int channels = 3,
                        int min_side = 0, int64_t max_pixels = kDefaultMaxImagePixels);

/// Picks the window of an image to keep from its decoded (height, width).
using WindowChooser = std::function<transforms::Box(int64_t height, int64_t width)>;

/// decode_image, keeping only the window `choose` picks from the decoded size (after the DCT
/// scaling to `min_side`); the window must lie inside the image. A JPEG decodes only that window
/// (libjpeg-turbo's jpeg_skip_scanlines / jpeg_crop_scanline: rows above it are only
/// entropy-decoded, rows below it not at all, columns outside it skip the inverse DCT and colour
/// conversion) with the same pixels as decoding the whole image and cropping it; a PNG decodes
/// whole and is cropped (a view). (C, box.height, box.width) uint8.
at::Tensor decode_image_window(std::string_view bytes, const std::string& origin,
                               const WindowChooser& choose, int channels = 3, int min_side = 0,
                               int64_t max_pixels = kDefaultMaxImagePixels);

/// decode_image_window then transforms::resize_image to (height, width), fused for JPEGs: each
/// chunk of the window's rows goes through the resize's horizontal pass as it leaves the decoder
/// (the window is never stored whole). The same pixels as the two calls; (C, height, width) uint8.
/// `mirror`, when given, is asked once after `choose` (so both may draw from one generator, in
/// that order) whether to mirror the result left-right, which then costs nothing.
at::Tensor decode_image_window_resized(std::string_view bytes, const std::string& origin,
                                       const WindowChooser& choose, int64_t height, int64_t width,
                                       int channels = 3, int min_side = 0,
                                       int64_t max_pixels = kDefaultMaxImagePixels,
                                       const std::function<bool()>& mirror = nullptr);

/// Reads and decodes an image file; a missing, truncated or undecodable file is a DataError
/// naming it.
at::Tensor read_image(const std::filesystem::path& file, int channels = 3, int min_side = 0,
                      int64_t max_pixels = kDefaultMaxImagePixels);

/// Encodes (C, H, W) uint8 (C = 1 or 3) as a JPEG of `quality` (1..100), for tests and tools.
std::string encode_jpeg(const at::Tensor& image, int quality = 90);

/// Encodes (C, H, W) uint8 (C = 1 or 3) as a PNG.
std::string encode_png(const at::Tensor& image);

/// How an image folder is read.
struct ImageFolderOptions {
  int channels = 3;  ///< 3 (RGB) or 1 (grey)
  int min_side = 0;  ///< decode JPEGs at a reduced scale down to this shorter side (0: full)
  bool skip_bad_files = false;  ///< check every header up front and leave out unreadable files
  int64_t max_pixels = kDefaultMaxImagePixels;  ///< larger images are errors (decompression bombs)
};

/// One subfolder per class (classes sorted by name, ids 0..K-1; folders whose name starts with
/// '.', such as .ipynb_checkpoints, are ignored: they are tool litter, never classes; note that
/// torchvision's ImageFolder would count them), images (.jpg, .jpeg, .png, any
/// case) sorted by path. get(i) = ((C, H, W) uint8, class id). Sizes may differ between images:
/// give the loader a transform that makes them equal (resize, crops).
///
///   auto train = std::make_shared<ImageFolder>("data/flowers/train");
///   train->classes();   // {"daisy", "rose", "tulip"}
class ImageFolder : public Dataset {
 public:
  explicit ImageFolder(const std::filesystem::path& root, ImageFolderOptions options = {});
  int64_t size() const override { return static_cast<int64_t>(files_.size()); }
  Example get(int64_t index) const override;
  std::string origin(int64_t index) const override;

  const std::vector<std::string>& classes() const { return classes_; }
  const std::filesystem::path& file(int64_t index) const {
    return files_[static_cast<size_t>(index)];
  }
  int64_t label(int64_t index) const { return labels_[static_cast<size_t>(index)]; }
  /// Files left out because they could not be read (skip_bad_files).
  int64_t skipped() const { return skipped_; }

 private:
  ImageFolderOptions options_;
  std::vector<std::string> classes_;
  std::vector<std::filesystem::path> files_;
  std::vector<int64_t> labels_;
  int64_t skipped_ = 0;
};

/// The records of an ImageFolder as their files' bytes, undecoded: get(i) = ((N) uint8, class id),
/// for a transform that decodes them itself (transforms::decode_random_resized_crop decodes only
/// its crop). origin(i) names the file, so that decoding errors in the loader do too.
class EncodedImages : public Dataset {
 public:
  explicit EncodedImages(std::shared_ptr<const ImageFolder> folder);
  int64_t size() const override { return folder_->size(); }
  Example get(int64_t index) const override;
  std::string origin(int64_t index) const override { return folder_->origin(index); }

 private:
  std::shared_ptr<const ImageFolder> folder_;
};

}  // namespace lathe::data
