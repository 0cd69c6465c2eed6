// What each zoo model's forward takes and returns: input names, example shapes, dynamic axes.
// Used to make example inputs (export, info) and to name ONNX inputs and outputs.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace torch::nn {
class Module;
}

namespace lathe::models {

/// One input of a zoo model's forward.
struct InputSignature {
  std::string name;                        ///< "images", "input_ids", "attention_mask", ...
  std::vector<int64_t> shape;              ///< an example shape, batch first
  int64_t id_limit = 0;                    ///< > 0: int64 ids in [0, id_limit); 0: float
  std::map<int64_t, std::string> dynamic;  ///< axis → symbol ("batch", "seq")
};

/// A zoo model's inputs (in forward's order) and its output's name.
struct ModelSignature {
  std::vector<InputSignature> inputs;
  std::string output;
};

/// What a run trained at, for the example inputs: the images' side and the text's length
/// (0: the model's own example size — e.g. 224 for ResNet — for callers without a run).
struct SignatureSizes {
  int64_t side = 0;
  int64_t seq_len = 0;
};

/// The signature of a model built by build_model(); a module that is not a zoo model is a
/// ModelError. Image inputs carry the dynamic axes {0: batch, 2: height, 3: width} when the
/// model's forward takes any image size (ResNet, MobileNetV2: global pooling before the head),
/// else {0: batch}; sequence inputs {0: batch, 1: seq}.
///
///   auto sig = lathe::models::model_signature(*model.ptr(), {.side = 64});
ModelSignature model_signature(const torch::nn::Module& model, const SignatureSizes& sizes = {});

/// Random example inputs for a signature (ids uniform in range, masks all ones), seeded.
std::vector<at::Tensor> example_inputs(const ModelSignature& signature, uint64_t seed = 0);

}  // namespace lathe::models
