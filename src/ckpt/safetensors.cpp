// safetensors: 8-byte little-endian header length, JSON header, raw little-endian tensor data.
#include "lathe/ckpt/safetensors.h"

#include <fstream>

#include <algorithm>

#include <ATen/ops/empty.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

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

SafetensorsFile load_safetensors(const std::filesystem::path& file) {
  const std::string where = file.string();
  LATHE_CHECK(std::filesystem::exists(file), CheckpointError, "{}: no such weights file", where);
  std::ifstream in(file, std::ios::binary);
  LATHE_CHECK(in.good(), CheckpointError, "{}: cannot open the weights file", where);
  const uint64_t file_size = std::filesystem::file_size(file);

  unsigned char len_le[8];
  LATHE_CHECK(file_size >= 8 && in.read(reinterpret_cast<char*>(len_le), 8), CheckpointError,
              "{}: truncated: {} bytes, too short for a safetensors header", where, file_size);
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= uint64_t{len_le[i]} << (8 * i);
  LATHE_CHECK(header_len <= file_size - 8, CheckpointError,
              "{}: truncated or not safetensors: header length {} exceeds the file's {} bytes",
              where, header_len, file_size);
  std::string json(header_len, '\0');
  in.read(json.data(), static_cast<std::streamsize>(header_len));

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(json);
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(fmt::format("{}: the safetensors header is not valid JSON: {}", where,
                                      e.what()));
  }
  LATHE_CHECK(header.is_object(), CheckpointError, "{}: the safetensors header is not an object",
              where);

  SafetensorsFile out;
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file_size - data_start;
  std::vector<std::pair<uint64_t, std::string>> order;  // (begin offset, name)
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      LATHE_CHECK(entry.is_object(), CheckpointError, "{}: __metadata__ is not an object", where);
      for (const auto& [k, v] : entry.items())
        out.metadata[k] = v.is_string() ? v.get<std::string>() : v.dump();
      continue;
    }
    LATHE_CHECK(entry.is_object(), CheckpointError,
                "{}: tensor '{}': header entry is not an object of dtype, shape, data_offsets",
                where, name);
    uint64_t begin = 0;
    if (const auto it = entry.find("data_offsets");
        it != entry.end() && it->is_array() && !it->empty() && (*it)[0].is_number_unsigned())
      begin = (*it)[0].get<uint64_t>();
    order.emplace_back(begin, name);
  }
  std::sort(order.begin(), order.end());

  for (const auto& [begin_unused, name] : order) {
    const auto& entry = header[name];
    std::vector<int64_t> shape;
    std::vector<uint64_t> offsets;
    std::string dtype;
    try {
      dtype = entry.at("dtype").get<std::string>();
      shape = entry.at("shape").get<std::vector<int64_t>>();
      offsets = entry.at("data_offsets").get<std::vector<uint64_t>>();
    } catch (const nlohmann::json::exception& e) {
      throw CheckpointError(fmt::format("{}: tensor '{}': malformed header entry: {}", where, name,
                                        e.what()));
    }
    LATHE_CHECK(offsets.size() == 2 && offsets[0] <= offsets[1], CheckpointError,
                "{}: tensor '{}': data_offsets must be [begin, end]", where, name);
    LATHE_CHECK(offsets[1] <= data_size, CheckpointError,
                "{}: truncated: tensor '{}' needs bytes up to {} of the data section but the file "
                "holds only {}; the file is incomplete, write or download it again",
                where, name, offsets[1], data_size);
    const c10::ScalarType type = dtype_of(dtype, name, where);
    // Validate the shape before allocating: negative or absurd sizes must not reach ATen.
    uint64_t bytes = c10::elementSize(type);
    for (int64_t d : shape) {
      LATHE_CHECK(d >= 0, CheckpointError, "{}: tensor '{}': negative dimension in shape [{}]",
                  where, name, fmt::join(shape, ", "));
      LATHE_CHECK(d == 0 || bytes <= data_size / static_cast<uint64_t>(d) + 1, CheckpointError,
                  "{}: tensor '{}': shape [{}] is larger than the whole file", where, name,
                  fmt::join(shape, ", "));
      bytes *= static_cast<uint64_t>(d);
    }
    LATHE_CHECK(bytes == offsets[1] - offsets[0], CheckpointError,
                "{}: tensor '{}': shape [{}] of {} needs {} bytes but its data_offsets span {}",
                where, name, fmt::join(shape, ", "), dtype, bytes, offsets[1] - offsets[0]);
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(type));
    in.seekg(static_cast<std::streamoff>(data_start + offsets[0]));
    LATHE_CHECK(in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(bytes)),
                CheckpointError, "{}: read failed for tensor '{}'", where, name);
    out.tensors.emplace_back(name, std::move(t));
  }
  return out;
}

}  // namespace lathe::ckpt
