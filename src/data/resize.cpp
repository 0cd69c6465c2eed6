// uint8 antialiased bilinear resize with PyTorch's (Pillow's) fixed-point arithmetic: taps
// precomputed per output column and row, a horizontal pass then a vertical pass; AVX2 when the
// CPU has it, the same integer results as the portable loops.
#include "lathe/data/resize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include <ATen/ops/empty.h>

#include "lathe/core/error.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define LATHE_RESIZE_AVX2 1
#endif

namespace lathe::data::detail {
namespace {

/// PyTorch's weights for the antialiased linear filter (UpSampleKernel.cpp,
/// _compute_indices_int16_weights_aa with align_corners=False and no explicit scale), with the
/// same double arithmetic so that the int16 weights are bit for bit the same.
}  // namespace

ResizeTaps make_taps(int64_t in, int64_t out) {
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  const double support = scale >= 1.0 ? scale : 1.0;  // the triangle's half-width, input pixels
  const double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
  const int64_t kmax = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  ResizeTaps t;
  t.stride = (kmax + 3) / 4 * 4;
  t.first.resize(static_cast<size_t>(out));
  t.count.resize(static_cast<size_t>(out));
  std::vector<double> w(static_cast<size_t>(out * kmax), 0.0);
  for (int64_t i = 0; i < out; ++i) {
    const double center = scale * (static_cast<double>(i) + 0.5);
    const int64_t lo = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in) - lo;
    double* wi = &w[static_cast<size_t>(i * kmax)];
    double total = 0.0;
    for (int64_t j = 0; j < n; ++j) {
      const double x = std::abs((static_cast<double>(j + lo) - center + 0.5) * invscale);
      wi[j] = x < 1.0 ? 1.0 - x : 0.0;
      total += wi[j];
    }
    if (total != 0.0)
      for (int64_t j = 0; j < n; ++j) wi[j] /= total;
    t.first[static_cast<size_t>(i)] = static_cast<int32_t>(lo);
    t.count[static_cast<size_t>(i)] = static_cast<int32_t>(n);
    t.max_count = std::max(t.max_count, static_cast<int32_t>(n));
  }
  // The most fractional bits (at most 22) for which the largest weight still fits an int16.
  const double w_max = *std::max_element(w.begin(), w.end());
  int p = 0;
  for (; p < 22; ++p)
    if (static_cast<int>(0.5 + w_max * (1 << (p + 1))) >= (1 << 15)) break;
  t.precision = p;
  t.weights.assign(static_cast<size_t>(out * t.stride), 0);
  for (int64_t i = 0; i < out; ++i)
    for (int64_t j = 0; j < kmax; ++j)
      t.weights[static_cast<size_t>(i * t.stride + j)] = static_cast<int16_t>(
          static_cast<int>(0.5 + w[static_cast<size_t>(i * kmax + j)] * (1 << p)));
  return t;
}

namespace {

uint8_t clamp_shift(int32_t acc, int precision) {
  return static_cast<uint8_t>(std::clamp(acc >> precision, 0, 255));
}

// --- Portable loops (any CPU; also the AVX2 loops' edges) ----------------------------------------

/// Outputs [x0, x1) of one row of `channels`-interleaved pixels, into channel planes `plane`
/// bytes apart: out[c * plane + x].
void horizontal_row(const uint8_t* row, int channels, const ResizeTaps& t, int64_t x0, int64_t x1,
                    uint8_t* out, int64_t plane) {
  for (int64_t x = x0; x < x1; ++x) {
    const uint8_t* px = row + static_cast<int64_t>(t.first[static_cast<size_t>(x)]) * channels;
    const int16_t* k = t.of(x);
    int32_t acc[4] = {t.bias(), t.bias(), t.bias(), t.bias()};
    for (int32_t j = 0; j < t.count[static_cast<size_t>(x)]; ++j)
      for (int c = 0; c < channels; ++c) acc[c] += k[j] * px[j * channels + c];
    for (int c = 0; c < channels; ++c) out[c * plane + x] = clamp_shift(acc[c], t.precision);
  }
}

/// Columns [j0, j1) of output row y of one plane whose rows are `width` bytes apart.
void vertical_row(const uint8_t* in, int64_t width, const ResizeTaps& t, int64_t y, int64_t j0,
                  int64_t j1, uint8_t* out) {
  const uint8_t* rows = in + static_cast<int64_t>(t.first[static_cast<size_t>(y)]) * width;
  const int16_t* k = t.of(y);
  const int32_t n = t.count[static_cast<size_t>(y)];
  for (int64_t j = j0; j < j1; ++j) {
    int32_t acc = t.bias();
    for (int32_t r = 0; r < n; ++r) acc += k[r] * rows[r * width + j];
    out[j] = clamp_shift(acc, t.precision);
  }
}

#ifdef LATHE_RESIZE_AVX2

int32_t pair(const int16_t* k) {  // two adjacent int16 weights as one int32 lane
  int32_t v;
  std::memcpy(&v, k, sizeof v);
  return v;
}

#define LATHE_AVX2 __attribute__((target("avx2")))

/// The (R, G, B, 0) int32 sums of output column x of two RGB rows (row a in the low 128-bit lane,
/// row b in the high one), shifted back from fixed point. Each group of 4 taps is one 16-byte load
/// per row, shuffled into (tap j, tap j+1) int16 pairs per channel and multiplied-and-added with
/// the weight pairs (vpmaddwd). kGroups > 0 fixes the number of groups at compile time (the loop
/// unrolls); 0 reads it from `groups`.
template <int kGroups>
LATHE_AVX2 inline __m256i rgb_column(const uint8_t* row_a, const uint8_t* row_b,
                                     const ResizeTaps& t, int64_t x, int64_t groups) {
  // int16 lanes (r_j, r_j+1, g_j, g_j+1, b_j, b_j+1, 0, 0) for taps j = 0 and j = 2 of a group.
  const __m256i taps01 = _mm256_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1,
                                          0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1);
  const __m256i taps23 = _mm256_setr_epi8(6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1,
                                          -1, 6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1,
                                          -1, -1);
  const int64_t first = t.first[static_cast<size_t>(x)];
  const int16_t* k = t.of(x);
  __m256i acc = _mm256_set1_epi32(t.bias());
  for (int64_t g = 0; g < (kGroups > 0 ? kGroups : groups); ++g) {
    const int64_t at = (first + 4 * g) * 3;
    const __m256i src = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row_a + at))),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(row_b + at)), 1);
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_shuffle_epi8(src, taps01),
                                                  _mm256_set1_epi32(pair(k + 4 * g))));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_shuffle_epi8(src, taps23),
                                                  _mm256_set1_epi32(pair(k + 4 * g + 2))));
  }
  return _mm256_srai_epi32(acc, t.precision);
}

/// Two RGB rows' horizontal pass, four columns at a time, every column summing `groups` groups of
/// taps (the most any column has: the same work for each, no unpredictable branch): the four
/// columns' sums are packed together and split into the three planes (one 4-byte store per plane
/// and row). Columns whose 16-byte loads would pass the readable bytes go through horizontal_row.
template <int kGroups>
LATHE_AVX2 void rgb_columns(const uint8_t* row_a, const uint8_t* row_b, int64_t readable,
                               const ResizeTaps& t, int64_t groups, int64_t out_width,
                               uint8_t* out_a, uint8_t* out_b, int64_t plane) {
  // Four columns' (R, G, B, 0) bytes → (R R R R, G G G G, B B B B, 0 0 0 0).
  const __m256i planar = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, -1, -1, -1, -1,
                                          0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, -1, -1, -1, -1);
  const auto put = [](uint8_t* dst, int32_t v) { std::memcpy(dst, &v, sizeof v); };
  // Columns' first taps only grow (or, mirrored, only shrink): if columns x and x + 3 read
  // inside, so do the two between.
  const auto inside = [&](int64_t x) {
    return (t.first[static_cast<size_t>(x)] + 4 * (groups - 1)) * 3 + 16 <= readable;
  };
  int64_t x = 0;
  for (; x + 4 <= out_width; x += 4) {
    if (!inside(x) || !inside(x + 3)) {
      horizontal_row(row_a, 3, t, x, x + 4, out_a, plane);
      horizontal_row(row_b, 3, t, x, x + 4, out_b, plane);
      continue;
    }
    const __m256i c01 = _mm256_packs_epi32(rgb_column<kGroups>(row_a, row_b, t, x, groups),
                                           rgb_column<kGroups>(row_a, row_b, t, x + 1, groups));
    const __m256i c23 = _mm256_packs_epi32(rgb_column<kGroups>(row_a, row_b, t, x + 2, groups),
                                           rgb_column<kGroups>(row_a, row_b, t, x + 3, groups));
    const __m256i rgb = _mm256_shuffle_epi8(_mm256_packus_epi16(c01, c23), planar);
    const __m128i a = _mm256_castsi256_si128(rgb), b = _mm256_extracti128_si256(rgb, 1);
    put(out_a + x, _mm_cvtsi128_si32(a));
    put(out_a + plane + x, _mm_extract_epi32(a, 1));
    put(out_a + 2 * plane + x, _mm_extract_epi32(a, 2));
    put(out_b + x, _mm_cvtsi128_si32(b));
    put(out_b + plane + x, _mm_extract_epi32(b, 1));
    put(out_b + 2 * plane + x, _mm_extract_epi32(b, 2));
  }
  horizontal_row(row_a, 3, t, x, out_width, out_a, plane);  // the last columns (< 4)
  horizontal_row(row_b, 3, t, x, out_width, out_b, plane);
}

/// Two RGB rows' horizontal pass: rgb_columns with the group count fixed at compile time when
/// it is 1 or 2.
void horizontal_rgb_avx2(const uint8_t* row_a, const uint8_t* row_b, int64_t readable,
                         const ResizeTaps& t, int64_t out_width, uint8_t* out_a, uint8_t* out_b,
                         int64_t plane) {
  const int64_t groups = (t.max_count + 3) / 4;
  if (groups == 1)
    rgb_columns<1>(row_a, row_b, readable, t, groups, out_width, out_a, out_b, plane);
  else if (groups == 2)
    rgb_columns<2>(row_a, row_b, readable, t, groups, out_width, out_a, out_b, plane);
  else
    rgb_columns<0>(row_a, row_b, readable, t, groups, out_width, out_a, out_b, plane);
}

/// One plane's vertical pass, 16 columns at a time: the rows of each tap pair are interleaved
/// byte by byte and multiplied-and-added with the weight pair (vpmaddwd).
LATHE_AVX2 void vertical_avx2(const uint8_t* in, int64_t width,
                                                   const ResizeTaps& t, int64_t out_height,
                                                   uint8_t* out) {
  const __m256i bias = _mm256_set1_epi32(t.bias());
  for (int64_t y = 0; y < out_height; ++y) {
    const uint8_t* rows = in + static_cast<int64_t>(t.first[static_cast<size_t>(y)]) * width;
    const int16_t* k = t.of(y);
    const int32_t n = t.count[static_cast<size_t>(y)];
    uint8_t* dst = out + y * width;
    int64_t j = 0;
    for (; j + 16 <= width; j += 16) {
      __m256i lo = bias, hi = bias;  // int32 sums of columns j .. j+7 and j+8 .. j+15
      for (int32_t r = 0; r < n; r += 2) {
        const uint8_t* ra = rows + r * width + j;
        const uint8_t* rb = r + 1 < n ? ra + width : ra;  // weight k[n] is zero
        const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(ra));
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rb));
        const __m256i w = _mm256_set1_epi32(pair(k + r));
        lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_unpacklo_epi8(a, b)), w));
        hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_unpackhi_epi8(a, b)), w));
      }
      // (lo0-3, hi0-3 | lo4-7, hi4-7) int16 → in column order → 16 bytes.
      const __m256i s = _mm256_permute4x64_epi64(
          _mm256_packs_epi32(_mm256_srai_epi32(lo, t.precision), _mm256_srai_epi32(hi, t.precision)),
          0xD8);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst),
                       _mm_packus_epi16(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1)));
      dst += 16;
    }
    vertical_row(in, width, t, y, j, width, out + y * width);
  }
}

bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") != 0;
  return yes;
}

#endif  // LATHE_RESIZE_AVX2

/// (out_height, width) from one (in_height, width) plane.
void vertical_pass(const uint8_t* in, int64_t width, const ResizeTaps& t, int64_t out_height,
                   uint8_t* out, bool vectorised) {
#ifdef LATHE_RESIZE_AVX2
  if (vectorised && has_avx2()) return vertical_avx2(in, width, t, out_height, out);
#endif
  for (int64_t y = 0; y < out_height; ++y) vertical_row(in, width, t, y, 0, width, out + y * width);
}

/// A thread's spare buffer for the horizontal pass's planes: a RowResizer takes it and gives it
/// back, so that a worker resizing image after image does not allocate (and page-fault) each time.
std::vector<uint8_t>& spare_planes() {
  thread_local std::vector<uint8_t> spare;
  return spare;
}

}  // namespace

RowResizer::RowResizer(int channels, int64_t in_height, int64_t in_width, int64_t out_height,
                       int64_t out_width, bool mirror, bool vectorised)
    : channels_(channels),
      in_h_(in_height),
      in_w_(in_width),
      out_h_(out_height),
      out_w_(out_width),
      vectorised_(vectorised),
      out_(at::empty({channels, out_height, out_width}, at::TensorOptions().dtype(at::kByte))) {
  if (in_w_ != out_w_ || mirror) across_ = make_taps(in_w_, out_w_);
  if (mirror) {  // output column x takes the taps of column out_width - 1 - x
    std::reverse(across_.first.begin(), across_.first.end());
    std::reverse(across_.count.begin(), across_.count.end());
    for (int64_t x = 0; x < out_w_ / 2; ++x)
      std::swap_ranges(across_.weights.begin() + x * across_.stride,
                       across_.weights.begin() + (x + 1) * across_.stride,
                       across_.weights.begin() + (out_w_ - 1 - x) * across_.stride);
  }
  if (in_h_ != out_h_) {
    down_ = make_taps(in_h_, out_h_);
    planes_ = std::move(spare_planes());
    planes_.resize(static_cast<size_t>(channels_ * in_h_ * out_w_));
  }
}

RowResizer::~RowResizer() {
  if (planes_.capacity() > spare_planes().capacity()) spare_planes() = std::move(planes_);
}

uint8_t* RowResizer::planes() {
  return in_h_ != out_h_ ? planes_.data() : out_.data_ptr<uint8_t>();
}

void RowResizer::push(const uint8_t* rows, int64_t n, int64_t stride, int64_t readable) {
  n = std::min(n, in_h_ - next_);
  uint8_t* out = planes() + next_ * out_w_;  // (C, in_height, out_width) planes, row next_
  const int64_t plane = in_h_ * out_w_;
  if (across_.first.empty()) {  // no horizontal pass: the channels into their planes
    for (int64_t y = 0; y < n; ++y)
      for (int64_t x = 0; x < in_w_; ++x)
        for (int c = 0; c < channels_; ++c)
          out[c * plane + y * out_w_ + x] = rows[y * stride + x * channels_ + c];
  } else {
#ifdef LATHE_RESIZE_AVX2
    if (vectorised_ && channels_ == 3 && has_avx2()) {
      for (int64_t y = 0; y < n; y += 2) {
        const int64_t y2 = std::min(y + 1, n - 1);  // an odd last row pairs with itself
        horizontal_rgb_avx2(rows + y * stride, rows + y2 * stride, readable, across_, out_w_,
                            out + y * out_w_, out + y2 * out_w_, plane);
      }
      next_ += n;
      return;
    }
#endif
    for (int64_t y = 0; y < n; ++y)
      horizontal_row(rows + y * stride, channels_, across_, 0, out_w_, out + y * out_w_, plane);
  }
  next_ += n;
}

at::Tensor RowResizer::finish() {
  LATHE_CHECK(next_ == in_h_, DataError, "resize: {} of the image's {} rows arrived", next_,
              in_h_);
  if (in_h_ != out_h_) {
    uint8_t* dst = out_.data_ptr<uint8_t>();
    for (int c = 0; c < channels_; ++c)
      vertical_pass(planes_.data() + c * in_h_ * out_w_, out_w_, down_, out_h_,
                    dst + c * out_h_ * out_w_, vectorised_);
  }
  return out_;  // (C, out_height, out_width)
}

at::Tensor resize_uint8(const at::Tensor& image, int64_t height, int64_t width, bool vectorised) {
  const int channels = static_cast<int>(image.size(0));
  // (H, W, C) with a pixel's channels adjacent, the decoders' layout (rows may be a crop's, further
  // apart); any other layout is copied into it first.
  at::Tensor hwc = image.permute({1, 2, 0});
  if (hwc.stride(2) != 1 || hwc.stride(1) != channels) hwc = hwc.contiguous();
  RowResizer resizer(channels, image.size(1), image.size(2), height, width, /*mirror=*/false,
                     vectorised);
  resizer.push(hwc.data_ptr<uint8_t>(), hwc.size(0), hwc.stride(0), hwc.size(1) * channels);
  return resizer.finish();
}

}  // namespace lathe::data::detail
