// JPEG (TurboJPEG) and PNG (libpng simplified API) coding, and the one-folder-per-class dataset.
#include "lathe/data/image.h"

#include <png.h>
#include <turbojpeg.h>

#include <algorithm>
#include <cctype>
#include <csetjmp>
#include <cstdio>  // jpeglib.h wants FILE declared
#include <cstring>
#include <memory>

#include <jpeglib.h>

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/scalar_tensor.h>
#include <fmt/ranges.h>

#include "lathe/core/error.h"
#include "lathe/core/log.h"
#include "lathe/data/resize.h"
#include "read_file.h"

namespace lathe::data {
namespace {

/// One TurboJPEG handle per thread and direction, destroyed with the thread.
struct TjHandle {
  tjhandle h;
  explicit TjHandle(bool compress) : h(compress ? tjInitCompress() : tjInitDecompress()) {}
  ~TjHandle() {
    if (h != nullptr) tjDestroy(h);
  }
  TjHandle(const TjHandle&) = delete;
  TjHandle& operator=(const TjHandle&) = delete;
};

tjhandle decompressor() {
  thread_local TjHandle handle(false);
  LATHE_CHECK(handle.h != nullptr, DataError, "cannot start the JPEG decoder: {}",
              tjGetErrorStr2(nullptr));
  return handle.h;
}

bool is_jpeg(std::string_view b) { return b.size() >= 3 && b.substr(0, 3) == "\xFF\xD8\xFF"; }
bool is_png(std::string_view b) { return b.size() >= 8 && b.substr(0, 8) == "\x89PNG\r\n\x1A\n"; }

/// (H, W, C) interleaved pixels → a (C, H, W) view of them (channels-last strides, as
/// torchvision's decode_jpeg): ATen's fast uint8 resize works on this layout; collation copies.
at::Tensor hwc_to_chw(at::Tensor hwc) { return hwc.permute({2, 0, 1}); }

/// A DataError unless width x height is within `max_pixels` (checked from the header).
void check_pixels(int64_t width, int64_t height, int64_t max_pixels, const std::string& origin) {
  LATHE_CHECK(width > 0 && height > 0, DataError, "{}: the image header declares {}x{} pixels",
              origin, width, height);
  LATHE_CHECK(width <= max_pixels / height, DataError,
              "{}: the image header declares {}x{} = {} pixels, over the limit of {} (a "
              "decompression bomb, or an image far larger than training needs); shrink it, or "
              "raise data.max_image_pixels if it is genuine",
              origin, width, height, width * height, max_pixels);
}

/// A DataError unless `box` is a non-empty window inside a (height, width) image.
void check_window(const transforms::Box& box, int64_t height, int64_t width,
                  const std::string& origin) {
  LATHE_CHECK(box.top >= 0 && box.left >= 0 && box.height > 0 && box.width > 0 &&
                  box.top + box.height <= height && box.left + box.width <= width,
              DataError, "{}: window {}x{} at ({}, {}) is not inside the {}x{} image", origin,
              box.height, box.width, box.top, box.left, height, width);
}

/// The smallest DCT scale (TurboJPEG's factors, 1/8 .. 1) whose shorter side still reaches
/// `min_side`; 1/1 when min_side is 0.
tjscalingfactor jpeg_scale(int width, int height, int min_side) {
  tjscalingfactor best{1, 1};
  if (min_side <= 0) return best;
  int out_w = width, out_h = height, n = 0;
  const tjscalingfactor* factors = tjGetScalingFactors(&n);
  for (int i = 0; i < n; ++i) {  // scales come largest first
    const tjscalingfactor f = factors[i];
    if (f.num > f.denom) continue;  // no upscaling
    const int w = TJSCALED(width, f), hh = TJSCALED(height, f);
    if (std::min(w, hh) >= min_side && w * hh < out_w * out_h) {
      out_w = w;
      out_h = hh;
      best = f;
    }
  }
  return best;
}

at::Tensor decode_jpeg(std::string_view bytes, const std::string& origin, int channels,
                       int min_side, int64_t max_pixels) {
  tjhandle h = decompressor();
  const auto* src = reinterpret_cast<const unsigned char*>(bytes.data());
  const auto size = static_cast<unsigned long>(bytes.size());
  int width = 0, height = 0, subsamp = 0, colorspace = 0;
  LATHE_CHECK(tjDecompressHeader3(h, src, size, &width, &height, &subsamp, &colorspace) == 0,
              DataError, "{}: not a readable JPEG: {}", origin, tjGetErrorStr2(h));
  check_pixels(width, height, max_pixels, origin);
  const tjscalingfactor f = jpeg_scale(width, height, min_side);
  const int out_w = TJSCALED(width, f), out_h = TJSCALED(height, f);
  at::Tensor hwc = at::empty({out_h, out_w, channels}, at::TensorOptions().dtype(at::kByte));
  const int rc = tjDecompress2(h, src, size, hwc.data_ptr<uint8_t>(), out_w, 0, out_h,
                               channels == 3 ? TJPF_RGB : TJPF_GRAY, 0);
  LATHE_CHECK(rc == 0, DataError, "{}: cannot decode the JPEG ({}x{}): {}", origin, width, height,
              tjGetErrorStr2(h));
  return hwc_to_chw(hwc);  // (C, H, W)
}

// --- Decoding a window of a JPEG (libjpeg-turbo's libjpeg API) ---------------------------------
// libjpeg reports errors by calling error_exit, which must not return: it longjmps back to the
// setjmp in the step that called the library. Each step below is a plain function whose locals
// are trivial (nothing to destroy is skipped by the jump) and returns false on an error; the
// caller, which owns the buffers, turns that into a DataError.

/// libjpeg's error manager plus where to jump and the message.
struct JpegErrors {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

[[noreturn]] void jpeg_fail(j_common_ptr cinfo) {
  auto* e = reinterpret_cast<JpegErrors*>(cinfo->err);
  cinfo->err->format_message(cinfo, e->message);
  std::longjmp(e->jump, 1);
}

/// A warning (corrupt data the decoder can go past, such as a truncated file) is an error, as
/// tjDecompress2 reports it; trace messages (level > 0) are ignored.
void jpeg_message(j_common_ptr cinfo, int level) {
  if (level < 0) jpeg_fail(cinfo);
}

/// A decompressor over bytes in memory (created by jpeg_header), destroyed with its scope.
struct JpegReader {
  jpeg_decompress_struct cinfo{};
  JpegErrors errors{};
  JpegReader() {
    cinfo.err = jpeg_std_error(&errors.mgr);
    errors.mgr.error_exit = jpeg_fail;
    errors.mgr.emit_message = jpeg_message;
  }
  ~JpegReader() { jpeg_destroy_decompress(&cinfo); }  // a no-op if it was never created
  JpegReader(const JpegReader&) = delete;
  JpegReader& operator=(const JpegReader&) = delete;
};

bool jpeg_header(JpegReader& r, const unsigned char* src, unsigned long size) {
  if (setjmp(r.errors.jump) != 0) return false;
  jpeg_create_decompress(&r.cinfo);
  jpeg_mem_src(&r.cinfo, src, size);
  jpeg_read_header(&r.cinfo, TRUE);
  return true;
}

/// Starts decompression at DCT scale `f` into RGB or grey, with tjDecompress2's settings (fancy
/// upsampling, the accurate integer IDCT), so the pixels are the same as decode_jpeg's.
bool jpeg_start(JpegReader& r, int channels, tjscalingfactor f) {
  if (setjmp(r.errors.jump) != 0) return false;
  r.cinfo.out_color_space = channels == 3 ? JCS_RGB : JCS_GRAYSCALE;
  r.cinfo.scale_num = static_cast<unsigned>(f.num);
  r.cinfo.scale_denom = static_cast<unsigned>(f.denom);
  r.cinfo.dct_method = JDCT_ISLOW;
  r.cinfo.do_fancy_upsampling = TRUE;
  jpeg_start_decompress(&r.cinfo);
  return true;
}

/// The columns [*left, *left + *width) of the rows to come, widened by libjpeg to whole blocks.
bool jpeg_columns(JpegReader& r, JDIMENSION* left, JDIMENSION* width) {
  if (setjmp(r.errors.jump) != 0) return false;
  jpeg_crop_scanline(&r.cinfo, left, width);
  return true;
}

bool jpeg_skip(JpegReader& r, JDIMENSION rows) {
  if (setjmp(r.errors.jump) != 0) return false;
  if (rows > 0) jpeg_skip_scanlines(&r.cinfo, rows);
  return true;
}

/// Reads the next `n` rows into `rows` (libjpeg may hand out fewer per call than asked).
bool jpeg_read(JpegReader& r, JSAMPROW* rows, JDIMENSION n) {
  if (setjmp(r.errors.jump) != 0) return false;
  for (JDIMENSION done = 0; done < n;) {
    const JDIMENSION got = jpeg_read_scanlines(&r.cinfo, rows + done, n - done);
    if (got == 0) {
      std::snprintf(r.errors.message, sizeof r.errors.message, "no row %u", done);
      return false;
    }
    done += got;
  }
  return true;
}

/// A JPEG's window being decoded: the constructor reads the header, starts decompression at the
/// DCT scale for min_side, asks `choose` for the window in the decoded size, crops the columns
/// and skips the rows above it (entropy-decoded only); read() then decodes its rows in order and
/// the rows below it are never read. Decoded rows hold the window's columns plus a margin of a
/// pixel each side where the image has one (so that the chroma upsampling at its edges sees the
/// same neighbours as in the whole image: the same pixels as decode_jpeg + cropping), widened by
/// libjpeg to whole blocks; only those blocks go through the inverse DCT, upsampling and colour
/// conversion.
class JpegWindow {
 public:
  JpegWindow(std::string_view bytes, const std::string& origin, int channels, int min_side,
             int64_t max_pixels, const WindowChooser& choose)
      : origin_(origin), channels_(channels) {
    const auto* src = reinterpret_cast<const unsigned char*>(bytes.data());
    LATHE_CHECK(jpeg_header(r_, src, static_cast<unsigned long>(bytes.size())), DataError,
                "{}: not a readable JPEG: {}", origin, r_.errors.message);
    width_ = static_cast<int>(r_.cinfo.image_width);
    height_ = static_cast<int>(r_.cinfo.image_height);
    check_pixels(width_, height_, max_pixels, origin);
    check(jpeg_start(r_, channels, jpeg_scale(width_, height_, min_side)));
    const auto out_h = static_cast<int64_t>(r_.cinfo.output_height);
    const auto out_w = static_cast<int64_t>(r_.cinfo.output_width);
    box_ = choose(out_h, out_w);
    check_window(box_, out_h, out_w, origin);
    const int64_t lo = std::max<int64_t>(0, box_.left - 1);  // the margin
    const int64_t hi = std::min(out_w, box_.left + box_.width + 1);
    auto left = static_cast<JDIMENSION>(lo), span = static_cast<JDIMENSION>(hi - lo);
    if (span < static_cast<JDIMENSION>(out_w)) check(jpeg_columns(r_, &left, &span));
    row_bytes_ = static_cast<size_t>(span) * static_cast<size_t>(channels);
    offset_ = static_cast<size_t>(box_.left - static_cast<int64_t>(left)) *
              static_cast<size_t>(channels);
    check(jpeg_skip(r_, static_cast<JDIMENSION>(box_.top)));
  }

  const transforms::Box& box() const { return box_; }
  /// Bytes of a decoded row.
  size_t row_bytes() const { return row_bytes_; }
  /// Where the window's first column starts in a decoded row, in bytes.
  size_t offset() const { return offset_; }

  /// Decodes the window's next `n` rows into `out`, `stride` >= row_bytes() bytes apart.
  void read(unsigned char* out, int64_t n, size_t stride) {
    rows_.resize(static_cast<size_t>(n));
    for (int64_t y = 0; y < n; ++y) rows_[static_cast<size_t>(y)] = out + y * stride;
    check(jpeg_read(r_, rows_.data(), static_cast<JDIMENSION>(n)));
  }

 private:
  void check(bool ok) const {
    LATHE_CHECK(ok, DataError, "{}: cannot decode the JPEG ({}x{}): {}", origin_, width_, height_,
                r_.errors.message);
  }

  JpegReader r_;
  const std::string& origin_;
  int channels_;
  int width_ = 0, height_ = 0;
  transforms::Box box_;
  size_t row_bytes_ = 0, offset_ = 0;
  std::vector<JSAMPROW> rows_;
};

/// The window, read straight into a (box.height, decoded row) buffer of which it is a view.
at::Tensor decode_jpeg_window(std::string_view bytes, const std::string& origin, int channels,
                              int min_side, int64_t max_pixels, const WindowChooser& choose) {
  JpegWindow window(bytes, origin, channels, min_side, max_pixels, choose);
  const transforms::Box& box = window.box();
  const auto span = static_cast<int64_t>(window.row_bytes()) / channels;
  at::Tensor rows = at::empty({box.height, span, channels}, at::TensorOptions().dtype(at::kByte));
  window.read(rows.data_ptr<uint8_t>(), box.height, window.row_bytes());
  const auto left = static_cast<int64_t>(window.offset()) / channels;
  return hwc_to_chw(rows.narrow(1, left, box.width));  // (C, box.height, box.width)
}

/// The window resized to (height, width): chunks of decoded rows go through the resize's
/// horizontal pass while in cache; the window itself is never stored.
at::Tensor decode_jpeg_window_resized(std::string_view bytes, const std::string& origin,
                                      int channels, int min_side, int64_t max_pixels,
                                      const WindowChooser& choose, int64_t height, int64_t width,
                                      const std::function<bool()>& mirror) {
  JpegWindow window(bytes, origin, channels, min_side, max_pixels, choose);
  const transforms::Box& box = window.box();
  detail::RowResizer resizer(channels, box.height, box.width, height, width, mirror && mirror());
  // 16 spare bytes a row let the resize's 16-byte loads run to the window's right edge (what
  // they read past it weighs zero).
  constexpr int64_t kChunk = 16;
  const size_t stride = window.row_bytes() + 16;
  thread_local std::vector<unsigned char> chunk;
  chunk.resize(kChunk * stride);
  for (int64_t y = 0; y < box.height; y += kChunk) {
    const int64_t n = std::min(kChunk, box.height - y);
    window.read(chunk.data(), n, stride);
    resizer.push(chunk.data() + window.offset(), n, static_cast<int64_t>(stride),
                 static_cast<int64_t>(stride - window.offset()));
  }
  return resizer.finish();  // (C, height, width)
}

at::Tensor decode_png(std::string_view bytes, const std::string& origin, int channels,
                      int64_t max_pixels) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  LATHE_CHECK(png_image_begin_read_from_memory(&img, bytes.data(), bytes.size()) != 0, DataError,
              "{}: not a readable PNG: {}", origin, img.message);
  try {
    check_pixels(img.width, img.height, max_pixels, origin);
  } catch (...) {
    png_image_free(&img);
    throw;
  }
  img.format = channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  at::Tensor hwc =
      at::empty({static_cast<int64_t>(img.height), static_cast<int64_t>(img.width), channels},
                at::TensorOptions().dtype(at::kByte));
  const int ok = png_image_finish_read(&img, nullptr, hwc.data_ptr<uint8_t>(), 0, nullptr);
  if (ok == 0) {
    const std::string msg = img.message;
    png_image_free(&img);
    throw DataError(fmt::format("{}: cannot decode the PNG: {}", origin, msg));
  }
  return hwc_to_chw(hwc);  // (C, H, W)
}

/// (C, H, W) uint8 → contiguous (H, W, C) and its channel count, checked.
at::Tensor to_hwc(const at::Tensor& image, const char* what) {
  LATHE_CHECK(image.dim() == 3 && (image.size(0) == 1 || image.size(0) == 3) &&
                  image.scalar_type() == at::kByte,
              DataError, "{} wants a (C, H, W) uint8 image with C = 1 or 3, got {} {}", what,
              c10::toString(image.scalar_type()), image.sizes());
  return image.permute({1, 2, 0}).contiguous();
}

bool is_image_name(const std::filesystem::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

}  // namespace

at::Tensor decode_image(std::string_view bytes, const std::string& origin, int channels,
                        int min_side, int64_t max_pixels) {
  LATHE_CHECK(channels == 1 || channels == 3, DataError,
              "{}: channels must be 1 (grey) or 3 (RGB), got {}", origin, channels);
  if (is_jpeg(bytes)) return decode_jpeg(bytes, origin, channels, min_side, max_pixels);
  if (is_png(bytes)) return decode_png(bytes, origin, channels, max_pixels);
  throw DataError(
      fmt::format("{}: neither a JPEG nor a PNG ({} bytes; a JPEG starts with "
                  "FF D8 FF, a PNG with 89 50 4E 47)",
                  origin, bytes.size()));
}

at::Tensor decode_image_window(std::string_view bytes, const std::string& origin,
                               const WindowChooser& choose, int channels, int min_side,
                               int64_t max_pixels) {
  LATHE_CHECK(channels == 1 || channels == 3, DataError,
              "{}: channels must be 1 (grey) or 3 (RGB), got {}", origin, channels);
  if (is_jpeg(bytes)) return decode_jpeg_window(bytes, origin, channels, min_side, max_pixels, choose);
  const at::Tensor image = decode_image(bytes, origin, channels, min_side, max_pixels);
  const transforms::Box box = choose(image.size(1), image.size(2));
  check_window(box, image.size(1), image.size(2), origin);
  return image.narrow(1, box.top, box.height).narrow(2, box.left, box.width);  // a view
}

at::Tensor decode_image_window_resized(std::string_view bytes, const std::string& origin,
                                       const WindowChooser& choose, int64_t height, int64_t width,
                                       int channels, int min_side, int64_t max_pixels,
                                       const std::function<bool()>& mirror) {
  LATHE_CHECK(channels == 1 || channels == 3, DataError,
              "{}: channels must be 1 (grey) or 3 (RGB), got {}", origin, channels);
  LATHE_CHECK(height > 0 && width > 0 && width <= transforms::kMaxResizedPixels / height,
              DataError, "{}: cannot resize to {}x{} (want a positive size of at most {} pixels)",
              origin, height, width, transforms::kMaxResizedPixels);
  if (is_jpeg(bytes))
    return decode_jpeg_window_resized(bytes, origin, channels, min_side, max_pixels, choose,
                                      height, width, mirror);
  const at::Tensor resized = transforms::resize_image(
      decode_image_window(bytes, origin, choose, channels, min_side, max_pixels), height, width);
  return mirror && mirror() ? resized.flip({-1}) : resized;
}

at::Tensor read_image(const std::filesystem::path& file, int channels, int min_side,
                      int64_t max_pixels) {
  return decode_image(detail::read_file(file, "image"), file.string(), channels, min_side,
                      max_pixels);
}

std::string encode_jpeg(const at::Tensor& image, int quality) {
  const at::Tensor hwc = to_hwc(image, "encode_jpeg");
  thread_local TjHandle handle(true);
  const bool grey = hwc.size(2) == 1;
  unsigned char* out = nullptr;
  unsigned long size = 0;
  const int rc = tjCompress2(handle.h, hwc.data_ptr<uint8_t>(), static_cast<int>(hwc.size(1)), 0,
                             static_cast<int>(hwc.size(0)), grey ? TJPF_GRAY : TJPF_RGB, &out,
                             &size, grey ? TJSAMP_GRAY : TJSAMP_420, quality, 0);
  std::unique_ptr<unsigned char, void (*)(unsigned char*)> owned(out, tjFree);
  LATHE_CHECK(rc == 0, DataError, "cannot encode a JPEG: {}", tjGetErrorStr2(handle.h));
  return {reinterpret_cast<const char*>(out), size};
}

std::string encode_png(const at::Tensor& image) {
  const at::Tensor hwc = to_hwc(image, "encode_png");
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  img.width = static_cast<png_uint_32>(hwc.size(1));
  img.height = static_cast<png_uint_32>(hwc.size(0));
  img.format = hwc.size(2) == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  LATHE_CHECK(
      png_image_write_to_memory(&img, nullptr, &size, 0, hwc.data_ptr<uint8_t>(), 0, nullptr) != 0,
      DataError, "cannot encode a PNG: {}", img.message);
  std::string out(size, '\0');
  LATHE_CHECK(png_image_write_to_memory(&img, out.data(), &size, 0, hwc.data_ptr<uint8_t>(), 0,
                                        nullptr) != 0,
              DataError, "cannot encode a PNG: {}", img.message);
  out.resize(size);
  return out;
}

ImageFolder::ImageFolder(const std::filesystem::path& root, ImageFolderOptions options)
    : options_(options) {
  namespace fs = std::filesystem;
  LATHE_CHECK(fs::is_directory(root), DataError,
              "{}: no such folder (an image folder holds one subfolder of images per class)",
              root.string());
  LATHE_CHECK(options_.channels == 1 || options_.channels == 3, DataError,
              "{}: channels must be 1 or 3, got {}", root.string(), options_.channels);
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(root))  // hidden folders are not classes
    if (e.is_directory() && e.path().filename().string().rfind('.', 0) != 0)
      dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  LATHE_CHECK(!dirs.empty(), DataError, "{}: no class subfolders (expected {}/<class>/<image>.jpg)",
              root.string(), root.string());
  for (const auto& dir : dirs) {
    std::vector<fs::path> images;
    for (const auto& e : fs::recursive_directory_iterator(dir))
      if (e.is_regular_file() && is_image_name(e.path())) images.push_back(e.path());
    std::sort(images.begin(), images.end());
    const auto id = static_cast<int64_t>(classes_.size());
    classes_.push_back(dir.filename().string());
    for (auto& f : images) {
      if (options_.skip_bad_files) {
        try {
          const std::string bytes = detail::read_file(f, "image");
          decode_image(bytes, f.string(), options_.channels, /*min_side=*/1, options_.max_pixels);
        } catch (const DataError& e) {
          if (skipped_++ == 0) log::warn("skipping unreadable image: {}", e.what());
          continue;
        }
      }
      files_.push_back(std::move(f));
      labels_.push_back(id);
    }
  }
  if (skipped_ > 0) log::warn("{}: skipped {} unreadable image(s)", root.string(), skipped_);
  LATHE_CHECK(!files_.empty(), DataError,
              "{}: no images (.jpg, .jpeg, .png) in its {} class folders", root.string(),
              classes_.size());
}

std::string ImageFolder::origin(int64_t index) const {
  return index >= 0 && index < size() ? files_[static_cast<size_t>(index)].string() : std::string();
}

Example ImageFolder::get(int64_t index) const {
  LATHE_CHECK(index >= 0 && index < size(), DataError, "image {} out of range [0, {})", index,
              size());
  const auto i = static_cast<size_t>(index);
  return {read_image(files_[i], options_.channels, options_.min_side, options_.max_pixels),
          at::scalar_tensor(labels_[i], at::TensorOptions().dtype(at::kLong))};
}

EncodedImages::EncodedImages(std::shared_ptr<const ImageFolder> folder)
    : folder_(std::move(folder)) {
  LATHE_CHECK(folder_ != nullptr, DataError, "EncodedImages: no image folder given");
}

Example EncodedImages::get(int64_t index) const {
  LATHE_CHECK(index >= 0 && index < size(), DataError, "image {} out of range [0, {})", index,
              size());
  // The file's bytes, owned by the tensor (no copy).
  auto* bytes = new std::string(detail::read_file(folder_->file(index), "image"));
  const at::Tensor encoded = at::from_blob(
      bytes->data(), {static_cast<int64_t>(bytes->size())}, [bytes](void*) { delete bytes; },
      at::TensorOptions().dtype(at::kByte));  // (N)
  return {encoded, at::scalar_tensor(folder_->label(index), at::TensorOptions().dtype(at::kLong))};
}

}  // namespace lathe::data
