// IDX reader: header check, big-endian conversion, truncation and trailing-data errors.
#include "lathe/data/idx.h"

#include <zlib.h>

#include <array>
#include <memory>
#include <vector>

#include <ATen/ops/empty.h>

#include "lathe/core/error.h"

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
  size_t count = 1;
  for (int d = 0; d < ndim; ++d) {
    const uint8_t* b = &dims[4 * static_cast<size_t>(d)];
    shape[static_cast<size_t>(d)] = (int64_t{b[0]} << 24) | (int64_t{b[1]} << 16) |
                                    (int64_t{b[2]} << 8) | int64_t{b[3]};
    count *= static_cast<size_t>(shape[static_cast<size_t>(d)]);
  }

  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(type.dtype));
  const size_t want = count * type.size;
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
  split.labels = split.labels.to(c10::kLong);
  return split;
}

}  // namespace lathe::data
