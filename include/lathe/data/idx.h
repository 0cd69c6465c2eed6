// IDX files (the MNIST family), plain or gzip-compressed, read into tensors.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include <ATen/core/Tensor.h>

namespace lathe::data {

/// Reads one IDX file (plain or .gz) into a CPU tensor with the header's shape and element type
/// (uint8, int8, int16, int32, float32, float64; multi-byte values converted from big-endian).
/// A missing file, a wrong magic number, an unknown type code, a truncated body or trailing
/// bytes are DataErrors naming the file and what was expected.
///
///   at::Tensor images = lathe::data::read_idx("train-images-idx3-ubyte.gz");  // (60000, 28, 28)
at::Tensor read_idx(const std::filesystem::path& file);

/// IDX labels are class ids in [0, kMaxIdxClasses): a larger one is refused as the labels are
/// read, before anything sized by the number of classes is allocated.
inline constexpr int64_t kMaxIdxClasses = 65536;

/// Images and labels of one split of an MNIST-style folder.
struct IdxSplit {
  at::Tensor images;  ///< (N, H, W) uint8
  at::Tensor labels;  ///< (N) int64
};

/// Loads "train" or "t10k" images and labels from `dir` (names as in MNIST / Fashion-MNIST, with
/// or without .gz) and checks that their counts agree, that the labels have an integer type and
/// that each is a class id in [0, kMaxIdxClasses).
IdxSplit load_idx_split(const std::filesystem::path& dir, const std::string& prefix);

}  // namespace lathe::data
