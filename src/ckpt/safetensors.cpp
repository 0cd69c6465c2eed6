// safetensors: 8-byte little-endian header length, JSON header, raw little-endian tensor data.
#include "lathe/ckpt/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <set>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "lathe/core/activity.h"
#include "lathe/core/error.h"
#include "lathe/core/fs.h"

namespace lathe::ckpt {
namespace {

struct DtypeName {
  c10::ScalarType type;
  const char* name;
};
constexpr DtypeName kDtypes[] = {
    {c10::kDouble, "F64"}, {c10::kFloat, "F32"}, {c10::kHalf, "F16"},  {c10::kBFloat16, "BF16"},
    {c10::kLong, "I64"},   {c10::kInt, "I32"},   {c10::kShort, "I16"}, {c10::kChar, "I8"},
    {c10::kByte, "U8"},    {c10::kBool, "BOOL"},
};

const char* dtype_name(c10::ScalarType t, const std::string& tensor, const std::string& file) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d.name;
  throw CheckpointError(fmt::format("{}: tensor '{}' has dtype {}, which safetensors cannot hold",
                                    file, tensor, c10::toString(t)));
}

c10::ScalarType dtype_of(const std::string& name, const std::string& tensor,
                         const std::string& file) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.type;
  throw CheckpointError(
      fmt::format("{}: tensor '{}' has dtype '{}', which lathe does not read (supported: F64, "
                  "F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)",
                  file, tensor, name));
}

}  // namespace

void save_safetensors(const std::filesystem::path& file, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::string where = file.string();
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    LATHE_CHECK(tensor.defined(), CheckpointError, "{}: tensor '{}' is undefined", where, name);
    LATHE_CHECK(!header.contains(name), CheckpointError, "{}: tensor name '{}' appears twice",
                where, name);
    at::Tensor t = tensor.detach().to(c10::kCPU).contiguous();
    const uint64_t bytes = t.numel() * t.element_size();
    header[name] = {{"dtype", dtype_name(t.scalar_type(), name, where)},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(std::move(t));
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  uint64_t len = json.size();
  char len_le[8];
  for (int i = 0; i < 8; ++i) len_le[i] = static_cast<char>((len >> (8 * i)) & 0xFF);

  AtomicFile out(file);
  out.write(len_le, 8);
  out.write(json);
  for (const auto& t : data) out.write(t.data_ptr(), t.numel() * t.element_size());
  out.commit();
}

namespace {

/// Where one tensor's bytes lie in the data section, validated against the file.
struct Entry {
  std::string name;
  c10::ScalarType type;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t bytes = 0;
};

/// The header's tensors in data order, and its metadata. Everything is checked before any tensor
/// is allocated, as the reference library does: the JSON shape of the header (no nesting beyond
/// what the format has, no repeated name, string metadata), dtypes, integral non-negative shapes
/// and offsets, dtype x shape = the bytes the offsets span, and offsets that tile the data
/// section exactly (contiguous, non-overlapping, ending at the end of the file).
std::vector<Entry> parse_header(std::string_view json, uint64_t data_size, const std::string& where,
                                std::map<std::string, std::string>& metadata) {
  // The deepest a valid header goes: {"name": {"shape": [1]}} is depth 3.
  constexpr int kMaxDepth = 3;
  std::set<std::string> names;
  const nlohmann::json::parser_callback_t guard = [&](int depth, nlohmann::json::parse_event_t ev,
                                                      nlohmann::json& parsed) {
    LATHE_CHECK(depth <= kMaxDepth, CheckpointError,
                "{}: the safetensors header nests deeper than the format allows ({} levels); "
                "not a safetensors file",
                where, kMaxDepth);
    if (ev == nlohmann::json::parse_event_t::key && depth == 1) {
      const std::string& name = parsed.get_ref<const std::string&>();
      LATHE_CHECK(names.insert(name).second, CheckpointError,
                  "{}: the safetensors header names '{}' twice", where, name);
    }
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(json.begin(), json.end(), guard);
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(
        fmt::format("{}: the safetensors header is not valid JSON: {}", where, e.what()));
  }
  LATHE_CHECK(header.is_object(), CheckpointError,
              "{}: the safetensors header is not a JSON object", where);

  std::vector<Entry> out;
  for (const auto& item : header.items()) {
    const std::string& name = item.key();  // not a structured binding: lambdas capture these
    const nlohmann::json& entry = item.value();
    if (name == "__metadata__") {
      LATHE_CHECK(entry.is_object(), CheckpointError,
                  "{}: __metadata__ is not an object of strings", where);
      for (const auto& [k, v] : entry.items()) {
        LATHE_CHECK(v.is_string(), CheckpointError,
                    "{}: __metadata__ '{}' is not a string (safetensors metadata maps strings to "
                    "strings)",
                    where, k);
        metadata[k] = v.get<std::string>();
      }
      continue;
    }
    LATHE_CHECK(entry.is_object(), CheckpointError,
                "{}: tensor '{}': header entry is not an object of dtype, shape, data_offsets",
                where, name);
    const auto field = [&](const char* key) -> const nlohmann::json& {
      const auto it = entry.find(key);
      LATHE_CHECK(it != entry.end(), CheckpointError, "{}: tensor '{}': the header entry lacks '{}'",
                  where, name, key);
      return *it;
    };
    const auto& dtype = field("dtype");
    const auto& shape = field("shape");
    const auto& offsets = field("data_offsets");
    LATHE_CHECK(dtype.is_string(), CheckpointError, "{}: tensor '{}': dtype is not a string",
                where, name);
    LATHE_CHECK(shape.is_array(), CheckpointError,
                "{}: tensor '{}': shape is not a list of sizes", where, name);
    LATHE_CHECK(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
                    offsets[1].is_number_unsigned(),
                CheckpointError,
                "{}: tensor '{}': data_offsets must be [begin, end], two non-negative integers, "
                "got {}",
                where, name, offsets.dump());
    Entry e;
    e.name = name;
    e.type = dtype_of(dtype.get<std::string>(), name, where);
    e.begin = offsets[0].get<uint64_t>();
    const uint64_t end = offsets[1].get<uint64_t>();
    LATHE_CHECK(e.begin <= end, CheckpointError,
                "{}: tensor '{}': data_offsets [{}, {}] end before they begin", where, name,
                e.begin, end);
    LATHE_CHECK(end <= data_size, CheckpointError,
                "{}: truncated: tensor '{}' needs bytes up to {} of the data section but the file "
                "holds only {}; the file is incomplete, write or download it again",
                where, name, end, data_size);
    // dtype x shape, without overflow: a size beyond the data section is refused as it is seen.
    uint64_t bytes = c10::elementSize(e.type);
    bool empty = false;
    for (const auto& d : shape) {
      LATHE_CHECK(d.is_number_unsigned(), CheckpointError,
                  "{}: tensor '{}': shape {} holds something other than non-negative integers",
                  where, name, shape.dump());
      const uint64_t n = d.get<uint64_t>();
      LATHE_CHECK(n <= static_cast<uint64_t>(INT64_MAX), CheckpointError,
                  "{}: tensor '{}': shape {} is too large", where, name, shape.dump());
      e.shape.push_back(static_cast<int64_t>(n));
      if (n == 0) empty = true;
      if (!empty) {
        LATHE_CHECK(bytes <= data_size / n, CheckpointError,
                    "{}: tensor '{}': shape {} of {} is larger than the whole data section ({} "
                    "bytes)",
                    where, name, shape.dump(), dtype.get<std::string>(), data_size);
        bytes *= n;
      }
    }
    e.bytes = empty ? 0 : bytes;
    LATHE_CHECK(e.bytes == end - e.begin, CheckpointError,
                "{}: tensor '{}': shape {} of {} needs {} bytes but its data_offsets span {}", where,
                name, shape.dump(), dtype.get<std::string>(), e.bytes, end - e.begin);
    out.push_back(std::move(e));
  }
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.bytes < b.bytes;
  });
  uint64_t expect = 0;
  for (const auto& e : out) {
    LATHE_CHECK(e.begin == expect, CheckpointError,
                "{}: tensor '{}' starts at byte {} of the data section, expected {}: tensors' "
                "data_offsets must be contiguous and must not overlap",
                where, e.name, e.begin, expect);
    expect = e.begin + e.bytes;
  }
  LATHE_CHECK(expect == data_size, CheckpointError,
              "{}: the tensors cover {} bytes of the data section but it holds {}; the file is "
              "corrupt or has trailing data",
              where, expect, data_size);
  return out;
}

/// The header length from the first 8 bytes, checked against the file and the cap.
uint64_t header_length(const unsigned char* len_le, uint64_t file_size, const std::string& where) {
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= uint64_t{len_le[i]} << (8 * i);
  LATHE_CHECK(header_len <= kMaxSafetensorsHeader, CheckpointError,
              "{}: the safetensors header claims {} bytes, over the {} bytes allowed (as in the "
              "reference library); not a safetensors file",
              where, header_len, kMaxSafetensorsHeader);
  LATHE_CHECK(header_len <= file_size - 8, CheckpointError,
              "{}: truncated or not safetensors: header length {} exceeds the file's {} bytes",
              where, header_len, file_size);
  return header_len;
}

/// The tensors of a whole safetensors file held in `bytes`, validated first (header length,
/// then every entry, by parse_header) and built after. With an `owner` (the memory map `bytes`
/// lies in), each tensor is a view of the bytes that keeps the owner alive — no copy; without one,
/// or where a tensor's bytes are not aligned to its element size, each is copied out.
SafetensorsFile tensors_from(std::string_view bytes, const std::string& origin,
                             const std::shared_ptr<const void>& owner) {
  LATHE_CHECK(bytes.size() >= 8, CheckpointError,
              "{}: truncated: {} bytes, too short for a safetensors header", origin, bytes.size());
  const uint64_t header_len =
      header_length(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), origin);
  const uint64_t data_start = 8 + header_len;
  SafetensorsFile out;
  for (const Entry& e : parse_header(bytes.substr(8, header_len), bytes.size() - data_start,
                                     origin, out.metadata)) {
    const auto opts = at::TensorOptions().dtype(e.type);
    // The mapping is private and writable (copy on write), so the view may be written to.
    auto* src = const_cast<char*>(bytes.data() + data_start + e.begin);
    const bool aligned = reinterpret_cast<uintptr_t>(src) % c10::elementSize(e.type) == 0;
    if (owner && aligned && e.bytes > 0) {
      out.tensors.emplace_back(e.name,
                               at::from_blob(src, e.shape, [owner](void*) {}, opts));
      continue;
    }
    at::Tensor t = at::empty(e.shape, opts);
    if (e.bytes > 0) std::memcpy(t.data_ptr(), src, e.bytes);
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

/// A read-only file mapped privately (pages copied only when written), unmapped when the last
/// tensor over it goes.
class Mapping {
 public:
  Mapping(const std::filesystem::path& file, const std::string& where) {
    const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    LATHE_CHECK(fd >= 0, CheckpointError, "{}: cannot open the weights file ({})", where,
                std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      ::close(fd);
      throw CheckpointError(fmt::format("{}: cannot read the weights file's size", where));
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ < 8) {  // mmap refuses 0 bytes; the header check reports it
      ::close(fd);
      return;
    }
    // Private and writable: a tensor written in place gets its own copy of that page, the file
    // never changes. No MAP_POPULATE: on a writable private mapping it would copy every page.
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    ::close(fd);  // the mapping keeps the file
    LATHE_CHECK(p != MAP_FAILED, CheckpointError, "{}: cannot map the weights file ({})", where,
                std::strerror(errno));
    data_ = static_cast<char*>(p);
    // Read ahead in large requests (a cold file), in order, while the header is parsed.
    ::madvise(data_, size_, MADV_SEQUENTIAL);
    ::madvise(data_, size_, MADV_WILLNEED);
  }
  ~Mapping() {
    if (data_ != nullptr) ::munmap(data_, size_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  std::string_view bytes() const { return {data_, data_ != nullptr ? size_ : 0}; }
  size_t size() const { return size_; }

 private:
  char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace

SafetensorsFile parse_safetensors(std::string_view bytes, const std::string& origin) {
  return tensors_from(bytes, origin, nullptr);
}

SafetensorsFile load_safetensors(const std::filesystem::path& file) {
  const std::string where = file.string();
  const Doing doing(fmt::format("reading the weights file {}", where));
  LATHE_CHECK(std::filesystem::exists(file), CheckpointError, "{}: no such weights file", where);
  const std::string why = not_a_regular_file(file);
  LATHE_CHECK(why.empty(), CheckpointError, "{}: cannot read the weights file ({})", where, why);
  auto map = std::make_shared<const Mapping>(file, where);
  LATHE_CHECK(map->size() >= 8, CheckpointError,
              "{}: truncated: {} bytes, too short for a safetensors header", where, map->size());
  return tensors_from(map->bytes(), where, map);
}

}  // namespace lathe::ckpt
