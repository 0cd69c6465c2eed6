// safetensors read and write: the weights format shared with Python's safetensors package.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lathe::ckpt {

/// Named tensors in a fixed order (state-dict order when written from a module).
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

/// Writes tensors (any device; copied to the CPU) and string metadata as one safetensors file,
/// atomically. Supported dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL.
///
///   lathe::ckpt::save_safetensors("model.safetensors", {{"fc.weight", w}}, {{"format", "pt"}});
void save_safetensors(const std::filesystem::path& file, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

/// The content of one safetensors file.
struct SafetensorsFile {
  NamedTensors tensors;                         ///< in file order of their data
  std::map<std::string, std::string> metadata;  ///< the header's __metadata__
};

/// Reads a safetensors file onto the CPU through a memory map: the header is validated in full
/// before any tensor is built, then each tensor is a view of the mapped bytes (no copy; pages are
/// read from the page cache as they are first touched, e.g. when load_weights copies them into a
/// model). The mapping is private — an in-place write to a loaded tensor copies that page and
/// never reaches the file — and lives as long as any of its tensors. A tensor whose bytes are not
/// aligned to its element size is copied out. A missing file, a truncated header or body, bad
/// JSON, an unknown dtype or offsets that do not fit are CheckpointErrors naming the file (and
/// tensor). Files are replaced by rename (as lathe writes them), never truncated in place, while
/// tensors over them are alive: a file shortened under a live mapping faults its reader.
SafetensorsFile load_safetensors(const std::filesystem::path& file);

/// The largest header load_safetensors reads: 100 MB, the reference library's limit.
inline constexpr uint64_t kMaxSafetensorsHeader = 100'000'000;

/// Same as load_safetensors, from the bytes of a whole file held in memory (copied into new
/// tensors); `origin` names it in errors. Every offset, shape and dtype is validated before a
/// tensor is allocated.
SafetensorsFile parse_safetensors(std::string_view bytes, const std::string& origin);

}  // namespace lathe::ckpt
