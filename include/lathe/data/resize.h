// The uint8 antialiased bilinear resize behind transforms::resize_image (PyTorch's arithmetic);
// public so that tests can run its portable loops and its row-by-row form directly.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace lathe::data::detail {

/// The taps of one axis: output i is the sum over inputs first[i] .. first[i] + count[i] - 1 of
/// input × weights[i * stride + k], in fixed point with `precision` fractional bits. Weights past
/// count are zero, and stride is a multiple of 4, so vector loops may read whole pairs and quads.
struct ResizeTaps {
  int64_t stride = 0;
  int precision = 0;
  int32_t max_count = 0;
  std::vector<int32_t> first, count;
  std::vector<int16_t> weights;

  int32_t bias() const { return 1 << (precision - 1); }  // rounds the final shift to nearest
  const int16_t* of(int64_t i) const { return &weights[static_cast<size_t>(i * stride)]; }
};

/// PyTorch's taps for resizing an axis of `in` pixels to `out` (its uint8 antialiased bilinear
/// weights, bit for bit).
ResizeTaps make_taps(int64_t in, int64_t out);

/// A uint8 resize fed row by row, as a decoder produces them: push() runs the horizontal pass on
/// each batch of rows as it arrives (while they are in cache; the input is never stored whole),
/// finish() the vertical pass. The same pixels as resize_uint8 (then mirrored left-right when
/// `mirror`: the horizontal pass takes its columns' taps in reverse order, at no cost).
///
///   RowResizer r(3, h, w, 224, 224);
///   while (rows left) r.push(rows, n, stride, readable);
///   at::Tensor out = r.finish();  // (3, 224, 224)
class RowResizer {
 public:
  RowResizer(int channels, int64_t in_height, int64_t in_width, int64_t out_height,
             int64_t out_width, bool mirror = false, bool vectorised = true);
  ~RowResizer();
  RowResizer(const RowResizer&) = delete;
  RowResizer& operator=(const RowResizer&) = delete;

  /// The next `n` input rows: pixels of `channels` interleaved bytes, rows `stride` bytes apart,
  /// each readable for `readable` bytes from its start (at least in_width * channels; more lets
  /// the vector loop run to the right edge, reading bytes it then weighs by zero).
  void push(const uint8_t* rows, int64_t n, int64_t stride, int64_t readable);
  /// The vertical pass once every input row has been pushed: (C, out_height, out_width) uint8.
  at::Tensor finish();

 private:
  uint8_t* planes();

  int channels_;
  int64_t in_h_, in_w_, out_h_, out_w_;
  bool vectorised_;
  ResizeTaps across_, down_;
  at::Tensor out_;
  std::vector<uint8_t> planes_;  ///< (C, in_height, out_width): the horizontal pass's result
  int64_t next_ = 0;             ///< rows pushed so far
};


/// Resizes a uint8 (C, H, W) image, 1 <= C <= 4, any strides, to a contiguous (C, height, width)
/// with the arithmetic of PyTorch's uint8 kernel behind torchvision's Resize(antialias=True)
/// (itself Pillow's): per output pixel, the triangle filter's weights over the input pixels it
/// covers (widened by the scale when shrinking), normalised, rounded to int16 with the largest
/// precision that fits; the horizontal pass first into uint8 (rounded, clamped), then the vertical
/// pass. Both passes are separable loops over precomputed per-row/column taps; with AVX2 the
/// horizontal pass of RGB and the vertical pass run vectorised, with the same integer results
/// (`vectorised` = false forces the portable loops, for tests).
at::Tensor resize_uint8(const at::Tensor& image, int64_t height, int64_t width,
                        bool vectorised = true);

}  // namespace lathe::data::detail
