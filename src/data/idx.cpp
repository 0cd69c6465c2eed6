// IDX reader: header check, big-endian conversion, truncation and trailing-data errors.
#include "lathe/data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <memory>
#include <vector>

#include <ATen/ops/empty.h>
#include <fmt/ranges.h>

#include "lathe/core/error.h"
#include "read_file.h"

namespace lathe::data {
namespace {

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};
using GzFile = std::unique_ptr<gzFile_s, GzCloser>;

/// Reads up to n bytes; returns how many were read (fewer only at end of file).
size_t read_bytes(gzFile f, void* dst, size_t n, const std::filesystem::path& file) {
  size_t total = 0;
  auto* out = static_cast<char*>(dst);
  while (total < n) {
    const auto chunk = static_cast<unsigned>(std::min<size_t>(n - total, 1u << 30));
    const int got = gzread(f, out + total, chunk);
    if (got < 0) {
      int errnum = 0;
      const char* msg = gzerror(f, &errnum);
      throw DataError(fmt::format("{}: read failed: {}", file.string(), msg));
    }
    if (got == 0) break;
    total += static_cast<size_t>(got);
  }
  return total;
}

/// deflate's largest compression ratio: no gzip file inflates to more than this many times its size.
constexpr uint64_t kMaxDeflateRatio = 1032;

struct ElementType {
  c10::ScalarType dtype;
  size_t size;
};

ElementType element_type(uint8_t code, const std::filesystem::path& file) {
  switch (code) {
    case 0x08: return {c10::kByte, 1};
    case 0x09: return {c10::kChar, 1};
    case 0x0B: return {c10::kShort, 2};
    case 0x0C: return {c10::kInt, 4};
    case 0x0D: return {c10::kFloat, 4};
    case 0x0E: return {c10::kDouble, 8};
    default:
      throw DataError(fmt::format(
          "{}: unknown IDX element type 0x{:02X} (expected 0x08, 0x09, 0x0B, 0x0C, 0x0D or 0x0E)",
          file.string(), code));
  }
}

}  // namespace

at::Tensor read_idx(const std::filesystem::path& file) {
  LATHE_CHECK(std::filesystem::exists(file), DataError, "{}: no such IDX file", file.string());
  detail::require_regular_file(file, "IDX file");
  const uint64_t file_size = std::filesystem::file_size(file);
  bool gzipped = false;
  {
    std::ifstream raw(file, std::ios::binary);
    char head[2] = {0, 0};
    raw.read(head, 2);
    gzipped = raw.gcount() == 2 && head[0] == '\x1f' && head[1] == '\x8b';
  }
  GzFile f(gzopen(file.c_str(), "rb"));
  LATHE_CHECK(f != nullptr, DataError, "{}: cannot open the IDX file", file.string());

  // Header: two zero bytes, the element type, the number of dimensions; then one big-endian
  // uint32 per dimension.
  std::array<uint8_t, 4> magic{};
  const size_t got_magic = read_bytes(f.get(), magic.data(), 4, file);
  LATHE_CHECK(got_magic == 4, DataError, "{}: truncated: {} bytes, too short for an IDX header",
              file.string(), got_magic);
  LATHE_CHECK(magic[0] == 0 && magic[1] == 0, DataError,
              "{}: wrong magic number 0x{:02X}{:02X}{:02X}{:02X}: not an IDX file (an IDX file "
              "starts with two zero bytes, a type code and the number of dimensions)",
              file.string(), magic[0], magic[1], magic[2], magic[3]);
  const ElementType type = element_type(magic[2], file);
  const int ndim = magic[3];
  LATHE_CHECK(ndim >= 1 && ndim <= 8, DataError,
              "{}: wrong magic number: {} dimensions (expected 1 to 8)", file.string(), ndim);

  std::vector<int64_t> shape(static_cast<size_t>(ndim));
  std::vector<uint8_t> dims(4 * static_cast<size_t>(ndim));
  LATHE_CHECK(read_bytes(f.get(), dims.data(), dims.size(), file) == dims.size(), DataError,
              "{}: truncated inside the header ({} dimension sizes expected)", file.string(), ndim);
  // The data the header promises, without overflow, checked against what the file can hold
  // before anything is allocated: exactly the rest of a plain file; for a gzip file at most what
  // deflate's best ratio (1032:1) inflates it to — a gzip bomb is refused here, and a file that
  // inflates to more or less than promised is refused while inflating (read below).
  const uint64_t header_bytes = 4 + dims.size();
  const uint64_t limit = gzipped ? file_size * kMaxDeflateRatio : file_size - header_bytes;
  uint64_t count = 1, span = 1;
  bool overflow = false;
  for (int d = 0; d < ndim; ++d) {
    const uint8_t* b = &dims[4 * static_cast<size_t>(d)];
    const uint64_t n = (uint64_t{b[0]} << 24) | (uint64_t{b[1]} << 16) | (uint64_t{b[2]} << 8) |
                       uint64_t{b[3]};
    shape[static_cast<size_t>(d)] = static_cast<int64_t>(n);
    overflow = overflow || __builtin_mul_overflow(count, n, &count);
    // The strides multiply the non-zero sizes: they must fit int64 even when a size is 0 (the
    // IDX fuzzer found [0, 2^32-1, ...] reaching LibTorch's stride check).
    overflow = overflow || (n > 0 && __builtin_mul_overflow(span, n, &span));
  }
  overflow = overflow || span > static_cast<uint64_t>(INT64_MAX);
  uint64_t want_bytes = 0;
  overflow = overflow || __builtin_mul_overflow(count, uint64_t{type.size}, &want_bytes);
  LATHE_CHECK(!overflow && want_bytes <= limit, DataError,
              "{}: truncated: the header promises {} values of {} byte(s) (shape [{}]) but {}; the "
              "file is incomplete or not the IDX layout its header describes",
              file.string(), overflow ? std::string("too many") : std::to_string(count), type.size,
              fmt::join(shape, ", "),
              gzipped ? fmt::format("the {}-byte gzip file cannot inflate to that much", file_size)
                      : fmt::format("only {} bytes follow", file_size - header_bytes));

  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(type.dtype));
  const auto want = static_cast<size_t>(want_bytes);
  const size_t got = read_bytes(f.get(), out.data_ptr(), want, file);
  LATHE_CHECK(got == want, DataError,
              "{}: truncated: the header promises {} values ({} bytes) but only {} bytes follow; "
              "the file is incomplete, fetch or unpack it again",
              file.string(), count, want, got);
  char extra = 0;
  LATHE_CHECK(read_bytes(f.get(), &extra, 1, file) == 0, DataError,
              "{}: {} bytes of data expected after the header, but the file is longer: not the "
              "IDX layout its header describes",
              file.string(), want);

  if (type.size > 1) {  // big-endian on disk → host order
    auto* p = static_cast<uint8_t*>(out.data_ptr());
    for (size_t i = 0; i < count; ++i) std::reverse(p + i * type.size, p + (i + 1) * type.size);
  }
  return out;
}

IdxSplit load_idx_split(const std::filesystem::path& dir, const std::string& prefix) {
  const auto find = [&](const std::string& stem) {
    for (const auto& name : {stem, stem + ".gz"}) {
      if (std::filesystem::exists(dir / name)) return dir / name;
    }
    throw DataError(fmt::format("{}: no {} or {}.gz in this folder (expected the MNIST layout: "
                                "train-images-idx3-ubyte, t10k-labels-idx1-ubyte, ...)",
                                dir.string(), stem, stem));
  };
  const auto images_file = find(prefix + "-images-idx3-ubyte");
  const auto labels_file = find(prefix + "-labels-idx1-ubyte");
  IdxSplit split{read_idx(images_file), read_idx(labels_file)};
  LATHE_CHECK(split.images.dim() == 3, DataError, "{}: expected 3 dimensions (N, H, W), got {}",
              images_file.string(), split.images.dim());
  LATHE_CHECK(split.labels.dim() == 1, DataError, "{}: expected 1 dimension (N), got {}",
              labels_file.string(), split.labels.dim());
  LATHE_CHECK(split.images.size(0) == split.labels.size(0), DataError,
              "{} has {} images but {} has {} labels", images_file.string(),
              split.images.size(0), labels_file.string(), split.labels.size(0));
  const auto t = split.labels.scalar_type();
  LATHE_CHECK(t == c10::kByte || t == c10::kChar || t == c10::kShort || t == c10::kInt, DataError,
              "{}: labels of type {}; IDX labels are class ids, an integer type (0x08, 0x09, 0x0B "
              "or 0x0C)",
              labels_file.string(), c10::toString(t));
  split.labels = split.labels.to(c10::kLong);
  if (split.labels.numel() > 0) {
    const int64_t lo = split.labels.min().item<int64_t>();
    const int64_t hi = split.labels.max().item<int64_t>();
    LATHE_CHECK(lo >= 0 && hi < kMaxIdxClasses, DataError,
                "{}: label {} is not a class id in [0, {}); the labels of a classification "
                "dataset number its classes from 0",
                labels_file.string(), lo < 0 ? lo : hi, kMaxIdxClasses);
  }
  return split;
}

}  // namespace lathe::data
